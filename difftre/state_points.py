"""Several state points in one training: one potential, one optimiser, a reference trajectory each.

Users fit one potential to data at several temperatures, pressures or densities. Each state point is
a `difftre.trainer.Trainer` of its own (its targets, loss weights, kT, box, sampling settings and
replicas) sharing the potential's parameters; this module runs them as one training:

  1. N_eff of every point at the current parameters; the points below their threshold re-sample,
     all of their replicas' jobs in one call of the executor (in this process or on a Dask
     cluster, ``difftre.executor``), so the points sample at the same time;
  2. loss = sum over points of each point's loss (sum_k gamma_k mean((<O_k> - target_k)^2)), its
     gradient the sum of the points' reweighting gradients;
  3. one optimiser step (the first point's optimiser; the points are built from one configuration,
     so they all have the same), metrics per point (names "POINT/TARGET"), checkpoint.

A blow-up while re-sampling rolls the parameters back halfway to the last ones with which every
point sampled well, halves the step and retries (as `Trainer` does for one point).
"""
import dataclasses
import time

import jax
import numpy as np

from difftre import checkpoint
from difftre.executor import InProcessExecutor
from difftre.trainer import TrainingState, non_finite_leaves, sample_or_roll_back


@dataclasses.dataclass(frozen=True)
class StatePoint:
    """name: a label ("cold", "300K"; used in metric names and output folders); trainer: the point's
    Trainer; positions: its initial configuration (N, dim) nm; seed: its first replica's random seed."""
    name: str
    trainer: object
    positions: np.ndarray
    seed: int


@dataclasses.dataclass
class StatePointsState:
    """The shared parameters and optimiser state, and each point's TrainingState (its reference
    trajectory and sampler states; its ``params`` kept equal to the shared ones)."""
    params: object
    opt_state: object
    points: dict
    last_sampled_params: object      # the last parameters with which every re-sampled point sampled well
    update: int = 0
    step_scale: float = 1.0
    wall_time_s: float = 0.0
    notes: dict = dataclasses.field(default_factory=dict)


