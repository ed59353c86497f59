"""The DiffTRe training loop.

One update (Thaler & Zavadlav 2021, and docs in ../shared paper-setup section 1):
  1. weights of the stored reference states at the current parameters, N_eff;
  2. if N_eff < threshold * N (never at the first update): sample a new reference
     trajectory with the current parameters, continuing from the last state, and
     recompute the reference energies with the same JAX energy code;
  3. loss = sum_k gamma_k mean((<O_k>_theta - target_k)^2) with reweighted averages;
     its gradient by reverse-mode AD through the weights and the observables
     (nothing of the MD is differentiated);
What does not depend on the parameters is computed once per reference trajectory
(``difftre.states``): the states with their neighbour lists, the per-state values
of fixed observables (RDF, ADF, density), and a model's per-state features where
the model splits its energy into features and a cheap function of parameters and
features (the linear spline model: reweighting is then a dot product per state).
  4. optimiser step, log, checkpoint.

A trajectory that blows up while sampling with new parameters is not kept: the
parameters roll back to the last ones that sampled well, the update step is
halved, and the update is retried (a few times, then the run stops with a clear
message; the last checkpoint stays usable). An optimiser step that makes the parameters
non-finite is retried the same way (FloatingPointError once the retries are spent); a
non-finite loss, prediction, N_eff or gradient stops the run at once (FloatingPointError), so
no non-finite number reaches the metrics or the checkpoint.
"""
import dataclasses
import json
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from difftre import checkpoint, md
from difftre.executor import InProcessExecutor, SamplingJob, pool_trajectories, replica_states
from difftre.observables.averages import weighted_average
from difftre.reweighting import effective_sample_size, map_states, reweighting_weights
from difftre.states import neighbor_capacity, stored_states


def _identity(averages):
    return averages


@dataclasses.dataclass(frozen=True)
class Target:
    """A reweighted observable, its target value and loss weight gamma.

    Per stored state S_i, ``features(S_i)`` is computed once per reference trajectory
    (parameter-independent; on states with a neighbour list for ``cutoff`` nm, or none
    when 0) and ``observable(params, f_i)`` inside the differentiated loss. The
    prediction is ``combine(sum_i w_i observable(params, f_i))`` (``combine`` turns
    several averages into one prediction, e.g. the stiffness fluctuation formula).

    - fixed observables (density, RDF, ADF): ``features`` only; the prediction is
      sum_i w_i features(S_i) and only the weights carry the parameters;
    - parameter-dependent ones (pressure, stress): ``observable(params, state)`` on the
      stored states (with the potential's neighbour list), ``features`` None;
    - both, for models with a linear form (pressure from per-state virial features).

    ``trajectory_features`` (optional): the compiled twin of ``features`` for a whole trajectory,
    (frames (S, N, dim) nm, box (dim,) nm, velocities or None) -> features stacked on axis 0; the
    trainer uses it instead of ``features`` (tests hold the two equal).
    """
    name: str
    target: np.ndarray
    gamma: float = 1.0
    observable: Optional[Callable] = None
    features: Optional[Callable] = None
    cutoff: float = 0.0
    combine: Callable = _identity
    trajectory_features: Optional[Callable] = None

    def __post_init__(self):
        if self.observable is None and self.features is None:
            raise ValueError(f"target {self.name!r} needs an observable, per-state features or both")
        if self.trajectory_features is not None and self.features is None:
            raise ValueError(f"target {self.name!r}: trajectory_features is the compiled twin of features: give both")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Reference trajectories: n_equilibration steps, then n_frames states every stride steps, in each of
    ``replicas`` independent copies (own seeds and random streams; their states are pooled, replica by
    replica, so a reference trajectory holds replicas * n_frames states).

    device "cpu": the Numba sampler (difftre.md), the replicas run as jobs of the trainer's executor
    (``difftre.executor``: in this process, or on a Dask cluster); "cuda": the CUDA sampler
    (difftre.md_cuda; the replicas batched in one launch; JAX forces run host-stepped), continuing the
    same states and random streams, so a trajectory equals the CPU one up to rounding.
    barostat: a ``md.MonteCarloBarostat`` samples the isothermal-isobaric ensemble; every stored state then
    carries its own box.
    """
    integrator: object
    n_equilibration: int
    n_frames: int
    stride: int
    skin: float = 0.0
    dtype: type = np.float64
    device: str = "cpu"
    record_velocities: bool = False
    replicas: int = 1
    barostat: object = None

    def __post_init__(self):
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"sampling device must be 'cpu' or 'cuda', got {self.device!r}")
        if isinstance(self.replicas, bool) or int(self.replicas) != self.replicas or self.replicas < 1:
            raise ValueError(f"sampling replicas must be a positive integer, got {self.replicas!r}")

    @property
    def n_states(self):
        """Stored states per reference trajectory (all replicas)."""
        return self.n_frames * self.replicas


@dataclasses.dataclass
class TrainingState:
    params: object
    opt_state: object
    sampler_states: list             # md.MDState of each replica, continued by the next trajectory
    sampling_params: object          # theta-hat of the reference trajectory
    states: object                   # reference trajectory: models.state.State stack (n_frames, ...)
    reference_energies: np.ndarray   # U_theta-hat of each stored state (JAX code path)
    update: int = 0
    step_scale: float = 1.0          # halved after each blow-up
    wall_time_s: float = 0.0         # training time so far, over all resumed runs
    notes: dict = dataclasses.field(default_factory=dict)   # JSON-able bookkeeping of a trainer's update rule

    @property
    def sampler_state(self):
        """The first replica's sampler state (the only one without replicas)."""
        return self.sampler_states[0]


