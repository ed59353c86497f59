"""Several state points and replicas in one training (difftre.state_points, the runner's [state_points]
and sampling.replicas): both points' losses fall, resume is exact, replicas pool their states, and a
Dask cluster gives the in-process result bit for bit."""
import json

import numpy as np
import pytest

from difftre import runner
from difftre.config import ConfigError

SMALL = {"system": {"n_particles": 256}, "sampling": {"n_equilibration": 200, "n_frames": 12, "stride": 50,
                                                      "friction": 1.0},
         "training": {"n_updates": 8, "chunk_size": 4}}
TWO_TEMPERATURES = {"cold": {"system": {"kT": 1.0}}, "hot": {"system": {"kT": 1.5, "seed": 7}}}


def toml_text(sections, prefix=""):
    lines = []
    for name, fields in sections.items():
        plain = {k: v for k, v in fields.items() if not isinstance(v, dict)}
        lines.append(f"[{prefix}{name}]")
        lines += [f"{k} = {v!r}" for k, v in plain.items()]
        nested = {k: v for k, v in fields.items() if isinstance(v, dict)}
        if nested:
            lines.append(toml_text(nested, prefix=f"{prefix}{name}."))
    return "\n".join(lines)


def write_config(tmp_path, points=None, **sections):
    """A shrunk double-well configuration (SMALL updated by `sections`) with optional state points."""
    merged = {name: {**SMALL.get(name, {}), **sections.get(name, {})} for name in {*SMALL, *sections}}
    if points:
        merged["state_points"] = points
    path = tmp_path / "config.toml"
    path.write_text(toml_text(merged).replace("'", '"'))
    return path


def losses(out, point=None):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] if point is None else row["points"][point]["loss"] for row in rows]


def test_two_temperatures_train_together_and_both_losses_fall(tmp_path):
    out = tmp_path / "run"
    summary = runner.run("double-well", out, write_config(tmp_path, TWO_TEMPERATURES), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(rows[0]["loss_parts"]) == {"cold/density", "hot/density"}
    for point in ("cold", "hot"):
        point_losses = losses(out, point)
        assert np.mean(point_losses[-3:]) < 0.5 * point_losses[0], (point, point_losses)
        assert (out / point / "density.png").exists() and (out / point / "params.npz").exists()
        assert f"{point}/potential_max_error_kT" in summary
    np.testing.assert_allclose(losses(out), np.add(losses(out, "cold"), losses(out, "hot")), rtol=1e-12)
    # the hot point's target is the hotter Boltzmann density: a different target from the cold one
    cold, hot = (np.asarray(rows[0]["predictions"][f"{p}/density"]) for p in ("cold", "hot"))
    assert not np.allclose(cold, hot)


def test_replicas_and_points_resume_exactly_and_dask_gives_the_in_process_result_bit_for_bit(tmp_path):
    """Two state points of two replicas each: one uninterrupted in-process run equals a run whose first
    update samples on a 2-worker Dask cluster and which is then resumed in this process."""
    pytest.importorskip("distributed")
    config = write_config(tmp_path, TWO_TEMPERATURES, sampling={"replicas": 2}, training={"n_updates": 3})
    runner.run("double-well", tmp_path / "straight", config, progress=False)
    runner.run("double-well", tmp_path / "resumed", config, progress=False,
               overrides={"training.n_updates": 1, "executor.kind": "dask", "executor.n_workers": 2})
    runner.run("double-well", tmp_path / "resumed", resume=True, progress=False, overrides={"training.n_updates": 3})
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    straight, resumed = (np.load(tmp_path / d / "checkpoint.npz") for d in ("straight", "resumed"))
    assert set(straight.files) == set(resumed.files)
    for name in straight.files:
        if name != "meta":
            np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
    n_frames = SMALL["sampling"]["n_frames"]
    for point in TWO_TEMPERATURES:
        stored, first, second = (straight[f"{point}/{name}"] for name in ("positions", "md/positions", "md1/positions"))
        assert stored.shape[0] == 2 * n_frames
        assert not np.allclose(first, second)                       # independent replicas
        np.testing.assert_array_equal(stored[n_frames - 1], first)  # the states pooled replica by replica
        np.testing.assert_array_equal(stored[-1], second)


@pytest.mark.parametrize("points, message", [
    ({"cold": {"model": {"prior_k": 10.0}}}, "may not change \\[model\\]"),
    ({"hot": {"system": {"kT": -1.0}}}, "state_points.hot.*system.kT"),
    ({"hot": {"sampling": {"replicas": 0}}}, "sampling.replicas"),
])
def test_bad_state_points_are_refused_naming_the_point(tmp_path, points, message):
    with pytest.raises(ConfigError, match=message):
        runner.resolve("double-well", write_config(tmp_path, points))


def test_state_points_at_two_pressures_sample_with_their_barostats(tmp_path):
    from difftre import md
    points = {"low": {"sampling": {"barostat_interval": 10, "pressure": 1.0}},
              "high": {"sampling": {"barostat_interval": 20, "pressure": 3.5, "replicas": 2}}}
    _, config = runner.resolve("double-well", write_config(tmp_path, points))
    trainer, _, _ = runner._build(runner.experiment_module("double-well"), config)
    low, high = (trainer.points[name].trainer.sampling for name in ("low", "high"))
    assert low.barostat == md.MonteCarloBarostat(1.0, 10) and low.replicas == 1
    assert high.barostat == md.MonteCarloBarostat(3.5, 20) and high.replicas == 2
    with pytest.raises(ConfigError, match="state_points.low.*sampling.pressure"):
        runner.resolve("double-well", write_config(tmp_path, {"low": {"sampling": {"pressure": -1.0}}}))


def test_bad_executor_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="executor.kind"):
        runner.resolve("double-well", write_config(tmp_path), overrides={"executor.kind": "mpi"})