class StatePointsTrainer:
    """DiffTRe over several state points (see the module docstring); ``update``, ``save``, ``load``,
    ``converged`` as `difftre.trainer.Trainer`'s, so ``difftre.trainer.train`` runs it."""

    def __init__(self, points, executor=None, max_blow_up_retries=4):
        points = list(points)
        names = [p.name for p in points]
        if not points or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"state points need distinct, non-empty names, got {names}")
        bad = [p.name for p in points if "/" in p.name]
        if bad:
            raise ValueError(f"state point name {bad[0]!r} must not contain '/'")
        self.points = {p.name: p for p in points}
        self.executor = InProcessExecutor() if executor is None else executor
        for p in points:
            p.trainer.executor = self.executor
        self.lead = points[0].trainer      # its optimiser steps the shared parameters
        self.optimizer = self.lead.optimizer
        self.max_blow_up_retries = max_blow_up_retries

    # ------------------------------------------------------------------ state

    def init(self, params):
        """The training state with every point's first reference trajectory at `params` (sampled together)."""
        points = {name: p.trainer.initial_state(params, p.positions, p.seed) for name, p in self.points.items()}
        state = StatePointsState(params, self.optimizer.init(params), points, params)
        self._sample(state, list(points), params)
        for name, p in self.points.items():
            p.trainer.warm_up(points[name])
        return state

    def _sample(self, state, names, params):
        """New reference trajectories at params for the points `names`: the CPU points' replica jobs in one
        executor call, CUDA points on their device (md.SimulationError leaves `state` untouched)."""
        cpu = [n for n in names if self.points[n].trainer.sampling.device == "cpu"]
        jobs = {n: self.points[n].trainer.sampling_jobs(state.points[n], params) for n in cpu}
        results = self.executor.map([job for n in cpu for job in jobs[n]])
        for n in names:
            if n not in cpu:
                self.points[n].trainer._sample(state.points[n], params)
        start = 0
        for n in cpu:
            self.points[n].trainer.accept_samples(state.points[n], params, results[start:start + len(jobs[n])])
            start += len(jobs[n])

    # ------------------------------------------------------------------ update

    def update(self, state):
        """One update over all points in place; returns the metrics dict (totals and per point)."""
        start = time.perf_counter()
        n_eff = {name: float(p.trainer._n_eff(state.params, p.trainer._model_inputs,
                                             state.points[name].reference_energies))
                 for name, p in self.points.items()}
        resample = [name for name, p in self.points.items() if state.update > 0 and
                    n_eff[name] < p.trainer.resample_threshold * p.trainer.sampling.n_states]
        if resample:
            self._resample_or_roll_back(state, resample)
        sampling_time = time.perf_counter() - start
        gradient_start = time.perf_counter()
        loss, grads, per_point = 0.0, None, {}
        for name, p in self.points.items():
            t, point = p.trainer, state.points[name]
            (point_loss, (parts, predictions, n_eff_after)), point_grads = t._value_and_grad(
                state.params, t._model_inputs, point.reference_energies, t._target_inputs)
            per_point[name] = (float(point_loss), parts, predictions, float(n_eff_after))
            loss += float(point_loss)
            grads = point_grads if grads is None else jax.tree.map(lambda a, b: a + b, grads, point_grads)
            for what, values in (("loss", point_loss), ("loss parts", parts), ("predictions", predictions),
                                 ("N_eff", (n_eff[name], n_eff_after)), ("gradient", point_grads)):
                bad = non_finite_leaves(values)
                if bad:
                    raise FloatingPointError(f"update {state.update}, state point {name}: non-finite {what} "
                                             f"(leaves {bad}); parameters left unchanged, the last checkpoint "
                                             f"is usable")
        predictions = {f"{name}/{k}": v for name, (_, _, pred, _) in per_point.items() for k, v in pred.items()}
        state.params, state.opt_state = self.lead._finite_step(state, grads, predictions)
        for point in state.points.values():
            point.params, point.opt_state, point.update = state.params, state.opt_state, state.update + 1
        end = time.perf_counter()
        metrics = {"step": state.update, "loss": loss,
                   "loss_parts": {f"{name}/{k}": float(v) for name, (_, parts, _, _) in per_point.items()
                                  for k, v in parts.items()},
                   "n_eff": min(n for (_, _, _, n) in per_point.values()), "n_eff_before": min(n_eff.values()),
                   "resampled": bool(resample), "wall_time_s": end - start, "sampling_time_s": sampling_time,
                   "reweighting_time_s": end - gradient_start, "step_scale": state.step_scale,
                   "predictions": {k: np.asarray(v).tolist() for k, v in predictions.items()},
                   "points": {name: {"loss": point_loss, "n_eff": n_after, "n_eff_before": n_eff[name],
                                     "resampled": name in resample}
                              for name, (point_loss, _, _, n_after) in per_point.items()}}
        state.update += 1
        return metrics

    def _resample_or_roll_back(self, state, names):
        sample_or_roll_back(state, lambda params: self._sample(state, names, params), state.last_sampled_params,
                            self.max_blow_up_retries)
        state.last_sampled_params = state.params

    def converged(self, state):
        """Never before the last update (gradient descent)."""
        return False

    def predictions_with_errors(self, state):
        """{"POINT/TARGET": (prediction, standard error)} at the shared parameters (see
        `Trainer.predictions_with_errors`)."""
        return {f"{name}/{k}": value for name, p in self.points.items()
                for k, value in p.trainer.predictions_with_errors(state.points[name]).items()}

    # ------------------------------------------------------------------ persistence

    def save(self, state, path):
        trees, arrays, meta = {"last_sampled_params": state.last_sampled_params}, {}, {}
        for name, p in self.points.items():
            point_trees, point_arrays, point_meta = p.trainer.checkpoint_parts(state.points[name], prefix=f"{name}/")
            trees.update(point_trees)
            arrays.update(point_arrays)
            meta.update(point_meta)
        trees.update(params=state.params, opt_state=state.opt_state)
        meta.update(update=state.update, step_scale=state.step_scale, wall_time_s=state.wall_time_s,
                    notes=state.notes, state_points=list(self.points))
        checkpoint.save(path, trees, arrays, meta)

    def load(self, path, params_template):
        """The state saved by ``save``; the points must be those of the checkpoint, by name."""
        templates = {"params": params_template, "opt_state": self.optimizer.init(params_template),
                     "last_sampled_params": params_template,
                     **{f"{name}/sampling_params": params_template for name in self.points}}
        trees, arrays, meta = checkpoint.load(path, templates)
        if meta.get("state_points") != list(self.points):
            raise ValueError(f"checkpoint {path} holds state points {meta.get('state_points')}, the configuration "
                             f"{list(self.points)}")
        points = {}
        for name, p in self.points.items():
            points[name] = TrainingState(trees["params"], trees["opt_state"], None, None, None, None, meta["update"],
                                         meta["step_scale"], meta["wall_time_s"], meta["notes"])
            p.trainer.restore_trajectory(points[name], trees[f"{name}/sampling_params"], arrays, meta,
                                         prefix=f"{name}/")
            p.trainer.warm_up(points[name])
        return StatePointsState(trees["params"], trees["opt_state"], points, trees["last_sampled_params"],
                                meta["update"], meta["step_scale"], meta["wall_time_s"], meta["notes"])


def point_metrics(metrics, name):
    """The metrics rows of one point, in the single-point layout (for its experiment's plots)."""
    rows = []
    for row in metrics:
        prefix = f"{name}/"
        point = row["points"][name]
        rows.append({**row, "loss": point["loss"], "n_eff": point["n_eff"], "n_eff_before": point["n_eff_before"],
                     "resampled": point["resampled"],
                     "loss_parts": {k[len(prefix):]: v for k, v in row["loss_parts"].items() if k.startswith(prefix)},
                     "predictions": {k[len(prefix):]: v for k, v in row["predictions"].items()
                                     if k.startswith(prefix)}})
    return rows
