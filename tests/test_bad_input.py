"""Bad input never ends in a traceback or a silent wrong result (issue 15), for every experiment the
runner runs: generated bad and extreme configurations are refused with one line naming the field and
the rule, or accepted with every value finite and in range; the CLI turns expected failures into one
line and exit status 2; no run ends with a non-finite parameter; the resume rewrite is atomic."""
import collections
import json
import math
import os
import re

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from difftre import cli, md, resources, runner, trainer as training
from difftre.config import ConfigError, Rule, validate
from difftre.experiments import double_well
from difftre.io import InputFileError

jax.config.update("jax_enable_x64", True)

EXPERIMENTS = sorted(runner.available())
EXAMPLES_PER_EXPERIMENT = 260          # 2 experiments: 520 generated configurations per run of the suite
EXTREME_FLOATS = [0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-12, 1e12, 2.0 ** 31, 2.0 ** 53 + 2, 1e30, 1e308, 1.797e308,
                  math.inf, -math.inf, math.nan, -math.nan]
EXTREME_INTS = [0, -1, 1, 2, 3, 2 ** 31, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -(2 ** 63)]
WRONG_TYPES = [True, "1.0", [1.0], {"a": 1}, None]
SHRUNK_DOUBLE_WELL = """
[system]
n_particles = 64
[sampling]
n_equilibration = 50
n_frames = 6
stride = 10
[training]
n_updates = 2
chunk_size = 6
"""


def field_values(kind, default):
    """Bad and extreme values for a field of type ``kind`` whose default is ``default``."""
    if kind is float:
        scaled = st.integers(-15, 15).map(lambda e: default * 10.0 ** e if default else 10.0 ** e)
        typed = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(EXTREME_FLOATS), scaled)
    elif kind is int:
        scaled = st.integers(-40, 40).map(lambda e: int(default * 2.0 ** e) if default else 2 ** abs(e))
        typed = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.sampled_from(EXTREME_INTS), scaled)
    else:
        typed = st.one_of(st.text(max_size=12), st.sampled_from(["", "x.gro", "float16", "cpu", "spline"]))
    return st.one_of(typed, typed, typed, st.sampled_from(WRONG_TYPES))


def configuration_edits(name):
    """1-3 fields of experiment ``name`` set to bad or extreme values: {section.field: value}."""
    module = runner.experiment_module(name)
    _, defaults = runner.resolve(name)
    fields = [(section, field, kind) for section, schema in module.SCHEMA.items()
              for field, (kind, _) in schema.items()]
    edit = st.sampled_from(fields).flatmap(lambda f: st.tuples(st.just(f"{f[0]}.{f[1]}"),
                                                               field_values(f[2], defaults[f[0]][f[1]])))
    return st.lists(edit, min_size=1, max_size=3).map(dict)


