"""The experiment runner: configuration, output folder, training, checkpoints, summary.

An experiment is a package under ``experiments/`` (``difftre.experiments.NAME``,
run as ``difftre run NAME`` with ``_`` written as ``-``) that provides
``DEFAULT_CONFIG`` (its ``config.toml``), ``SCHEMA`` (see ``difftre.config``) and
``build(config) -> Experiment``. Every experiment's schema has ``system.seed``,
``training.n_updates`` and ``sampling.{device, dtype, n_equilibration, n_frames, stride}``;
it may provide ``check_resources(config, source) -> difftre.resources.Demand`` (its cross-field
checks and what it needs of the machine) and ``BLOW_UP_SUSPECTS`` ({field: what it is}, named
when the first trajectory blows up). The runner owns everything else:

- configuration: a partial TOML file and command-line overrides are merged onto
  the experiment's defaults and validated once, the same way, then checked against the
  machine (``difftre.resources``: step counts, memory, cut-offs against the box);
- the output folder: an existing run is not overwritten without ``overwrite``;
  ``resume`` continues from its checkpoint (an error where there is none) with the
  configuration saved in the run (only ``training.n_updates`` may change); a
  finished run is left as it is; the wall time adds up over resumes;
- the runner's own sections, optional in every configuration: ``[executor]`` (who samples: this
  process, or a Dask cluster; ``difftre.executor``) and ``[state_points.NAME]`` (several state
  points in one training, ``difftre.state_points``: each a partial configuration merged onto the
  rest, changing any section but [model] and [training]; its results under ``NAME/``);
  ``sampling.replicas`` (every experiment's) samples R independent replicas per state point, and
  ``sampling.barostat_interval`` > 0 samples at constant ``sampling.pressure`` (Monte Carlo barostat);
- training (``difftre.trainer``), ``metrics.jsonl``, ``checkpoint.npz`` after every
  update (atomic, so an interrupt leaves the last complete update), ``summary.json``
  and the experiment's report (plots, exported parameters).
"""
import dataclasses
import importlib
import json
import os
import pathlib
import pkgutil
import time
import tomllib
from typing import Callable, Optional

import numpy as np

from difftre import config as configuration, executor as executors, experiments, md, resources
from difftre import state_points as points_training, trainer as training

CONFIG_NAME = "config.json"          # the merged configuration of a run, beside its checkpoint
CHECKPOINT_NAME = "checkpoint.npz"
RESULT_FILES = ("metrics.jsonl", "summary.json", CHECKPOINT_NAME, CONFIG_NAME)
PROTOCOL_FIELDS = ("system.seed", "training.n_updates", "sampling.device")
RUNNER_SECTIONS = ("executor", "state_points")     # the runner's own sections (optional, see the docstring)
SHARED_SECTIONS = ("model", "training")            # what state points share (one potential, one optimiser)


class RunFolderError(ValueError):
    """The output folder does not allow what was asked (overwrite, resume)."""


@dataclasses.dataclass
class Experiment:
    """What an experiment's ``build(config)`` returns.

    trainer: a ``difftre.trainer.Trainer``; params: the initial parameters; positions: the
    initial configuration (N, dim); report(trainer, state, metrics, out_dir) -> dict of summary
    numbers (and writes the experiment's plots and exported model); held_out(trainer, state) -> dict
    of observables that were not trained on, from the stored trajectory (``evaluate``);
    held_out_plots(out_dir, held_out) writes the plots of that dict into the run folder.
    """
    trainer: training.Trainer
    params: object
    positions: np.ndarray
    report: Optional[Callable] = None
    held_out: Optional[Callable] = None
    held_out_plots: Optional[Callable] = None


def experiment_name(module_name):
    return module_name.replace("_", "-")


def available():
    """{name: one-line description} of every experiment package."""
    found = {}
    for info in pkgutil.iter_modules(experiments.__path__):
        if info.ispkg:
            module = importlib.import_module(f"{experiments.__name__}.{info.name}")
            found[experiment_name(info.name)] = (module.__doc__ or "").strip().splitlines()[0]
    return found


def experiment_module(name):
    """The package of experiment ``name`` (or a clear error listing the known ones)."""
    known = available()
    if name not in known:
        raise configuration.ConfigError(f"unknown experiment {name!r} (known: {', '.join(sorted(known))})")
    return importlib.import_module(f"{experiments.__name__}.{name.replace('-', '_')}")


def parse_override(text):
    """'section.field=value' -> ('section.field', value), the value read as TOML (a bare word as a string)."""
    key, sep, value = text.partition("=")
    if not sep or key.count(".") != 1 or not all(key.split(".")):
        raise configuration.ConfigError(f"override {text!r} must read section.field=value")
    try:
        return key.strip(), tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()


