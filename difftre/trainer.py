"""The DiffTRe training loop.

One update (Thaler & Zavadlav 2021, and docs in ../shared paper-setup section 1):
  1. weights of the stored reference states at the current parameters, N_eff;
  2. if N_eff < threshold * N (never at the first update): sample a new reference
     trajectory with the current parameters, continuing from the last state, and
     recompute the reference energies with the same JAX energy code;
  3. loss = sum_k gamma_k mean((<O_k>_theta - target_k)^2) with reweighted averages;
     its gradient by reverse-mode AD through the weights and the observables
     (nothing of the MD is differentiated);
  4. optimiser step, log, checkpoint.

A trajectory that blows up while sampling with new parameters is not kept: the
parameters roll back to the last ones that sampled well, the update step is
halved, and the update is retried (a few times, then the run stops with a clear
message; the last checkpoint stays usable).
"""
import copy
import dataclasses
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from difftre import checkpoint, md
from difftre.observables.averages import weighted_average
from difftre.reweighting import effective_sample_size, map_states, reweighting_weights


@dataclasses.dataclass(frozen=True)
class Target:
    """An observable O(positions, box, params) -> array, its target value and loss weight gamma.

    depends_on_params=False (density, RDF, ADF): O is evaluated once per reference
    trajectory and only the weights carry the parameter dependence; True (pressure,
    stress, stiffness): O is re-evaluated inside the differentiated loss.
    """
    name: str
    observable: Callable
    target: np.ndarray
    gamma: float = 1.0
    depends_on_params: bool = False


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Reference trajectories: n_equilibration steps, then n_frames states every stride steps.

    device "cpu": the Numba sampler (difftre.md); "cuda": the CUDA sampler (difftre.md_cuda, one
    replica; JAX forces run host-stepped), continuing the same state and random stream, so a
    trajectory equals the CPU one up to rounding.
    """
    integrator: object
    n_equilibration: int
    n_frames: int
    stride: int
    skin: float = 0.0
    dtype: type = np.float64
    device: str = "cpu"

    def __post_init__(self):
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"sampling device must be 'cpu' or 'cuda', got {self.device!r}")


@dataclasses.dataclass
class TrainingState:
    params: object
    opt_state: object
    sampler_state: md.MDState
    sampling_params: object          # theta-hat of the reference trajectory
    positions: np.ndarray            # reference trajectory (n_frames, N, dim)
    reference_energies: np.ndarray   # U_theta-hat of each stored state (JAX code path)
    update: int = 0
    step_scale: float = 1.0          # halved after each blow-up


class BlowUpError(RuntimeError):
    """Sampling kept blowing up after the allowed retries."""


class Trainer:
    """DiffTRe trainer: samples with ``potential.force_field(params)`` in the Numba sampler (exported
    spline tables, or JAX forces through ``difftre.bridge``), reweights with ``potential.energy``."""

    def __init__(self, potential, targets, optimizer, sampling, box, masses, kT, chunk_size=None,
                 resample_threshold=0.9, max_blow_up_retries=4):
        if not 0 < resample_threshold <= 1:
            raise ValueError(f"resample_threshold must be in (0, 1], got {resample_threshold}")
        if potential.force_field is None:
            raise ValueError("the potential has no force_field for the sampler: give spline-type models their "
                             "exported Numba terms, neural networks difftre.bridge.jax_force_term")
        self.potential = potential
        self.targets = tuple(targets)
        self.optimizer = optimizer
        self.sampling = sampling
        self.box = np.asarray(box, sampling.dtype)
        self.masses = masses
        self.kT = float(md._positive("kT", kT))
        self.resample_threshold = resample_threshold
        self.max_blow_up_retries = max_blow_up_retries
        self.chunk_size = chunk_size
        box_jax = jnp.asarray(self.box)

        def energies(params, positions):
            return map_states(lambda x: potential.energy(params, x, box_jax), positions, chunk_size)

        def fixed_observables(positions):
            """Per-state values of the parameter-independent observables (no gradient needed)."""
            return {t.name: map_states(lambda x, t=t: t.observable(x, box_jax, None), positions, chunk_size)
                    for t in self.targets if not t.depends_on_params}

        def loss(params, positions, reference_energies, fixed_values):
            weights = reweighting_weights(energies(params, positions), reference_energies, self.kT)
            parts, predictions = {}, {}
            for t in self.targets:
                if t.depends_on_params:
                    predictions[t.name] = weighted_average(lambda x, t=t: t.observable(x, box_jax, params),
                                                           positions, weights, chunk_size)
                else:
                    predictions[t.name] = jnp.tensordot(weights, fixed_values[t.name], axes=1)
                parts[t.name] = t.gamma * jnp.mean((predictions[t.name] - t.target) ** 2)
            return sum(parts.values()), (parts, predictions, effective_sample_size(weights))

        def optimizer_step(grads, opt_state, params, step_scale):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, jax.tree.map(lambda u: u * step_scale, updates)), opt_state

        self._optimizer_step = jax.jit(optimizer_step)
        self._fixed_observables = jax.jit(fixed_observables)
        self._energies = jax.jit(energies)
        self._n_eff = jax.jit(lambda p, x, e: effective_sample_size(reweighting_weights(energies(p, x), e, self.kT)))
        self._value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))

    # ------------------------------------------------------------------ state

    def init(self, params, positions, seed):
        """Training state with an initial reference trajectory sampled at `params`."""
        sampler = self._sampler(params)
        sampler_state = sampler.init_state(positions, self.box, self.masses, seed=seed)
        state = TrainingState(params, self.optimizer.init(params), sampler_state, params, None, None)
        self._sample(state, params)
        self.warm_up(state)
        return state

    def warm_up(self, state):
        """Compile the JAX functions now, so per-update wall times do not include compilation."""
        jax.block_until_ready(self._n_eff(state.params, state.positions, state.reference_energies))
        self._fixed_values = self._fixed_observables(state.positions)
        jax.block_until_ready(self._optimizer_step(jax.tree.map(jnp.zeros_like, state.params), state.opt_state,
                                                   state.params, state.step_scale))
        jax.block_until_ready(self._value_and_grad(state.params, state.positions, state.reference_energies,
                                                   self._fixed_values))

    def _sampler(self, params):
        s = self.sampling
        return md.Sampler(self.potential.force_field(params), s.integrator, skin=s.skin, dtype=s.dtype)

    def _sample(self, state, params):
        """New reference trajectory at params (raises md.SimulationError, leaving `state` untouched)."""
        s = self.sampling
        if s.device == "cuda":
            from difftre import md_cuda
            gpu = md_cuda.CudaSampler(self.potential.force_field(params), s.integrator, skin=s.skin, dtype=s.dtype)
            trajectory, gpu_state = gpu.run(gpu.continue_from([state.sampler_state]), s.n_equilibration,
                                            s.n_frames, s.stride)
            positions, sampler_state = trajectory.positions[0], gpu_state.replica(0, self._sampler(params))
        else:
            trajectory, sampler_state = self._sampler(params).run(copy.deepcopy(state.sampler_state),
                                                                  s.n_equilibration, s.n_frames, s.stride)
            positions = trajectory.positions
        state.sampler_state = sampler_state
        state.positions = jax.device_put(positions)
        state.sampling_params = params
        state.reference_energies = self._energies(params, state.positions)
        self._fixed_values = self._fixed_observables(state.positions)

    # ------------------------------------------------------------------ update

    def update(self, state):
        """One DiffTRe update in place; returns the metrics dict of this update."""
        start = time.perf_counter()
        n_eff = float(self._n_eff(state.params, state.positions, state.reference_energies))
        resampled = state.update > 0 and n_eff < self.resample_threshold * self.sampling.n_frames
        sampling_time = 0.0
        if resampled:
            self._resample_or_roll_back(state)
            sampling_time = time.perf_counter() - start
        gradient_start = time.perf_counter()
        (loss, (parts, predictions, n_eff_after)), grads = self._value_and_grad(
            state.params, state.positions, state.reference_energies, self._fixed_values)
        loss = float(loss)
        bad = [k for k, g in enumerate(jax.tree.leaves(grads)) if not np.all(np.isfinite(np.asarray(g)))]
        if not np.isfinite(loss) or bad:
            raise FloatingPointError(f"update {state.update}: non-finite loss ({loss}) or gradient "
                                     f"(parameter leaves {bad}); parameters left unchanged")
        state.params, state.opt_state = self._optimizer_step(grads, state.opt_state, state.params, state.step_scale)
        end = time.perf_counter()
        metrics = {"step": state.update, "loss": loss, "loss_parts": {k: float(v) for k, v in parts.items()},
                   "n_eff": float(n_eff_after), "n_eff_before": n_eff, "resampled": bool(resampled),
                   "wall_time_s": end - start, "sampling_time_s": sampling_time,
                   "reweighting_time_s": end - gradient_start, "step_scale": state.step_scale,
                   "predictions": {k: np.asarray(v).tolist() for k, v in predictions.items()}}
        state.update += 1
        return metrics

    def _resample_or_roll_back(self, state):
        for attempt in range(self.max_blow_up_retries + 1):
            try:
                self._sample(state, state.params)
                return
            except md.SimulationError as error:
                message = f"update {state.update}: sampling with the new parameters failed ({error})"
                if attempt == self.max_blow_up_retries:
                    raise BlowUpError(message + "; giving up, the last checkpoint is usable") from error
                # roll back half of the last step: theta <- theta_hat + (theta - theta_hat) / 2
                state.params = jax.tree.map(lambda new, old: old + 0.5 * (new - old),
                                            state.params, state.sampling_params)
                state.step_scale *= 0.5
                tqdm.write(message + f"; retrying with half the step (scale {state.step_scale:g})")

    # ------------------------------------------------------------------ persistence

    def save(self, state, path):
        s = state.sampler_state
        checkpoint.save(
            path,
            trees={"params": state.params, "opt_state": state.opt_state, "sampling_params": state.sampling_params},
            arrays={"positions": state.positions, "reference_energies": state.reference_energies,
                    "md/positions": s.positions, "md/velocities": s.velocities, "md/masses": s.masses,
                    "md/box": s.box, "md/thermostat": s.thermostat, "md/nbr_idx": s.nbr_idx,
                    "md/nbr_count": s.nbr_count, "md/reference_positions": s.reference_positions},
            meta={"update": state.update, "step_scale": state.step_scale, "md_seed": s.seed, "md_step": s.step,
                  "md_dof": s.dof})

    def load(self, path, params_template):
        """Training state from a checkpoint; the templates come from the same model and optimiser."""
        trees, arrays, meta = checkpoint.load(path, {"params": params_template,
                                                     "opt_state": self.optimizer.init(params_template),
                                                     "sampling_params": params_template})
        sampler_state = md.MDState(arrays["md/positions"], arrays["md/velocities"], arrays["md/masses"],
                                   arrays["md/box"], arrays["md/thermostat"], meta["md_seed"], meta["md_step"],
                                   meta["md_dof"], arrays["md/nbr_idx"], arrays["md/nbr_count"],
                                   arrays["md/reference_positions"])
        state = TrainingState(trees["params"], trees["opt_state"], sampler_state, trees["sampling_params"],
                              arrays["positions"], arrays["reference_energies"], meta["update"], meta["step_scale"])
        self.warm_up(state)
        return state


def train(trainer, state, n_updates, out_dir, checkpoint_name="checkpoint.npz", progress=True):
    """Run updates until state.update == n_updates; append metrics to out_dir/metrics.jsonl and
    checkpoint after every update. Returns the state."""
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    _truncate_metrics(metrics_path, state.update)
    bar = tqdm(total=n_updates, initial=state.update, disable=not progress, desc="DiffTRe", unit="update")
    with open(metrics_path, "a") as log:
        while state.update < n_updates:
            metrics = trainer.update(state)
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            trainer.save(state, os.path.join(out_dir, checkpoint_name))
            bar.set_postfix(loss=f"{metrics['loss']:.3g}", n_eff=f"{metrics['n_eff_before']:.0f}",
                            resampled=metrics["resampled"])
            bar.update(1)
    bar.close()
    return state


def _truncate_metrics(path, n_updates):
    """Keep the first n_updates lines of a metrics file (resuming after the last checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path) as handle:
        lines = handle.readlines()[:n_updates]
    with open(path, "w") as handle:
        handle.writelines(lines)