def refused_or_safe(name, edits):
    """'refused' (one line naming a field and its rule) or 'accepted' (every value finite, within its
    rule, and what the values make together within the steps and memory limits)."""
    module = runner.experiment_module(name)
    try:
        _, config = runner.resolve(name, overrides=edits)
    except InputFileError as error:                      # system.configuration naming a missing .gro file
        assert "\n" not in str(error) and str(error.path) in str(error)
        return "refused"
    except ConfigError as error:
        message = str(error)
        names = {f"{section}.{field}" for section, fields in module.SCHEMA.items() for field in fields}
        assert "\n" not in message and "<lambda>" not in message, message
        assert any(field in message for field in names) and "must" in message, message
        return "refused"
    for section, fields in module.SCHEMA.items():
        for field, (kind, rule) in fields.items():
            value = config[section][field]
            assert isinstance(value, kind) and (kind is not float or math.isfinite(value)), (field, value)
            assert rule.check(value) if isinstance(rule, Rule) else value in rule, (field, value)
    steps = resources.steps_per_trajectory(config["sampling"])
    assert steps * (config["training"]["n_updates"] + 1) <= resources.MAX_STEPS
    if hasattr(module, "check_resources"):
        demand = module.check_resources(config, "accepted")
        assert sum(resources.memory_needed(config, demand).values()) <= resources.available_memory()
        assert all(2 * cutoff < min(demand.box) for cutoff in demand.list_cutoffs.values())
    return "accepted"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_generated_bad_configurations_are_refused_or_finite_and_in_range(name):
    outcomes = collections.Counter()

    @settings(max_examples=EXAMPLES_PER_EXPERIMENT, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(edits=configuration_edits(name))
    def check(edits):
        outcomes[refused_or_safe(name, edits)] += 1

    check()
    assert sum(outcomes.values()) >= EXAMPLES_PER_EXPERIMENT
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0, outcomes


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_rule_is_named_and_the_defaults_pass(name):
    module = runner.experiment_module(name)
    assert hasattr(module, "check_resources"), f"experiment {name} has no check_resources (difftre.resources)"
    for section, fields in module.SCHEMA.items():
        for field, (kind, rule) in fields.items():
            assert isinstance(rule, (Rule, set)), f"{section}.{field} has no rule"
            assert isinstance(rule, set) or "<lambda>" not in rule.description
    runner.resolve(name)
    with pytest.raises(ConfigError, match=r"training.adam_b2 = 1e\+308 must be in \[0, 1\)$"):
        runner.resolve(name, overrides={"training.adam_b2": 1e308})
    with pytest.raises(TypeError, match="must be a config.Rule or a set"):
        validate({"s": {"x": 1.0}}, {"s": {"x": (float, lambda value: value > 0)}})


@pytest.mark.parametrize("field, value, rule", [
    ("sampling.stride", 2 ** 63 - 1, "must be in [1, 1000000]"),
    ("training.learning_rate", 1.797e308, "must be in (0, 100]"),
    ("target.smoothing", math.inf, "must be finite"),
    ("target.smoothing", 2.0 ** 31, "must be in (0, 1]"),
    ("target.smoothing", 0.5, "must be in (0, 0.0625] (system.box_length / 16"),
    ("sampling.n_equilibration", 2 ** 64, "must be in [0, 1000000000]"),
    ("sampling.n_frames", 2 ** 64, "must be in [1, 10000000]"),
    ("model.init_scale", math.inf, "must be finite"),
    ("model.init_scale", 1e308, "must be in [0, 10]"),
    ("model.prior_k", math.inf, "must be finite"),
    ("training.decay_updates", 1e30, "must be int"),
    ("training.decay_updates", 10 ** 30, "must be in [1, 1000000]"),
    ("system.kT", 1e-300, "must be in [0.1, 10]"),
    ("system.box_length", 1e-300, "must be in [0.1, 10]"),
    ("system.box_length", 2.0 ** 53 + 1, "must be in [0.1, 10]"),
    ("system.box_length", 1.797e308, "must be in [0.1, 10]"),
    ("model.prior_center", -math.nan, "must be finite"),
    ("model.prior_center", 2.0, "must be in [0, system.box_length = 1]"),
    ("system.mass", 1e-3, "sampling.dt = 0.001 must be in (0, 0.00055]"),   # too fast for the time step
    ("sampling.dt", 0.5, "sampling.dt = 0.5 must be in (0, 0.0174]"),
    ("model.prior_k", 1e6, "sampling.dt = 0.001 must be in (0, 0.000314]"),
    ("model.init_scale", 10.0, "sampling.dt = 0.001 must be in (0, 0.000748]"),
])
def test_reported_bad_values_are_refused_naming_field_and_rule(field, value, rule):
    with pytest.raises(ConfigError) as refused:
        runner.resolve("double-well", overrides={field: value})
    message = str(refused.value)
    assert field in message and rule in message and "\n" not in message, message


def test_derived_sizes_are_refused_with_the_number_needed():
    with pytest.raises(resources.ResourceError, match=r"needs .* GiB \(\d+ bytes: frames .*lower sampling.n_frames, "
                                                      r"sampling.replicas, system.n_particles"):
        runner.resolve("double-well", overrides={"system.n_particles": 10 ** 7, "sampling.n_frames": 10 ** 7})
    with pytest.raises(ConfigError, match=r"= 10000000001000 steps per trajectory, over training.n_updates \+ 1 = "
                                          r"1000001 trajectories, must be at most 2\^62"):
        runner.resolve("double-well", overrides={"sampling.n_frames": 10 ** 7, "sampling.stride": 10 ** 6,
                                                 "training.n_updates": 10 ** 6})
    with pytest.raises(ConfigError, match=r"model.leg_cutoff\) \+ sampling.skin = 1.7 must be below half the "
                                          r"shortest box edge \(3 / 2"):
        runner.resolve("cg-water", overrides={"model.pair_cutoff": 1.6})
    with pytest.raises(ConfigError, match=r"sampling.tau = 0.2 must be at least 10 x sampling.dt"):
        runner.resolve("cg-water", overrides={"sampling.dt": 0.05})


def test_the_sampler_refuses_an_int64_wrap_and_never_returns_unwritten_frames(monkeypatch):
    sampler = md.Sampler(md.ForceField([md.harmonic(1.0, [0.5])]), md.Langevin(dt=1e-3, kT=1.0, friction=1.0))
    state = sampler.init_state(np.full((8, 1), 0.5), [1.0], masses=1.0, seed=0)
    with pytest.raises(ValueError, match="int64 step counter"):
        sampler.run(state, 1000, 300, 2 ** 63 - 1)
    monkeypatch.setattr(md.engine, "run", lambda *args: (args[15], 0.0, 0))     # returns without stepping
    with pytest.raises(md.SimulationError, match="recorded 0 of 5 frames"):
        sampler.run(state, 0, 5, 1)


def small_double_well(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SHRUNK_DOUBLE_WELL)
    return path


def test_an_optimiser_step_to_non_finite_parameters_is_rolled_back_then_stops(tmp_path, monkeypatch):
    """learning_rate = 1.797e308 (let past the schema here): no non-finite number reaches the metrics or the
    checkpoint; the run stops with FloatingPointError and the last checkpoint loads with finite values."""
    monkeypatch.setitem(double_well.SCHEMA["training"], "learning_rate", (float, Rule(lambda v: v > 0, "positive")))
    out = tmp_path / "run"
    with pytest.raises((FloatingPointError, training.BlowUpError), match=r"update \d"):
        runner.run("double-well", out, small_double_well(tmp_path), progress=False,
                   overrides={"training.learning_rate": 1.797e308, "training.n_updates": 3})
    assert not (out / "summary.json").exists()
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert np.isfinite(json.loads(line)["loss"]) and np.isfinite(json.loads(line)["n_eff"])
    built = double_well.build(runner.resolve("double-well", small_double_well(tmp_path))[1])
    state = built.trainer.load(out / "checkpoint.npz", built.params)
    assert np.all(np.isfinite(np.asarray(state.params)))


def test_a_non_finite_step_halves_the_step_and_leaves_parameters_unchanged(tmp_path, monkeypatch):
    _, config = runner.resolve("double-well", small_double_well(tmp_path))
    built = double_well.build(config)
    trainer = built.trainer
    trainer.max_blow_up_retries = 2
    state = trainer.init(built.params, built.positions, seed=0)
    before = np.asarray(state.params).copy()
    monkeypatch.setattr(trainer, "_next_params", lambda state, grads, predictions: (state.params * np.inf,
                                                                                     state.opt_state))
    with pytest.raises(FloatingPointError, match="update 0: the optimiser step gave non-finite parameters"):
        trainer.update(state)
    assert np.array_equal(np.asarray(state.params), before) and state.step_scale == 0.25 and state.update == 0


def run_cli(argv, capsys):
    """(exit status, stderr) of the difftre command, in process."""
    try:
        status = cli.main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"[sampling]\ndt = \xff\xfe\n", "not UTF-8 text (byte 16)"),
    ("[sampling]\ndt = 1e-3\n".encode("utf-16"), "not UTF-8 text (byte 0)"),
    (b"[sampling]\ndt = 1e-3\nstride = 5\ndt = 2e-3\n", "duplicate key 'dt'"),
    (b"[sampling]\nstride = 5\n[sampling]\ndt = 2e-3\n", "duplicate key 'sampling'"),
    (b"[sampling]\nstride = 9223372036854775807\n", "sampling.stride = 9223372036854775807 must be in [1, 1000000]"),
    (b"[training]\nlearning_rate = 1.797e308\n", "must be in (0, 100]"),
    (b"[model]\nprior_center = -nan\n", "model.prior_center = nan must be finite"),
    (None, "is a folder"),
])
def test_cli_reports_bad_files_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "partial.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    status, err = run_cli(["run", "double-well", "--out", str(tmp_path / "out"), "--config", str(path), "--quiet"],
                          capsys)
    assert status == 2 and message in err and str(path) in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_names_the_likely_causes_of_a_blow_up_at_the_first_step(tmp_path, capsys, monkeypatch):
    """An extreme time step let past the time-step rule blows up at once: one line, exit 2, the suspects
    named with their values; --debug shows the traceback instead."""
    monkeypatch.setattr(double_well, "check_time_step", lambda *args: None)
    argv = ["run", "double-well", "--out", str(tmp_path / "out"), "--config", str(small_double_well(tmp_path)),
            "--quiet", "--set", "sampling.dt=0.9"]
    status, err = run_cli(argv, capsys)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(r"first trajectory .* blew up at step \d+", err), err
    assert "likely causes: sampling.dt = 0.9 (time step), system.kT = 1.0 (temperature)" in err
    with pytest.raises(md.SimulationError):
        cli.main(argv + ["--overwrite", "--debug"])