def resolve(experiment, config_file=None, overrides=None, preset=None):
    """(experiment name, validated configuration): the defaults, a preset, a partial file and overrides
    merged in that order.

    ``preset`` names a partial configuration ``PRESET.toml`` in the experiment's folder (``quick``).
    ``experiment`` is a name or the path of a TOML file whose top-level ``experiment`` key names
    one; such a file is the partial configuration (``config_file`` must then be None).
    """
    partial = {}
    if experiment.endswith(".toml"):
        if config_file is not None:
            raise configuration.ConfigError(f"give the configuration once: {experiment} or --config {config_file}")
        partial, config_file = configuration.read_toml(experiment), experiment
        name = partial.pop("experiment", None)
        if not isinstance(name, str):
            raise configuration.ConfigError(f"{experiment}: needs a top-level key experiment = \"NAME\"")
        experiment = name
    elif config_file is not None:
        partial = configuration.read_toml(config_file)
        partial.pop("experiment", None)
    module = experiment_module(experiment)
    config = configuration.read_toml(module.DEFAULT_CONFIG)
    if preset is not None:
        presets = {p.stem: p for p in pathlib.Path(module.DEFAULT_CONFIG).parent.glob("*.toml")
                   if p != pathlib.Path(module.DEFAULT_CONFIG)}
        if preset not in presets:
            raise configuration.ConfigError(f"experiment {experiment} has no preset {preset!r} "
                                            f"(presets: {', '.join(sorted(presets)) or 'none'})")
        config = configuration.merge(config, configuration.read_toml(presets[preset]), str(presets[preset]))
    own = {section: partial.pop(section) for section in RUNNER_SECTIONS if section in partial}
    config = configuration.merge(config, partial, str(config_file))
    for key, value in (overrides or {}).items():
        section, field = key.split(".")
        if section in RUNNER_SECTIONS:
            own.setdefault(section, {})[field] = value
        else:
            config = configuration.merge(config, _nested(key, value), f"override {key}")
    return experiment, checked({**config, **own}, module, str(config_file or module.DEFAULT_CONFIG))


def checked(config, module, source):
    """``config`` validated: the experiment's sections against its schema, then its cross-field and
    resource checks; the runner's sections (defaults where missing) and every state point's
    configuration the same way."""
    own = {section: config[section] for section in RUNNER_SECTIONS if section in config}
    config = _checked_experiment({k: v for k, v in config.items() if k not in RUNNER_SECTIONS}, module, source)
    points = own.get("state_points", {})
    if not isinstance(points, dict) or not all(isinstance(p, dict) for p in points.values()):
        raise configuration.ConfigError(f"{source}: [state_points] must hold tables [state_points.NAME]")
    for name, partial in points.items():
        shared = sorted(set(partial) & set(SHARED_SECTIONS + RUNNER_SECTIONS))
        if shared:
            raise configuration.ConfigError(f"{source}: state point {name!r} may not change [{shared[0]}] (the "
                                            f"points share {', '.join(SHARED_SECTIONS)} and the runner's sections)")
        _checked_experiment(configuration.merge(config, partial, f"{source} [state_points.{name}]"), module,
                            f"{source} [state_points.{name}]")
    return {**config, "executor": executors.checked_section(own.get("executor", {}), source),
            "state_points": points}


def _checked_experiment(config, module, source):
    config = configuration.validate(config, module.SCHEMA, source)
    check_resources = getattr(module, "check_resources", None)
    if check_resources is not None:
        resources.check(config, check_resources(config, source), source)
    return config


def point_configs(config):
    """{state point name: its experiment configuration}; one point named "" without [state_points]."""
    base = {k: v for k, v in config.items() if k not in RUNNER_SECTIONS}
    if not config["state_points"]:
        return {"": base}
    return {name: configuration.merge(base, partial, f"[state_points.{name}]")
            for name, partial in config["state_points"].items()}


def runner_sampling(sampling, section):
    """The trainer's SamplingConfig with what the runner owns in every experiment's [sampling]: replicas, and
    a Monte Carlo barostat at ``pressure`` (kJ mol^-1 nm^-3, or the experiment's reduced unit) every
    ``barostat_interval`` steps when that is above 0."""
    barostat = (md.MonteCarloBarostat(section["pressure"], section["barostat_interval"])
                if section["barostat_interval"] > 0 else None)
    return dataclasses.replace(sampling, replicas=section["replicas"], barostat=barostat)


def _build(module, config):
    """(trainer, params, {point: Experiment}) of a checked configuration: one Trainer, or a
    StatePointsTrainer over the state points; each point's replicas as configured."""
    built, configs = {}, point_configs(config)
    for name, point_config in configs.items():
        built[name] = module.build(point_config)
        built[name].trainer.sampling = runner_sampling(built[name].trainer.sampling, point_config["sampling"])
    executor = executors.executor_from_config(config["executor"])
    first = next(iter(built.values()))
    if not config["state_points"]:
        first.trainer.executor = executor
        return first.trainer, first.params, built
    trainer = points_training.StatePointsTrainer(
        [points_training.StatePoint(name, b.trainer, b.positions, configs[name]["system"]["seed"])
         for name, b in built.items()], executor)
    return trainer, first.params, built


