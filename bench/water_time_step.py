"""Does CG water sample the same structure and pressure at a longer time step than the published 2 fs?

Runs the CG-water experiment's Nose-Hoover sampling at each time step (10 ps equilibration, a state
every 0.1 ps) with the model and parameters of a run folder, or the default model at theta = 0 (the
prior alone), and prints per time step: RDF and ADF MSE against experiment, the largest RDF/ADF
difference from the first time step in units of the combined standard error and the fraction of
bins beyond 2 of them, and the pressure with its standard error (block averaging). Usage:

    python bench/water_time_step.py [RUN_DIR] [--time PS] [--dt 0.002 0.0033333333333333335] [--save DIR]
"""
import argparse
import dataclasses
import json
import pathlib

import numpy as np

from difftre import config as configuration, runner
from difftre.md import BAR


def sample(dt, time_ps, run_dir, seed=0):
    """(predictions with standard errors, targets) of a trajectory at time step dt (ps), the model and
    parameters of run_dir (its config.json and checkpoint.npz) or the default model at theta = 0."""
    overrides = {"sampling": {"dt": dt, "stride": int(round(0.1 / dt)), "n_equilibration": int(round(10.0 / dt))}}
    module = runner.experiment_module("cg-water")
    config = runner.resolve("cg-water")[1]
    if run_dir is not None:   # the run's settings over today's defaults (fields added since keep their default)
        config = configuration.merge(config, json.loads(pathlib.Path(run_dir, "config.json").read_text())["config"],
                                     f"{run_dir}/config.json")
    config = runner.checked(configuration.merge(config, overrides, "time-step overrides"), module, "time-step check")
    built = module.build(config)
    trainer = built.trainer
    trainer.sampling = dataclasses.replace(trainer.sampling, n_frames=int(round(time_ps / 0.1)))
    params = built.params if run_dir is None else np.load(pathlib.Path(run_dir, "checkpoint.npz"))["params/0"]
    state = trainer.init(params, built.positions, seed=seed)
    return trainer.predictions_with_errors(state), [t.target for t in trainer.targets]


def saved_or_sampled(dt, time_ps, run_dir, save_dir):
    """`sample`, or its result saved in save_dir (a .npz per time step) by an earlier call."""
    if save_dir is None:
        return sample(dt, time_ps, run_dir)
    path = pathlib.Path(save_dir, f"dt_{dt:.6g}_time_{time_ps:g}.npz")
    if not path.exists():
        predictions, targets = sample(dt, time_ps, run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"{name}/{part}": np.asarray(v) for name, pair in predictions.items()
                          for part, v in zip(("value", "error"), pair)},
                 **{f"{name}/target": np.asarray(t) for name, t in zip(predictions, targets)})
    saved = np.load(path)
    names = [key.split("/")[0] for key in saved.files if key.endswith("/target")]
    return ({name: (saved[f"{name}/value"], saved[f"{name}/error"]) for name in names},
            [saved[f"{name}/target"] for name in names])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--time", type=float, default=200.0)
    parser.add_argument("--dt", type=float, nargs="+", default=[0.002, 0.0033333333333333335])
    parser.add_argument("--save", help="folder keeping each time step's predictions (reused when present)")
    args = parser.parse_args()
    reference = None
    for dt in args.dt:
        predictions, targets = saved_or_sampled(dt, args.time, args.run_dir, args.save)
        reference = predictions if reference is None else reference
        row = {"dt_ps": dt, "time_ps": args.time}
        for (name, (value, error)), target in zip(predictions.items(), targets):
            ref_value, ref_error = reference[name]
            combined = np.atleast_1d(np.sqrt(error ** 2 + ref_error ** 2))
            significant = combined > 0.0     # the RDF's empty core has no error
            z = (np.atleast_1d(np.abs(value - ref_value))[significant] / combined[significant]
                 if dt != args.dt[0] else np.zeros(1))
            if name == "pressure":
                row.update(pressure_bar=float(value) / BAR, pressure_standard_error_bar=float(error) / BAR,
                           pressure_difference_in_standard_errors=float(z.max()))
                continue
            row[f"{name}_mse"] = float(np.mean((value - target) ** 2))
            row[f"{name}_max_difference_in_standard_errors"] = float(z.max())
            row[f"{name}_fraction_beyond_2_standard_errors"] = float(np.mean(z > 2.0))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
