"""The DiffTRe core: weights, gradient (fluctuation formula, finite differences), the JAX
bridge (zero copy), checkpoints (atomic, exact resume), configuration errors, blow-ups."""
import copy
import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difftre import bridge, checkpoint, md, runner
from difftre.config import ConfigError, load_config
from difftre.experiments import double_well
from difftre.models.state import State
from difftre.potential import Potential
from difftre.reweighting import effective_sample_size, reweighting_weights
from difftre.trainer import train

jax.config.update("jax_enable_x64", True)


SMALL = {"system": {"n_particles": 256}, "sampling": {"n_equilibration": 200, "n_frames": 12, "stride": 50,
                                                      "friction": 1.0},
         "training": {"n_updates": 4, "chunk_size": 4}}


def small_config(tmp_path, n_updates=4):
    """A partial double-well configuration (shrunk for tests) written to a file."""
    path = tmp_path / "small.toml"
    sections = {**SMALL, "training": {**SMALL["training"], "n_updates": n_updates}}
    path.write_text("\n".join(f"[{name}]\n" + "\n".join(f"{k} = {v!r}" for k, v in fields.items())
                              for name, fields in sections.items()))
    return path


@pytest.fixture
def small(tmp_path):
    _, config = runner.resolve("double-well", small_config(tmp_path))
    built = double_well.build(config)
    return built.trainer, built.params, built.positions


def test_weights_uniform_at_sampling_parameters_and_max_shift(small):
    trainer, params, positions = small
    state = trainer.init(params, positions, seed=0)
    n_eff = trainer._n_eff(state.params, trainer._model_inputs, state.reference_energies)
    assert float(n_eff) == pytest.approx(state.states.positions.shape[0], rel=1e-12)
    huge = jnp.array([0.0, 1e5, 2e5, -1e5])
    w = reweighting_weights(huge, jnp.zeros(4), 1.0)
    assert np.all(np.isfinite(w)) and float(w[3]) == 1.0 and float(effective_sample_size(w)) == pytest.approx(1.0)


def test_gradient_equals_fluctuation_formula_and_finite_differences(small):
    """At theta = theta_hat: dL/dtheta = 2 (<O> - O~) . (-beta)(<O dU/dtheta> - <O><dU/dtheta>)."""
    trainer, params, positions = small
    state = trainer.init(params, positions, seed=1)
    (loss, (_, predictions, _)), grad = trainer._value_and_grad(state.params, trainer._model_inputs,
                                                               state.reference_energies, trainer._target_inputs)
    target = trainer.targets[0]
    o = jax.vmap(target.features)(state.states)                                              # (n, G)
    du = jax.vmap(lambda s: jax.grad(trainer.potential.energy)(params, s))(state.states)     # (n, P)
    covariance = (o[:, :, None] * du[:, None, :]).mean(0) - o.mean(0)[:, None] * du.mean(0)[None, :]
    residual = predictions["density"] - target.target
    expected = 2.0 / o.shape[1] * residual @ (-covariance / trainer.kT)
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-12)
    h = 1e-6
    for k in (10, 20, 35):
        step = jnp.zeros_like(params).at[k].set(h)
        args = (trainer._model_inputs, state.reference_energies, trainer._target_inputs)
        plus = trainer._value_and_grad(params + step, *args)[0][0]
        minus = trainer._value_and_grad(params - step, *args)[0][0]
        assert float(grad[k]) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-5, abs=1e-10)