def _nested(dotted, value):
    section, field = dotted.split(".")
    return {section: {field: value}}


def prepare_folder(out_dir, resume, overwrite):
    """Check the run folder against the overwrite/resume rules; returns its Path."""
    out_dir = pathlib.Path(out_dir)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"{out_dir} exists and is not a folder")
    present = [name for name in RESULT_FILES if (out_dir / name).exists()]
    if resume:
        if not (out_dir / CHECKPOINT_NAME).exists() or not (out_dir / CONFIG_NAME).exists():
            raise RunFolderError(f"{out_dir}: nothing to resume (no {CHECKPOINT_NAME} and {CONFIG_NAME} there)")
    elif present and not overwrite:
        raise RunFolderError(f"{out_dir} holds a run ({', '.join(present)}); resume it with --resume, or replace it "
                             f"with --overwrite")
    elif overwrite:
        for name in present:
            (out_dir / name).unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def run(experiment, out_dir, config_file=None, overrides=None, resume=False, overwrite=False, progress=True,
        write_trajectory=False, preset=None):
    """Train experiment ``experiment`` (a name or a TOML file) into ``out_dir``; returns the summary dict."""
    out_dir = prepare_folder(out_dir, resume, overwrite)
    if resume:
        saved = json.loads((out_dir / CONFIG_NAME).read_text())
        changed = sorted(set(overrides or {}) - {"training.n_updates"})
        if config_file is not None or experiment.endswith(".toml") or changed or preset is not None:
            raise RunFolderError(f"{out_dir}: a resumed run keeps its saved configuration; only training.n_updates "
                                 f"may change (got {', '.join(changed) or 'a configuration file'})")
        if saved["experiment"] != experiment:
            raise RunFolderError(f"{out_dir} holds a {saved['experiment']} run, not {experiment}")
        module = experiment_module(saved["experiment"])
        saved_config = _saved_config(saved["config"])
        config = checked(configuration.merge(saved_config, _nested(
            "training.n_updates", (overrides or {}).get("training.n_updates", saved_config["training"]["n_updates"])
        ), "override training.n_updates"), module, str(out_dir / CONFIG_NAME))
        name = saved["experiment"]
    else:
        name, config = resolve(experiment, config_file, overrides, preset)
        module = experiment_module(name)
    n_updates = config["training"]["n_updates"]
    trainer, params, built = _build(module, config)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    try:
        if resume:
            state = trainer.load(checkpoint_path, params)
            if state.update >= n_updates and (out_dir / "summary.json").exists():
                return json.loads((out_dir / "summary.json").read_text())
        _write_json(out_dir / CONFIG_NAME, {"experiment": name, "config": config})
        if not resume:
            start = time.perf_counter()
            state = _first_trajectory(trainer, params, built, config, module)
            state.wall_time_s = time.perf_counter() - start
        state = training.train(trainer, state, n_updates, out_dir, checkpoint_name=CHECKPOINT_NAME,
                               progress=progress)
    finally:
        trainer.executor.close()
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {"experiment": name, "n_updates": len(metrics),
               "initial_loss": metrics[0]["loss"] if metrics else None,
               "final_loss": metrics[-1]["loss"] if metrics else None,
               "n_resampled": sum(m["resampled"] for m in metrics),
               "n_reused": sum(not m["resampled"] for m in metrics),
               **_mean_update_times(metrics)}
    for point, experiment_built in built.items():
        if experiment_built.report is None:
            continue
        if not point:
            summary.update(experiment_built.report(trainer, state, metrics, out_dir))
            continue
        point_dir = out_dir / point
        point_dir.mkdir(exist_ok=True)
        report = experiment_built.report(trainer.points[point].trainer, state.points[point],
                                         points_training.point_metrics(metrics, point), point_dir)
        summary.update({f"{point}/{key}": value for key, value in report.items()})
    summary["training_wall_time_s"] = state.wall_time_s
    if write_trajectory:
        from difftre.io import write_trajectory as write
        write(out_dir / "trajectory.extxyz", trainer.stored_trajectory(state))
    _require_finite_summary(summary, out_dir)
    _write_json(out_dir / "summary.json", summary)
    return summary