_MD_ARRAYS = ("positions", "velocities", "masses", "box", "thermostat", "nbr_idx", "nbr_count",
              "reference_positions")    # md.MDState's arrays and (below) plain values, as checkpointed
_MD_META = ("seed", "step", "dof")


class BlowUpError(RuntimeError):
    """Sampling kept blowing up after the allowed retries."""


def non_finite_leaves(tree):
    """Indices of the leaves of ``tree`` holding a value that is not finite (a number is one leaf)."""
    return [k for k, leaf in enumerate(jax.tree.leaves(tree)) if not np.all(np.isfinite(np.asarray(leaf)))]


class Trainer:
    """DiffTRe trainer: samples with ``potential.force_field(params)`` in the Numba sampler (exported
    spline tables, or JAX forces through ``difftre.bridge``), reweights with ``potential.energy``."""

    def __init__(self, potential, targets, optimizer, sampling, box, masses, kT, chunk_size=None,
                 resample_threshold=0.9, max_blow_up_retries=4, executor=None):
        """box: (dim,) nm, the box of the first state (and of every state without a barostat); executor: runs
        the CPU sampling jobs (``difftre.executor``; None: in this process)."""
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
        self.executor = InProcessExecutor() if executor is None else executor
        energy = potential.energy if potential.features is None else potential.energy_from_features

        def energies(params, model_inputs):
            return map_states(lambda f: energy(params, f), model_inputs, chunk_size)

        def loss(params, model_inputs, reference_energies, target_inputs):
            weights = reweighting_weights(energies(params, model_inputs), reference_energies, self.kT)
            parts, predictions = {}, {}
            for t in self.targets:
                inputs = target_inputs[t.name]
                if t.observable is None:
                    averages = jax.tree.map(lambda v: jnp.tensordot(weights, v, axes=1), inputs)
                else:
                    averages = weighted_average(lambda f, t=t: t.observable(params, f), inputs, weights, chunk_size)
                predictions[t.name] = t.combine(averages)
                parts[t.name] = t.gamma * jnp.mean((predictions[t.name] - t.target) ** 2)
            return sum(parts.values()), (parts, predictions, effective_sample_size(weights))

        def optimizer_step(grads, opt_state, params, step_scale):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, jax.tree.map(lambda u: u * step_scale, updates)), opt_state

        self._optimizer_step = jax.jit(optimizer_step)
        self._per_state = {t.name: jax.jit(jax.vmap(t.features)) for t in self.targets if t.features is not None}
        self._capacities = {}   # neighbour capacity of each per-state feature function, grown as needed
        if potential.features is not None:
            self._per_state[None] = jax.jit(jax.vmap(potential.features))
        self._energies = jax.jit(energies)
        self._n_eff = jax.jit(lambda p, x, e: effective_sample_size(reweighting_weights(energies(p, x), e, self.kT)))
        self._value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))

    # ------------------------------------------------------------------ state

    def init(self, params, positions, seed):
        """Training state with an initial reference trajectory sampled at `params`; replica r starts from
        `positions` with Maxwell-Boltzmann velocities and random stream seed + r."""
        state = self.initial_state(params, positions, seed)
        self._sample(state, params)
        self.warm_up(state)
        return state

    def initial_state(self, params, positions, seed):
        """The training state before its first trajectory (no stored states yet)."""
        sampler_states = replica_states(self._sampler(params), positions, self.box, self.masses, seed,
                                        self.sampling.replicas)
        return TrainingState(params, self.optimizer.init(params), sampler_states, params, None, None)

    def warm_up(self, state):
        """Compile the JAX functions now, so per-update wall times do not include compilation."""
        jax.block_until_ready(self._n_eff(state.params, self._model_inputs, state.reference_energies))
        jax.block_until_ready(self._optimizer_step(jax.tree.map(jnp.zeros_like, state.params), state.opt_state,
                                                   state.params, state.step_scale))
        jax.block_until_ready(self._value_and_grad(state.params, self._model_inputs, state.reference_energies,
                                                   self._target_inputs))

    def _precompute(self, states):
        """Everything per trajectory that does not depend on the parameters: the model's inputs (its
        features, or the states themselves) and each target's per-state features. The compiled
        ``trajectory_features`` take one box: states with different boxes (NPT) use ``features``."""
        positions, boxes = np.asarray(states.positions), np.asarray(states.box)
        one_box = bool(np.all(boxes == boxes[0]))
        velocities = None if states.velocities is None else np.asarray(states.velocities)

        def per_trajectory(owner, key, cutoff):
            if owner.trajectory_features is not None and one_box:
                return jax.tree.map(lambda x: jnp.asarray(x, positions.dtype),
                                    owner.trajectory_features(positions, boxes[0], velocities))
            return per_state(key, cutoff)

        def per_state(key, cutoff):
            chunk = len(positions) if self.chunk_size is None else self.chunk_size
            capacity = self._kept_capacity(key, positions, cutoff, boxes)
            parts = [self._per_state[key](stored_states(positions[a:a + chunk], boxes[a:a + chunk], cutoff,
                                                        None if velocities is None else velocities[a:a + chunk],
                                                        capacity))
                     for a in range(0, len(positions), chunk)]
            return jax.tree.map(lambda *p: jnp.concatenate(p), *parts)

        potential = self.potential
        self._model_inputs = states if potential.features is None else per_trajectory(potential, None,
                                                                                       potential.cutoff)
        self._target_inputs = {t.name: states if t.features is None else per_trajectory(t, t.name, t.cutoff)
                               for t in self.targets}

    def _sampler(self, params):
        s = self.sampling
        return md.Sampler(self.potential.force_field(params), s.integrator, skin=s.skin, dtype=s.dtype)

    def sampling_jobs(self, state, params):
        """The CPU sampling jobs of a new reference trajectory at params: one per replica, each continuing
        its replica's sampler state (``difftre.executor.SamplingJob``)."""
        s = self.sampling
        force_field = self.potential.force_field(params)
        return [SamplingJob(force_field, s.integrator, s.skin, s.dtype, sampler_state, s.n_equilibration,
                            s.n_frames, s.stride, s.record_velocities, barostat=s.barostat)
                for sampler_state in state.sampler_states]

    def accept_samples(self, state, params, results):
        """Make the jobs' results [(md.Trajectory, md.MDState) per replica] the reference trajectory of
        params: the replicas' states pooled in replica order."""
        trajectories, sampler_states = zip(*results)
        pooled, _ = pool_trajectories(trajectories)
        state.sampler_states = list(sampler_states)
        self._store(state, params, pooled.positions, pooled.velocities if self.sampling.record_velocities else None,
                    boxes=None if self.sampling.barostat is None else pooled.box)

    def _sample(self, state, params):
        """New reference trajectory at params (raises md.SimulationError, leaving `state` untouched)."""
        s = self.sampling
        if s.device == "cuda":
            from difftre import md_cuda
            gpu = md.sampler(self.potential.force_field(params), s.integrator, device="cuda", skin=s.skin,
                             dtype=s.dtype, replicas=s.replicas, barostat=s.barostat)
            trajectory, gpu_state = gpu.run(gpu.continue_from(state.sampler_states), s.n_equilibration,
                                            s.n_frames, s.stride, record_velocities=s.record_velocities)
            cpu = self._sampler(params)
            results = [(md_cuda.replica_trajectory(trajectory, r), gpu_state.replica(r, cpu))
                       for r in range(s.replicas)]
        else:
            results = self.executor.map(self.sampling_jobs(state, params))
        self.accept_samples(state, params, results)

    def _kept_capacity(self, key, positions, cutoff, boxes):
        """The neighbour capacity for `key`'s lists at `cutoff` (None without lists): the largest count of
        these frames, or the one used before while it suffices, so that array shapes, and with them the
        jitted functions' traces, stay the same from trajectory to trajectory."""
        if not cutoff > 0:
            return None
        capacity = max(self._capacities.get(key, 0), neighbor_capacity(positions, boxes, cutoff))
        self._capacities[key] = capacity
        return capacity

    def _store(self, state, params, positions, velocities, reference_energies=None, boxes=None):
        """Make `positions` (and velocities) the reference trajectory of `params`; boxes (n_states, dim) nm
        for states with their own box (NPT), else the trainer's box."""
        positions = np.asarray(positions)
        boxes = self.box if boxes is None else np.asarray(boxes, positions.dtype)
        capacity = self._kept_capacity("stored states", positions, self.potential.cutoff, boxes)
        state.states = stored_states(positions, boxes, self.potential.cutoff, velocities, capacity)
        self._precompute(state.states)
        state.sampling_params = params
        state.reference_energies = (self._energies(params, self._model_inputs) if reference_energies is None
                                    else jnp.asarray(reference_energies))

    # ------------------------------------------------------------------ update

    def update(self, state):
        """One DiffTRe update in place; returns the metrics dict of this update."""
        start = time.perf_counter()
        n_eff = float(self._n_eff(state.params, self._model_inputs, state.reference_energies))
        resampled = state.update > 0 and n_eff < self.resample_threshold * self.sampling.n_states
        sampling_time = 0.0
        if resampled:
            self._resample_or_roll_back(state)
            sampling_time = time.perf_counter() - start
        gradient_start = time.perf_counter()
        (loss, (parts, predictions, n_eff_after)), grads = self._value_and_grad(
            state.params, self._model_inputs, state.reference_energies, self._target_inputs)
        loss = float(loss)
        for name, values in (("loss", loss), ("loss parts", parts), ("predictions", predictions),
                             ("N_eff", (n_eff, n_eff_after)), ("gradient", grads)):
            bad = non_finite_leaves(values)
            if bad:
                raise FloatingPointError(f"update {state.update}: non-finite {name} (leaves {bad}); parameters "
                                         f"left unchanged, the last checkpoint is usable")
        state.params, state.opt_state = self._finite_step(state, grads, predictions)
        end = time.perf_counter()
        metrics = {"step": state.update, "loss": loss, "loss_parts": {k: float(v) for k, v in parts.items()},
                   "n_eff": float(n_eff_after), "n_eff_before": n_eff, "resampled": bool(resampled),
                   "wall_time_s": end - start, "sampling_time_s": sampling_time,
                   "reweighting_time_s": end - gradient_start, "step_scale": state.step_scale,
                   "predictions": {k: np.asarray(v).tolist() for k, v in predictions.items()}}
        state.update += 1
        return metrics

    def _finite_step(self, state, grads, predictions):
        """``_next_params``, retried at half the step scale while it gives non-finite parameters (as a
        blow-up is); a FloatingPointError, parameters left unchanged, once the retries are spent."""
        for attempt in range(self.max_blow_up_retries + 1):
            params, opt_state = self._next_params(state, grads, predictions)
            bad = non_finite_leaves(params)
            if not bad:
                return params, opt_state
            message = f"update {state.update}: the optimiser step gave non-finite parameters (leaves {bad})"
            if attempt == self.max_blow_up_retries:
                raise FloatingPointError(message + "; parameters left unchanged, the last checkpoint is usable "
                                                   "(a smaller learning rate may help)")
            state.step_scale *= 0.5
            tqdm.write(message + f"; retrying with half the step (scale {state.step_scale:g})")

    def _next_params(self, state, grads, predictions):
        """(params, opt_state) after this update: the optimiser's step on the loss gradient."""
        return self._optimizer_step(grads, state.opt_state, state.params, state.step_scale)

    def converged(self, state):
        """Whether training should stop before its last update (never, for gradient descent)."""
        return False

    def _resample_or_roll_back(self, state):
        sample_or_roll_back(state, lambda params: self._sample(state, params), state.sampling_params,
                            self.max_blow_up_retries)

    def predictions_with_errors(self, state):
        """{target: (prediction, standard error)} at state.params over the stored states, NumPy float64.

        Block averaging over the states in trajectory order with the reweighting weights (the
        weighted ratio estimator, so the weights' spread, i.e. N_eff, enters); targets whose
        prediction combines several averages get the delete-one-block jackknife of ``combine``.
        """
        from difftre.observables.errors import block_jackknife

        weights = np.asarray(reweighting_weights(self._energies(state.params, self._model_inputs),
                                                 state.reference_energies, self.kT), np.float64)
        results = {}
        for t in self.targets:
            inputs = self._target_inputs[t.name]
            values = inputs if t.observable is None else map_states(
                lambda f, t=t: t.observable(state.params, f), inputs, self.chunk_size)
            leaves, tree = jax.tree.flatten(values)
            combine = lambda *averages, t=t, tree=tree: np.asarray(t.combine(jax.tree.unflatten(tree, averages)))
            estimate, error = block_jackknife(combine, [np.asarray(v, np.float64) for v in leaves], weights)
            results[t.name] = (estimate, error)
        return results

    def stored_trajectory(self, state):
        """The current reference trajectory as an md.Trajectory (for writing it to a file)."""
        states = state.states
        n = states.positions.shape[0]
        velocities = np.empty((0,)) if states.velocities is None else np.asarray(states.velocities)
        box = self.box if self.sampling.barostat is None else np.asarray(states.box)
        return md.Trajectory(np.asarray(states.positions), velocities, np.asarray(state.reference_energies),
                             np.zeros(n), np.zeros((n,) + 2 * states.positions.shape[-1:]), box)

    # ------------------------------------------------------------------ persistence

    def save(self, state, path):
        checkpoint.save(path, *self.checkpoint_parts(state))

    def load(self, path, params_template):
        """Training state from a checkpoint; the templates come from the same model and optimiser."""
        trees, arrays, meta = checkpoint.load(path, {"params": params_template,
                                                     "opt_state": self.optimizer.init(params_template),
                                                     "sampling_params": params_template})
        state = TrainingState(trees["params"], trees["opt_state"], None, None, None, None, meta["update"],
                              meta["step_scale"], meta.get("wall_time_s", 0.0), meta.get("notes", {}))
        self.restore_trajectory(state, trees["sampling_params"], arrays, meta)
        self.warm_up(state)
        return state

    def checkpoint_parts(self, state, prefix=""):
        """(trees, arrays, meta) of ``checkpoint.save`` for `state`; the reference trajectory and sampler
        states under names starting with `prefix` (a state point's, see difftre.state_points). Replica 0
        keeps the names of a run without replicas (md/...), replica r > 0 uses md{r}/..."""
        states = state.states
        arrays = {"positions": states.positions, "reference_energies": state.reference_energies,
                  **({} if states.velocities is None else {"velocities": states.velocities}),
                  **({} if self.sampling.barostat is None else {"boxes": states.box})}
        meta = {}
        for r, s in enumerate(state.sampler_states):
            md_name = "md" if r == 0 else f"md{r}"
            arrays.update({f"{md_name}/{name}": getattr(s, name) for name in _MD_ARRAYS})
            meta.update({f"{md_name}_{name}": getattr(s, name) for name in _MD_META})
        arrays = {prefix + name: value for name, value in arrays.items()}
        meta = {prefix + name: value for name, value in meta.items()}
        meta.update({"update": state.update, "step_scale": state.step_scale, "wall_time_s": state.wall_time_s,
                     "notes": state.notes})
        return {"params": state.params, "opt_state": state.opt_state,
                prefix + "sampling_params": state.sampling_params}, arrays, meta

    def restore_trajectory(self, state, sampling_params, arrays, meta, prefix=""):
        """Set `state`'s sampler states and reference trajectory from ``checkpoint_parts``'s arrays and meta."""
        replicas = self.sampling.replicas
        saved = 1 + sum(f"{prefix}md{r}/positions" in arrays for r in range(1, replicas + 1))
        if saved != replicas:
            raise ValueError(f"the checkpoint holds {saved} replica(s), the configuration asks for {replicas}")
        state.sampler_states = [
            md.MDState(**{name: arrays[f"{prefix}{md_name}/{name}"] for name in _MD_ARRAYS},
                       **{name: meta[f"{prefix}{md_name}_{name}"] for name in _MD_META})
            for md_name in ["md"] + [f"md{r}" for r in range(1, replicas)]]
        self._store(state, sampling_params, arrays[prefix + "positions"], arrays.get(prefix + "velocities"),
                    arrays[prefix + "reference_energies"], arrays.get(prefix + "boxes"))


