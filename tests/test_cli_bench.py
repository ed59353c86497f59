"""Smoke test of `difftre bench md` (tiny sizes): one JSON object with positive numbers, clear argument errors,
every argument described in --help."""
import argparse
import json

import pytest

from difftre.cli import build_parser, main

KEYS = ("potential", "n", "replicas", "steps", "dtype", "device", "steps_per_second", "atom_steps_per_second",
        "compile_seconds", "neighbor_rebuilds", "machine", "wall_seconds", "temperature")


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return json.loads(lines[0])


@pytest.mark.parametrize("potential, n, equilibration", [("lj", 256, None), ("sw", 64, "100")])
def test_bench_md_json(capsys, potential, n, equilibration):
    argv = ["bench", "md", "--potential", potential, "--n", str(n), "--steps", "20", "--json"]
    if equilibration is not None:
        argv += ["--equilibration", equilibration]
    result = run_json(capsys, argv)
    for key in KEYS:
        assert key in result, key
    assert (result["potential"], result["n"], result["steps"], result["replicas"]) == (potential, n, 20, 1)
    assert (result["dtype"], result["device"], result["engine"]) == ("float64", "cpu", "difftre")
    for key in ("steps_per_second", "atom_steps_per_second", "compile_seconds", "wall_seconds", "temperature"):
        assert result[key] > 0, key
    assert result["atom_steps_per_second"] == pytest.approx(n * result["steps_per_second"])
    assert result["neighbor_rebuilds"] >= 0
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["cpu_model"]


@pytest.mark.parametrize("argv, words", [
    (["md", "--potential", "xx", "--n", "256", "--steps", "5"], ["--potential", "invalid choice"]),
    (["md", "--potential", "lj", "--n", "256", "--steps", "0"], ["--steps", ">= 1"]),
    (["md", "--potential", "lj", "--n", "abc", "--steps", "5"], ["--n", "integer"]),
    (["md", "--potential", "sw", "--n", "100", "--steps", "5"], ["--n", "8 n^3"]),
    (["md", "--potential", "lj", "--n", "50", "--steps", "5"], ["--n", "cut-off"]),
    (["md", "--potential", "lj", "--n", "256", "--steps", "5", "--dtype", "float16"], ["--dtype", "invalid choice"]),
    (["md", "--potential", "lj", "--n", "256", "--steps", "5", "--device", "tpu"], ["--device", "invalid choice"]),
    (["grad", "--lengths", "1", "5"], ["--lengths", ">= 2"]),
    (["grad", "--draws", "0"], ["--draws", ">= 1"]),
    (["grad", "--dt", "-0.001"], ["--dt", "finite and > 0"]),
    (["grad", "--friction", "nan"], ["--friction", "finite and > 0"]),
])
def test_bench_bad_argument(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench"] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_bench_md_cuda_unavailable_is_clear(capsys):
    try:
        from numba import cuda
        if cuda.is_available():
            pytest.skip("a CUDA device (or the simulator) is available here")
    except ImportError:
        pass
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "md", "--potential", "lj", "--n", "256", "--steps", "5", "--device", "cuda",
              "--equilibration", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--device" in err and "CUDA front end not available" in err, err


def sub_parser(parser, *names):
    """The argparse sub-parser reached by the command names (e.g. 'bench', 'grad')."""
    for name in names:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = commands.choices[name]
    return parser


@pytest.mark.parametrize("workload", ["md", "grad"])
def test_every_bench_argument_is_described(capsys, workload):
    parser = sub_parser(build_parser(), "bench", workload)
    undescribed = [action.option_strings for action in parser._actions if not action.help]
    assert not undescribed
    with pytest.raises(SystemExit):
        main(["bench", workload, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = ["--n-particles", "--repeats", "--seed"] if workload == "grad" else ["--potential", "--dtype", "--seed"]
    for flag in flags:
        assert text.count(flag) >= 2, flag   # in the usage line and described below it
