"""Does an experiment sample the same observables at a longer time step than the published one?

Runs an experiment's sampling at each time step (the same equilibration time and interval between
states, in ps) with the model and parameters of a run folder, or the default model at theta = 0 (the
prior alone), and prints per time step and target: the prediction with its standard error (small
targets, in the units below) or its MSE against the target (curves), and the largest difference
from the first time step in units of the combined standard error, with the fraction of components
beyond 2 of them. Usage:

    python bench/time_step_check.py cg-water [RUN_DIR] --dt 0.002 0.0033333333333333335 --interval 0.1 --time 200
    python bench/time_step_check.py diamond [RUN_DIR] --dt 0.0005 0.001 --interval 0.025 --time 60

--time is the production time of all replicas together; --save DIR keeps each time step's predictions
(reused when present); --preset NAME starts from that preset instead of the defaults.
"""
import argparse
import dataclasses
import json
import pathlib

import numpy as np

from difftre import config as configuration, runner
from difftre.md import BAR, GPA

DISPLAY_UNITS = {"pressure": ("bar", BAR), "stress": ("GPa", GPA), "cubic_constants": ("GPa", GPA)}
"""Targets printed in these units (name: (unit, kJ mol^-1 nm^-3 per unit)); others in the project's units."""
EQUILIBRATION_PS = 10.0


def sample(experiment, dt, interval, time_ps, run_dir, preset=None, seed=0):
    """(predictions with standard errors, targets) of a trajectory at time step dt (ps), a state every
    `interval` ps, time_ps of production over all replicas, with the model and parameters of run_dir
    (its config.json and checkpoint.npz) or the default model (of ``preset``) at theta = 0."""
    stride = int(round(interval / dt))
    if abs(stride * dt - interval) > 1e-9 * interval:
        raise ValueError(f"--interval {interval} ps is not a whole number of time steps {dt} ps")
    module = runner.experiment_module(experiment)
    config = runner.resolve(experiment, preset=preset)[1]
    if run_dir is not None:   # the run's settings over today's defaults (fields added since keep their default)
        config = configuration.merge(config, json.loads(pathlib.Path(run_dir, "config.json").read_text())["config"],
                                     f"{run_dir}/config.json")
    overrides = {"sampling": {"dt": dt, "stride": stride, "n_equilibration": int(round(EQUILIBRATION_PS / dt))}}
    config = runner.checked(configuration.merge(config, overrides, "time-step overrides"), module, "time-step check")
    built = module.build(config)
    trainer = built.trainer
    n_frames = max(2, int(round(time_ps / (interval * trainer.sampling.replicas))))
    trainer.sampling = dataclasses.replace(trainer.sampling, n_frames=n_frames)
    params = built.params if run_dir is None else np.load(pathlib.Path(run_dir, "checkpoint.npz"))["params/0"]
    try:
        state = trainer.init(params, built.positions, seed=seed)
        return trainer.predictions_with_errors(state), [t.target for t in trainer.targets]
    finally:
        trainer.executor.close()


def saved_or_sampled(experiment, dt, interval, time_ps, run_dir, save_dir, preset=None):
    """`sample`, or its result saved in save_dir (a .npz per time step) by an earlier call."""
    if save_dir is None:
        return sample(experiment, dt, interval, time_ps, run_dir, preset)
    path = pathlib.Path(save_dir, f"{experiment}_dt_{dt:.6g}_time_{time_ps:g}.npz")
    if not path.exists():
        predictions, targets = sample(experiment, dt, interval, time_ps, run_dir, preset)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"{name}/{part}": np.asarray(v) for name, pair in predictions.items()
                          for part, v in zip(("value", "error"), pair)},
                 **{f"{name}/target": np.asarray(t) for name, t in zip(predictions, targets)})
    saved = np.load(path)
    names = [key.split("/")[0] for key in saved.files if key.endswith("/target")]
    return ({name: (saved[f"{name}/value"], saved[f"{name}/error"]) for name in names},
            [saved[f"{name}/target"] for name in names])


def compared(name, value, error, target, reference):
    """One target's row entries: value and error (up to 9 components) or MSE, and its difference from
    the reference time step (value, error) in combined standard errors."""
    unit, scale = DISPLAY_UNITS.get(name, ("", 1.0))
    ref_value, ref_error = reference
    combined = np.atleast_1d(np.sqrt(error ** 2 + ref_error ** 2))
    significant = combined > 0.0     # e.g. the RDF's empty core has no error
    z = np.atleast_1d(np.abs(value - ref_value))[significant] / combined[significant]
    row = {f"{name}_max_difference_in_standard_errors": float(z.max(initial=0.0)),
           f"{name}_fraction_beyond_2_standard_errors": float(np.mean(z > 2.0)) if z.size else 0.0}
    if np.size(value) <= 9:
        suffix = f"_{unit}" if unit else ""
        row[f"{name}{suffix}"] = (np.asarray(value) / scale).round(6).tolist()
        row[f"{name}_standard_error{suffix}"] = (np.asarray(error) / scale).round(6).tolist()
    else:
        row[f"{name}_mse"] = float(np.mean((value - target) ** 2))
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--dt", type=float, nargs="+", required=True, help="time steps (ps); the first is the reference")
    parser.add_argument("--interval", type=float, required=True, help="ps between stored states")
    parser.add_argument("--time", type=float, default=200.0, help="ps of production, all replicas together")
    parser.add_argument("--preset", help="the experiment's preset (without a run folder)")
    parser.add_argument("--save", help="folder keeping each time step's predictions (reused when present)")
    args = parser.parse_args()
    reference = None
    for dt in args.dt:
        predictions, targets = saved_or_sampled(args.experiment, dt, args.interval, args.time, args.run_dir, args.save,
                                              args.preset)
        reference = predictions if reference is None else reference
        row = {"dt_ps": dt, "time_ps": args.time}
        for (name, (value, error)), target in zip(predictions.items(), targets):
            row.update(compared(name, value, error, target, reference[name]))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