def sample_or_roll_back(state, sample, last_good_params, max_retries):
    """``sample(state.params)``; after a blow-up (md.SimulationError) the parameters roll back half of the
    way to ``last_good_params`` (theta <- theta_good + (theta - theta_good) / 2), the step scale halves and
    sampling is retried, up to ``max_retries`` times (then a BlowUpError)."""
    for attempt in range(max_retries + 1):
        try:
            sample(state.params)
            return
        except md.SimulationError as error:
            message = f"update {state.update}: sampling with the new parameters failed ({error})"
            if attempt == max_retries:
                raise BlowUpError(message + "; giving up, the last checkpoint is usable") from error
            state.params = jax.tree.map(lambda new, old: old + 0.5 * (new - old), state.params, last_good_params)
            state.step_scale *= 0.5
            tqdm.write(message + f"; retrying with half the step (scale {state.step_scale:g})")


def train(trainer, state, n_updates, out_dir, checkpoint_name="checkpoint.npz", progress=True):
    """Run updates until state.update == n_updates; append metrics to out_dir/metrics.jsonl and
    checkpoint before the first update and after every update (state.wall_time_s adds the time
    spent). Returns the state."""
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    _truncate_metrics(metrics_path, state.update)
    if state.update == 0:
        trainer.save(state, os.path.join(out_dir, checkpoint_name))   # a run failing at its first update resumes
    bar = tqdm(total=n_updates, initial=state.update, disable=not progress, desc="DiffTRe", unit="update")
    with open(metrics_path, "a") as log:
        while state.update < n_updates and not trainer.converged(state):
            start = time.perf_counter()
            metrics = trainer.update(state)
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            state.wall_time_s += time.perf_counter() - start
            trainer.save(state, os.path.join(out_dir, checkpoint_name))
            bar.set_postfix(loss=f"{metrics['loss']:.3g}", n_eff=f"{metrics['n_eff_before']:.0f}",
                            resampled=metrics["resampled"])
            bar.update(1)
    bar.close()
    return state


def _truncate_metrics(path, n_updates):
    """Keep the first n_updates lines of a metrics file (resuming after the last checkpoint); the
    shortened file replaces the old one atomically, so an interrupt loses no row."""
    if not os.path.exists(path):
        return
    with open(path) as handle:
        lines = handle.readlines()[:n_updates]
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