def test_bridge_is_zero_copy_and_matches_numba_kernel():
    buffer = md.aligned_empty((500, 3), np.float64)
    buffer[:] = 1.0
    view = bridge.as_jax(buffer)
    assert view.unsafe_buffer_pointer() == buffer.ctypes.data            # positions: same memory
    result = jax.jit(lambda x: 2.0 * x)(view)
    assert bridge.as_numpy(result).ctypes.data == result.unsafe_buffer_pointer()   # forces: same memory
    with pytest.raises(ValueError, match="copied"):
        bridge.as_jax(np.empty((500, 3))[:, 1:])                          # not C-contiguous: would copy
    # a JAX harmonic force term drives the sampler exactly like the Numba harmonic kernel
    energy = lambda p, s: 0.5 * p * jnp.sum((s.positions - s.box * jnp.floor(s.positions / s.box) - 0.5) ** 2)
    rng = np.random.default_rng(0)
    start = 0.5 + 0.05 * rng.standard_normal((200, 3))
    velocities = rng.standard_normal((200, 3))
    runs = []
    for term in (bridge.jax_force_term(energy, jnp.asarray(150.0)), md.harmonic(150.0, [0.5, 0.5, 0.5])):
        sampler = md.Sampler(md.ForceField([term]), md.VelocityVerlet(1e-3))
        state = sampler.init_state(start, np.ones(3), 1.0, seed=0, velocities=velocities)
        runs.append(sampler.run(state, 0, 5, 20)[0])
    np.testing.assert_allclose(runs[0].positions, runs[1].positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(runs[0].potential_energy, runs[1].potential_energy, rtol=1e-12)


def test_bridge_refuses_float64_without_x64():
    """Without jax_enable_x64, JAX would silently make a float32 copy of a float64 buffer (a fresh process)."""
    code = ("import numpy as np\nfrom difftre import bridge, md\n"
            "try:\n    bridge.as_jax(md.aligned_empty((4, 3), np.float64))\n"
            "except TypeError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "float64 buffer into float32 (a copy): enable jax_enable_x64" in result.stdout, result.stderr[-2000:]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"p": {"a": jnp.arange(3.0)}}, {"x": np.ones(2)}, {"update": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"p": {"a": jnp.arange(3.0) + 9}}, {"x": np.zeros(2)}, {"update": 2})
    trees, arrays, meta = checkpoint.load(path, {"p": {"a": jnp.zeros(3)}})
    assert meta["update"] == 1 and float(trees["p"]["a"][2]) == 2.0
    assert [f.name for f in tmp_path.iterdir()] == ["c.npz"]          # no temporary left behind


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    config = small_config(tmp_path, n_updates=6)
    straight = runner.run("double-well", tmp_path / "straight", config, progress=False)
    runner.run("double-well", tmp_path / "resumed", config, progress=False, overrides={"training.n_updates": 3})
    resumed = runner.run("double-well", tmp_path / "resumed", resume=True, progress=False,
                         overrides={"training.n_updates": 6})
    losses = lambda d: [json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert len(losses("resumed")) == 6
    assert losses("resumed") == losses("straight")
    assert resumed["final_loss"] == straight["final_loss"]
    for name in ("density.png", "potential.png", "training.png", "summary.json", "params.npz", "config.json"):
        assert (tmp_path / "resumed" / name).exists()
    assert resumed["training_wall_time_s"] > sum(json.loads(line)["wall_time_s"] for line in
                            (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines())


def test_run_folder_rules(tmp_path):
    """No overwrite without asking; resume needs a checkpoint; a finished run resumed changes nothing."""
    config = small_config(tmp_path, n_updates=1)
    out = tmp_path / "run"
    with pytest.raises(runner.RunFolderError, match="nothing to resume"):
        runner.run("double-well", out, config, resume=True, progress=False)
    runner.run("double-well", out, config, progress=False)
    with pytest.raises(runner.RunFolderError, match="holds a run .*--resume.*--overwrite"):
        runner.run("double-well", out, config, progress=False)
    files = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    runner.run("double-well", out, resume=True, progress=False)
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == files        # finished: nothing rewritten
    with pytest.raises(runner.RunFolderError, match="keeps its saved configuration"):
        runner.run("double-well", out, resume=True, progress=False, overrides={"sampling.dt": 2e-3})
    summary = runner.run("double-well", out, config, progress=False, overwrite=True,
                         overrides={"system.seed": 3})
    assert json.loads((out / "config.json").read_text())["config"]["system"]["seed"] == 3
    assert summary["n_updates"] == 1


def test_partial_config_and_overrides_merge_onto_defaults(tmp_path):
    defaults = load_config(double_well.DEFAULT_CONFIG, double_well.SCHEMA)
    path = tmp_path / "partial.toml"
    path.write_text('experiment = "double-well"\n[sampling]\nstride = 7\n')
    name, config = runner.resolve(str(path), overrides={"training.learning_rate": 1})
    assert name == "double-well" and config["sampling"]["stride"] == 7
    assert config["training"]["learning_rate"] == 1.0 and isinstance(config["training"]["learning_rate"], float)
    assert config["executor"] == {"kind": "inprocess", "n_threads": 0} and config["state_points"] == {}
    unchanged = {s: {k: v for k, v in f.items()} for s, f in config.items() if s not in runner.RUNNER_SECTIONS}
    unchanged["sampling"]["stride"] = defaults["sampling"]["stride"]
    unchanged["training"]["learning_rate"] = defaults["training"]["learning_rate"]
    assert unchanged == defaults
    assert runner.parse_override("sampling.device=cuda") == ("sampling.device", "cuda")
    assert runner.parse_override("training.n_updates=3") == ("training.n_updates", 3)
    for overrides, message in (({"sampling.stride": 0}, r"sampling.stride = 0 must be in \[1, 1000000\]"),
                               ({"sampling.strid": 1}, "unknown field sampling.strid"),
                               ({"training.adam_b2": 1.0}, r"training.adam_b2 = 1.0 must be in \[0, 1\)"),
                               ({"system.kT": float("nan")}, "system.kT = nan must be finite")):
        with pytest.raises(ConfigError, match=message):
            runner.resolve("double-well", overrides=overrides)
    with pytest.raises(ConfigError, match="unknown experiment 'triple-well'"):
        runner.resolve("triple-well")
    assert "double-well" in runner.available()


def test_cli_runs_an_experiment_and_refuses_bad_input(tmp_path, capsys):
    from difftre import cli
    config = small_config(tmp_path, n_updates=1)
    assert cli.main(["run", "double-well", "--out", str(tmp_path / "cli"), "--config", str(config), "--quiet",
                     "--set", "sampling.n_frames=6"]) == 0
    assert json.loads(capsys.readouterr().out)["n_updates"] == 1
    for argv, message in ((["run", "double-well", "--out", str(tmp_path / "cli"), "--quiet"], "holds a run"),
                          (["run", "double-well", "--out", str(tmp_path / "x"), "--set", "nonsense"],
                           "must read section.field=value"),
                          (["run", "double-well", "--out", str(tmp_path / "x"), "--config", str(tmp_path)],
                           "is a folder")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert cli.main(["experiments"]) == 0 and "double-well" in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    (("n_particles = 2000", "# n_particles removed"), "missing field system.n_particles"),
    (("friction = 2.0", "fricton = 2.0"), "unknown field sampling.fricton"),
    (("dt = 1e-3", "dt = -1e-3"), "sampling.dt = -0.001 must be in (0, 1]"),
    (("dt = 1e-3", 'dt = "1 fs"'), "sampling.dt must be float"),
    (('integrator = "langevin"', 'integrator = "nose-hoover"'), "sampling.integrator"),
    (("[model]", "[models]"), "unknown section [models]"),
    (('device = "cpu"', 'device = "gpu"'), "sampling.device = 'gpu' must be one of ['cpu', 'cuda']"),
])
def test_configuration_errors_name_the_field(tmp_path, edit, message):
    text = double_well.DEFAULT_CONFIG.read_text()
    assert edit[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, double_well.SCHEMA)


def test_blow_up_rolls_back_and_stops_with_usable_checkpoint(small, tmp_path):
    """A potential whose sampling explodes once parameters move: parameters are rolled back,
    the step halved, then the run stops with a clear message; the last checkpoint loads."""
    trainer, params, positions = small
    good = trainer.potential

    def force_field(p):
        ff = good.force_field(p)
        if not np.allclose(np.asarray(p), np.asarray(params)):
            ff = md.ForceField(list(ff.pair_terms + ff.system_terms) + [md.harmonic(1e9, [0.5])])
        return ff

    trainer.potential = Potential(good.energy, force_field)
    trainer.max_blow_up_retries = 2
    state = trainer.init(params, positions, seed=2)
    train(trainer, state, 1, tmp_path, progress=False)        # update 0 reuses the initial trajectory
    with pytest.raises(Exception, match=r"update 1: sampling with the new parameters failed .*giving up"):
        train(trainer, state, 2, tmp_path, progress=False)
    restored = trainer.load(tmp_path / "checkpoint.npz", params)
    assert restored.update == 1 and np.all(np.isfinite(np.asarray(restored.params)))