def test_cli_runs_a_shrunk_double_well_to_a_finite_summary(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "double-well", "--out", str(out), "--config", str(small_double_well(tmp_path)),
                     "--quiet", "--updates", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    numbers = [v for v in summary.values() if isinstance(v, float)] + summary["potential_region"]
    assert summary["n_updates"] == 1 and np.all(np.isfinite(numbers))
    assert np.all(np.isfinite(np.load(out / "params.npz")["spline_values"]))
    with pytest.raises(FloatingPointError, match="summary value final_loss = nan is not finite"):
        runner._require_finite_summary({"final_loss": math.nan}, out)


@pytest.mark.parametrize("interrupted", ["fsync", "replace"])
def test_an_interrupted_metrics_rewrite_leaves_the_file_complete(tmp_path, monkeypatch, interrupted):
    path = tmp_path / "metrics.jsonl"
    rows = "".join(json.dumps({"step": k, "loss": 1.0 / (k + 1)}) + "\n" for k in range(5))
    path.write_text(rows)

    def killed(*args):
        raise KeyboardInterrupt("killed during the rewrite")

    monkeypatch.setattr(training.os, interrupted, killed)
    with pytest.raises(KeyboardInterrupt):
        training._truncate_metrics(str(path), 3)
    assert path.read_text() == rows
    monkeypatch.undo()
    training._truncate_metrics(str(path), 3)
    assert path.read_text() == "".join(rows.splitlines(keepends=True)[:3])
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]