def evaluate(out_dir, time_ps, progress=True):
    """Validate a trained run: a new trajectory of ``time_ps`` (ps) with the learned parameters (the run's
    sampling settings, continuing its last state), every target's prediction with its standard error
    against its target, and the experiment's held-out observables (``Experiment.held_out``). Writes and
    returns ``evaluation.json`` in the run folder."""
    out_dir = pathlib.Path(out_dir)
    if not (out_dir / CHECKPOINT_NAME).exists() or not (out_dir / CONFIG_NAME).exists():
        raise RunFolderError(f"{out_dir}: no trained run to evaluate (no {CHECKPOINT_NAME} and {CONFIG_NAME})")
    if not (np.isfinite(time_ps) and time_ps > 0):
        raise configuration.ConfigError(f"evaluation time must be finite and positive, got {time_ps} ps")
    saved = json.loads((out_dir / CONFIG_NAME).read_text())
    module = experiment_module(saved["experiment"])
    config = checked(_saved_config(saved["config"]), module, str(out_dir / CONFIG_NAME))
    trainer, params, built = _build(module, config)
    try:
        state = trainer.load(out_dir / CHECKPOINT_NAME, params)
        evaluation = {"experiment": saved["experiment"], "updates_trained": state.update, "time_ps": time_ps}
        if not config["state_points"]:
            evaluation.update(_evaluate_point(trainer, state, built[""], time_ps, out_dir))
        else:
            evaluation["state_points"] = {name: _evaluate_point(trainer.points[name].trainer, state.points[name],
                                                                built[name], time_ps, out_dir / name)
                                          for name in built}
    finally:
        trainer.executor.close()
    _write_json(out_dir / "evaluation.json", evaluation)
    return evaluation


def _evaluate_point(trainer, state, built, time_ps, out_dir):
    """One state point's evaluation: a new trajectory of time_ps (ps; all replicas together) at state.params,
    its targets' predictions with standard errors, and the experiment's held-out observables (their plots
    in out_dir)."""
    sampling = trainer.sampling
    n_frames = max(2, int(round(time_ps / (sampling.integrator.dt * sampling.stride * sampling.replicas))))
    trainer.sampling = dataclasses.replace(sampling, n_frames=n_frames)
    start = time.perf_counter()
    trainer._sample(state, state.params)
    evaluation = {"n_states": n_frames * sampling.replicas, "sampling_time_s": time.perf_counter() - start,
                  "targets": {}}
    predictions = trainer.predictions_with_errors(state)
    for target in trainer.targets:
        value, error = predictions[target.name]
        evaluation["targets"][target.name] = {
            "prediction": np.asarray(value).tolist(), "standard_error": np.asarray(error).tolist(),
            "mse": float(np.mean((np.asarray(value) - np.asarray(target.target)) ** 2))}
    if built.held_out is not None:
        evaluation["held_out"] = built.held_out(trainer, state)
        if built.held_out_plots is not None:
            out_dir.mkdir(exist_ok=True)
            built.held_out_plots(out_dir, evaluation["held_out"])
    return evaluation


def _saved_config(config):
    """A run folder's saved configuration, completed for runs saved before a field existed whose absence
    meant one value: sampling.replicas (1), no barostat, and the runner's sections (their defaults)."""
    config = {section: dict(fields) for section, fields in config.items()}
    for field, value in (("replicas", 1), ("barostat_interval", 0), ("pressure", 0.0)):
        config["sampling"].setdefault(field, value)
    return config


def _first_trajectory(trainer, params, built, config, module):
    """``trainer.init`` at the initial parameters; a blow-up there names the configuration's likely causes."""
    try:
        if config["state_points"]:
            return trainer.init(params)
        return trainer.init(params, built[""].positions, seed=config["system"]["seed"])
    except md.SimulationError as error:
        suspects = getattr(module, "BLOW_UP_SUSPECTS", {})
        values = ", ".join(f"{field} = {_field(config, field)!r} ({what})" for field, what in suspects.items())
        hint = f"; likely causes: {values}" if values else ""
        raise md.SimulationError(f"the first trajectory (initial parameters) failed: {error}{hint}",
                                 error.step, error.particle) from error


def _field(config, dotted):
    section, name = dotted.split(".")
    return config[section][name]


def _require_finite_summary(summary, out_dir):
    """FloatingPointError naming the first summary number that is not finite (nothing is written then)."""
    for key, value in summary.items():
        numbers = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, float)]
        if not all(np.isfinite(numbers)):
            raise FloatingPointError(f"{out_dir}: summary value {key} = {value} is not finite; the checkpoint of "
                                     f"the last update is usable")


def _mean_update_times(metrics):
    """Mean wall time of updates with and without re-sampling (s), None where there were none."""
    times = {}
    for key, resampled in (("mean_update_time_resampled_s", True), ("mean_update_time_reused_s", False)):
        chosen = [m["wall_time_s"] for m in metrics if m["resampled"] == resampled]
        times[key] = float(np.mean(chosen)) if chosen else None
    return times


def _write_json(path, payload):
    """Write JSON atomically (temporary file renamed over the destination)."""
    temporary = pathlib.Path(f"{path}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)
