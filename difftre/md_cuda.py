"""GPU front end: `CudaSampler`, the CUDA twin of `difftre.md.Sampler`, for R replicas at once.

    ff = ForceField([lennard_jones(eps=1.0, sigma=1.0, cutoff=2.5)])
    sampler = CudaSampler(ff, Langevin(dt=0.005, kT=1.0, friction=1.0), skin=0.3, replicas=100)
    state = sampler.init_state(positions, box, masses=1.0, seed=0)   # positions (N, 3) or (R, N, 3)
    trajectory, state = sampler.run(state, n_equilibration=1000, n_frames=100, stride=10)
    trajectory.positions.shape == (R, n_frames, N, 3)

Same force fields (``difftre.md.ForceField``), integrators, units, checks and
state semantics as the CPU sampler, with a leading replica axis on every array.
Replica r with seed s follows the trajectory the CPU sampler gives from the
same state with seed s (the Langevin noise is the same Philox stream). The whole
MD loop of all replicas runs in one kernel launch (`difftre.kernels.cuda.engine`);
the host only intervenes to regrow a neighbour list that ran out of capacity.

A force field whose only term is a JAX model (`difftre.bridge.jax_force_term`,
e.g. a neural network plus its prior written with `difftre.models.priors`) runs
host-stepped instead: each step launches the integrator's first half, hands the
positions to JAX and its forces back through `difftre.bridge` (DLPack / CUDA
array interface, no copies on a GPU) and launches the second half. Same steps
and random stream as the CPU sampler with the same term.
"""
import dataclasses
import functools

import numpy as np

from difftre import md
from difftre.kernels import neighbors
from difftre.kernels.cuda import engine as gpu
from difftre.kernels.space import check_orthorhombic

MAX_RELAUNCHES = 32


@dataclasses.dataclass
class CudaMDState:
    """Everything R trajectories continue from (host arrays, leading replica axis, one dtype)."""
    positions: np.ndarray            # (R, N, dim) nm, unwrapped
    velocities: np.ndarray           # (R, N, dim) nm/ps
    masses: np.ndarray               # (R, N) u
    box: np.ndarray                  # (R, dim) nm
    thermostat: np.ndarray           # (R, 2 * chain_length) Nose-Hoover chain (R, 0 otherwise)
    seeds: np.ndarray                # (R,) uint64 random stream keys
    step: int                        # global step counter (random stream position), shared by the replicas
    dof: int                         # degrees of freedom of one replica
    nbr_idx: np.ndarray              # (R, N, capacity) int32, full lists (i->j and j->i)
    nbr_count: np.ndarray            # (R, N) int32
    reference_positions: np.ndarray  # (R, N, dim) positions at the last neighbour-list build
    cell_capacity: int = 0           # members per cell of the cell list (grown on demand)

    @property
    def replicas(self):
        return self.positions.shape[0]

    def replica(self, r, sampler):
        """Replica r as a state of the CPU sampler `sampler` (difftre.md.Sampler; its own neighbour list)."""
        state = sampler.init_state(self.positions[r], self.box[r], self.masses[r], int(self.seeds[r]),
                                   velocities=self.velocities[r])
        state.thermostat[...] = self.thermostat[r]
        state.step = self.step
        return state


def _jax_model(force_field):
    """(energy_fn, params) when the force field is one difftre.bridge.jax_force_term, else None."""
    if not any(term.keep_alive is not None for term in force_field.system_terms):
        return None   # only difftre.bridge terms keep something alive: no need to import JAX
    from difftre import bridge
    models = [bridge.jax_term_model(term) for term in force_field.system_terms]
    if not any(models):
        return None
    if len(force_field.system_terms) + len(force_field.pair_terms) > 1:
        raise NotImplementedError(
            "on the GPU a JAX force term must be the force field's only term: put the prior into the JAX "
            "energy (difftre.models.priors equal the Numba kernels)")
    return models[0]


def _next_power_of_two(n):
    return 1 << max(0, int(n - 1).bit_length())


def _per_replica(name, value, shape, replicas, dtype):
    """value of shape `shape` (same for all replicas) or (replicas, *shape), as a (replicas, *shape) array."""
    value = np.asarray(value, dtype=dtype)
    if value.shape == tuple(shape) or value.ndim < len(shape) + 1:
        return np.broadcast_to(value, (replicas, *shape)).copy()
    if value.shape != (replicas, *shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} or {(replicas, *shape)}, got {value.shape}")
    return value.copy()


class CudaSampler:
    """Runs R replicas of one force field with one integrator on the GPU, all in compiled code.

    mode: "replicas" (one thread block per replica), "grid" (one system over a
    cooperative grid of blocks, for large N; replicas must be 1) or "auto"
    (grid for a single system of >= 8192 particles). threads: per block, a
    power of two (default: 256, fewer for small systems).
    """

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, replicas=1,
                 max_step_displacement=None, threads=None, mode="auto"):
        self.force_field = force_field
        self.integrator = integrator
        self.dtype = md.check_dtype(dtype)
        if force_field.cutoff > 0 and not skin > 0:
            raise ValueError(f"a force field with neighbour lists needs skin > 0 (nm), got {skin}")
        if int(replicas) != replicas or replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas}")
        if mode not in ("auto", "replicas", "grid"):
            raise ValueError(f"mode must be 'auto', 'replicas' or 'grid', got {mode!r}")
        if mode == "grid" and replicas != 1:
            raise ValueError("mode 'grid' runs one system; use mode 'replicas' for several")
        if threads is not None and (threads < 1 or threads & (threads - 1)):
            raise ValueError(f"threads must be a power of two, got {threads}")
        first, second, _ = integrator.kernel(1, self.dtype)
        if (first, second) not in gpu.INTEGRATORS:
            raise NotImplementedError(f"no CUDA version of integrator {type(integrator).__name__}")
        self.integrator_kind = gpu.INTEGRATORS[(first, second)]
        self.jax_model = _jax_model(force_field)
        if self.jax_model is not None and mode == "grid":
            raise ValueError("a force field with JAX forces runs host-stepped, one block per replica: "
                             "use mode 'replicas' or 'auto'")
        for term in force_field.system_terms if self.jax_model is None else ():   # fail early on a term
            gpu.system_term_kind(term.function, getattr(term, "per_particle", False))  # the GPU cannot run
        self.skin = float(skin)
        self.replicas = int(replicas)
        self.max_step_displacement = max_step_displacement
        self.threads = threads
        self.mode = mode
        self.relaunches = 0   # regrowth relaunches of the last kernel run (diagnostics)

    @property
    def list_cutoff(self):
        return self.force_field.cutoff + self.skin if self.force_field.cutoff > 0 else 0.0

    # ------------------------------------------------------------------ state

    def init_state(self, positions, box, masses, seed, velocities=None, kT=None):
        """R new states: positions/box/masses/velocities shared by the replicas or given per replica.

        seed: an int (replica r gets seed + r) or R seeds. Without velocities,
        replica r draws Maxwell-Boltzmann velocities at kT exactly as
        ``difftre.md.Sampler.init_state`` does with its seed.
        """
        dtype, R = self.dtype, self.replicas
        positions = np.asarray(positions, dtype=dtype)
        if positions.ndim == 2:
            positions = np.broadcast_to(positions, (R, *positions.shape))
        if positions.ndim != 3 or positions.shape[0] != R or positions.shape[2] not in (1, 2, 3):
            raise ValueError(f"positions must have shape (N, dim) or ({R}, N, dim) with dim 1-3, got {positions.shape}")
        positions = positions.copy()
        _, n, dim = positions.shape
        bad = np.argwhere(~np.isfinite(positions))
        if bad.size:
            r, i = bad[0][:2]
            raise ValueError(f"replica {r}: position of particle {i} is not finite: {positions[r, i].tolist()}")
        box = _per_replica("box", box, (dim,), R, dtype)
        for r in range(R):
            check_orthorhombic(box[r], dim, name=f"box of replica {r}")
            if self.force_field.cutoff > 0:
                if dim != 3:
                    raise ValueError(f"pair and many-body kernels need 3-D positions, got dim {dim}")
                neighbors.check_box_for_cutoff(box[r], self.list_cutoff)
        masses = _per_replica("masses", masses, (n,), R, dtype)
        bad = np.argwhere(~(np.isfinite(masses) & (masses > 0)))
        if bad.size:
            r, i = bad[0]
            raise ValueError(f"replica {r}: mass of particle {i} must be finite and positive, got {masses[r, i]}")
        seeds = np.broadcast_to(np.asarray(seed), (R,)) if np.ndim(seed) else int(seed) + np.arange(R)
        if np.any(np.asarray(seeds) < 0):
            raise ValueError(f"seeds must be non-negative, got {seed}")
        seeds = np.asarray(seeds).astype(np.uint64)
        conserves = self.force_field.conserves_momentum and self.integrator_kind != "langevin"
        dof = dim * n - (dim if conserves else 0)
        if velocities is None:
            kT = md._positive("kT", kT if kT is not None else getattr(self.integrator, "kT", np.nan))
            velocities = np.empty((R, n, dim))
            for r in range(R):   # exactly md.Sampler.init_state's draw for seed seeds[r]
                rng = np.random.default_rng(int(seeds[r]))
                v = rng.normal(size=(n, dim)) * np.sqrt(kT / masses[r])[:, None]
                if conserves:
                    v -= (masses[r] @ v) / masses[r].sum()
                velocities[r] = v
        velocities = _per_replica("velocities", velocities, (n, dim), R, dtype)
        if not np.all(np.isfinite(velocities)):
            raise ValueError("velocities must be finite")
        chain = getattr(self.integrator, "chain_length", 0)
        capacity, cell_capacity = self._initial_capacities(n, box)
        state = CudaMDState(positions, velocities, masses, box, np.zeros((R, 2 * chain), dtype), seeds, 0, dof,
                            np.zeros((R, n, capacity), np.int32), np.zeros((R, n), np.int32), positions.copy(),
                            cell_capacity)
        if self.list_cutoff > 0:
            self._launch(state, 0, 0, 1, False, force_rebuild=True)
        return state

    def continue_from(self, states):
        """One CudaMDState continuing R states of the CPU sampler (difftre.md.MDState, one per replica).

        The inverse of CudaMDState.replica: positions, velocities, masses, box, thermostat, seeds
        and the step counter carry over, so replica r goes on as the CPU sampler would from
        states[r]. The replicas must share the step counter.
        """
        states = list(states)
        if len(states) != self.replicas:
            raise ValueError(f"need {self.replicas} states (one per replica), got {len(states)}")
        steps = {int(s.step) for s in states}
        if len(steps) != 1:
            raise ValueError(f"the replicas must share the step counter (random stream position), got {sorted(steps)}")
        stacked = lambda name: np.stack([getattr(s, name) for s in states])   # noqa: E731
        state = self.init_state(stacked("positions"), stacked("box"), stacked("masses"),
                                seed=[int(s.seed) for s in states], velocities=stacked("velocities"))
        if state.thermostat.shape[1]:
            state.thermostat[...] = stacked("thermostat")
        state.step = steps.pop()
        return state

    def _initial_capacities(self, n, box):
        if self.list_cutoff == 0:
            return 1, 1
        density = n / float(np.min(np.prod(box, axis=1)))
        expected = 4.0 / 3.0 * np.pi * self.list_cutoff ** 3 * density
        per_cell = density * float(np.max(np.prod(box / np.floor(box / self.list_cutoff), axis=1)))
        return int(1.3 * expected) + 8, int(2.0 * per_cell) + 8

    def _check_state(self, state):
        for name in ("positions", "velocities", "masses", "box", "thermostat", "reference_positions"):
            array = getattr(state, name)
            if array.dtype != self.dtype:
                raise TypeError(f"state.{name} is {array.dtype}, but this sampler runs in {np.dtype(self.dtype).name}")
        if state.positions.shape[0] != self.replicas:
            raise ValueError(f"state has {state.positions.shape[0]} replicas, the sampler {self.replicas}")

    # ------------------------------------------------------------------ running

    def run(self, state, n_equilibration, n_frames, stride, record_velocities=False):
        """Advance all replicas in place; return (Trajectory with a leading replica axis, state).

        Raises SimulationError naming the replica, step and particle of the
        first replica that blew up (the others have completed their run, the
        failing ones hold their failing step).
        """
        self._check_state(state)
        if n_equilibration < 0 or n_frames < 0 or stride < 1:
            raise ValueError(f"need n_equilibration >= 0, n_frames >= 0, stride >= 1; got "
                             f"{n_equilibration}, {n_frames}, {stride}")
        if self.jax_model is not None:
            return self._run_host_stepped(state, int(n_equilibration), int(n_frames), int(stride),
                                          bool(record_velocities))
        frames, status = self._launch(state, int(n_equilibration), int(n_frames), int(stride),
                                      bool(record_velocities))
        failed = np.flatnonzero(status[:, gpu.ST_CODE] != gpu.STATUS_OK)
        if failed.size:
            r = int(failed[0])
            code, step, particle = (int(v) for v in status[r, :3])
            particle = 0 if particle >= state.positions.shape[1] else particle
            limit = self._step_limit(state)
            what = ("non-finite force or position" if code == gpu.STATUS_NONFINITE
                    else f"moved more than {limit:.4g} nm in one step")
            error = md.SimulationError(
                f"replica {r}: trajectory blew up at step {step}: particle {particle} {what} (position "
                f"{state.positions[r, particle].tolist()}); {failed.size} of {self.replicas} replicas failed",
                step, particle)
            error.replica = r
            error.failed_replicas = failed.tolist()
            raise error
        state.step += int(n_equilibration + n_frames * stride)
        return frames, state

    def evaluate(self, state):
        """(potential energy (R,), forces (R, N, dim), virial (R, dim, dim)) of the current positions.

        Rebuilds the neighbour lists first (state's lists are updated).
        """
        self._check_state(state)
        if self.jax_model is not None:
            from numba import cuda
            energies, forces, failure = self._jax_forces(cuda.to_device(state.positions), state.box)
            self._raise_failure(state, failure)
            dim = state.positions.shape[2]
            return (np.asarray(energies), forces.copy_to_host(),
                    np.full((state.replicas, dim, dim), np.nan, self.dtype))
        forces = np.empty_like(state.positions)
        start = self._launch(state, 0, 0, 1, False, force_rebuild=self.list_cutoff > 0, forces_out=forces)
        dim = state.positions.shape[2]
        return start[:, 0].copy(), forces, start[:, 2:].reshape(-1, dim, dim).copy()

    # ------------------------------------------------------------------ host-stepped mode (JAX forces)

    @functools.cached_property
    def _jax_forces(self):
        """forces(positions device (R, N, dim), box host (R, dim), step index, failure) (difftre.bridge)."""
        import jax.numpy as jnp
        from difftre import bridge
        energy_fn, params = self.jax_model
        forces = bridge.replica_forces(energy_fn, params, self.dtype)
        return lambda positions, box, step=0, failure=None: forces(
            positions, jnp.asarray(box), step,
            jnp.full((len(box), 2), -1, jnp.int32) if failure is None else failure)

    def _run_host_stepped(self, state, n_equilibration, n_frames, stride, record_velocities):
        """One launch per integrator half, the JAX forces in between (difftre.bridge, no copies on a GPU).

        Same steps and random stream as the CPU sampler with the same jax_force_term. A
        non-finite position, force or energy raises SimulationError naming the replica, step and
        particle (checked at every recorded frame and at the end); the state is then left as it
        was before the run. The virial is not computed (NaN).
        """
        from numba import cuda
        import jax
        import jax.numpy as jnp
        from difftre import bridge

        dtype = self.dtype
        R, n, dim = state.positions.shape
        _, threads = self._layout(n)
        half_step = self.engine(dim, "replicas", threads).half_step_kernel()
        _, _, iparams = self.integrator.kernel(state.dof, dtype)
        forces_of = self._jax_forces
        thermostat = state.thermostat if state.thermostat.shape[1] else np.zeros((R, 1), dtype)
        pos, vel, thermo = (cuda.to_device(a) for a in (state.positions, state.velocities, thermostat))
        invm = cuda.to_device((1.0 / state.masses).astype(dtype))
        invm_jax = bridge.device_as_jax(invm)
        seeds = cuda.to_device(state.seeds.astype(np.uint64))
        tail = (cuda.to_device(np.asarray(iparams, dtype)), dtype(self.integrator.dt),
                cuda.to_device(np.zeros((R, 1, 2 + dim * dim), dtype)),
                cuda.to_device(np.zeros((R, gpu.N_SCALARS), dtype)))
        energies, frc, failure = forces_of(pos, state.box)
        self._raise_failure(state, failure)
        frame_positions, frame_velocities, potential, kinetic = [], [], [], []
        n_steps = n_equilibration + n_frames * stride
        for k in range(n_steps):
            step = np.uint64(state.step + k)
            half_step[R, threads](pos, vel, frc, invm, thermo, seeds, step, *tail, np.int32(1))
            cuda.synchronize()   # the kernel has finished before JAX reads the positions
            energies, frc, failure = forces_of(pos, state.box, k, failure)
            half_step[R, threads](pos, vel, frc, invm, thermo, seeds, step, *tail, np.int32(0))
            cuda.synchronize()
            produced = k + 1 - n_equilibration
            if produced > 0 and produced % stride == 0:
                self._raise_failure(state, failure)
                velocities = bridge.device_as_jax(vel)
                frame_positions.append(bridge.device_as_jax(pos).copy())
                kinetic.append(0.5 * jnp.sum(jnp.sum(velocities * velocities, axis=-1) / invm_jax, axis=-1))
                potential.append(energies)
                if record_velocities:
                    frame_velocities.append(velocities.copy())
                # JAX has read pos and vel before the next kernel moves them
                jax.block_until_ready((frame_positions[-1], kinetic[-1], frame_velocities[-1:]))
        self._raise_failure(state, failure)
        state.positions[...] = pos.copy_to_host()
        state.velocities[...] = vel.copy_to_host()
        if state.thermostat.shape[1]:
            state.thermostat[...] = thermo.copy_to_host()
        state.step += n_steps

        def stacked(frames, shape):
            return np.asarray(jnp.stack(frames, axis=1)) if frames else np.empty(shape, dtype)

        frames = md.Trajectory(stacked(frame_positions, (R, 0, n, dim)), stacked(frame_velocities, (R, 0, n, dim)),
                               stacked(potential, (R, 0)), stacked(kinetic, (R, 0)),
                               np.full((R, n_frames, dim, dim), np.nan, dtype), state.box.copy(),
                               np.zeros(R, np.int64))
        return frames, state

    def _raise_failure(self, state, failure):
        """SimulationError for the replica that failed first (failure: (R, 2) step index, particle; -1 if none)."""
        failure = np.asarray(failure)
        failed = np.flatnonzero(failure[:, 0] >= 0)
        if not failed.size:
            return
        r = int(failed[np.argmin(failure[failed, 0])])
        step, particle = state.step + int(failure[r, 0]), int(failure[r, 1])
        error = md.SimulationError(
            f"replica {r}: trajectory blew up at step {step}: particle {particle} has a non-finite position or "
            f"force (JAX forces); {failed.size} of {self.replicas} replicas failed; the state is left as it was "
            f"before the run (position {state.positions[r, particle].tolist()} then)", step, particle)
        error.replica = r
        error.failed_replicas = failed.tolist()
        raise error

    def _step_limit(self, state):
        if self.max_step_displacement is not None:
            return float(self.max_step_displacement)
        return self.skin if self.list_cutoff > 0 else 0.1 * float(np.min(state.box))

    def engine(self, dim, mode, threads):
        pairs = tuple(t.function for t in self.force_field.pair_terms)
        systems = () if self.jax_model is not None else tuple(   # JAX forces: the engine only integrates
            (t.function, gpu.system_term_kind(t.function, getattr(t, "per_particle", False)))
            for t in self.force_field.system_terms)
        return gpu.get_engine(self.dtype, pairs, systems, self.integrator_kind, self._integrator_layout(), dim,
                              threads, mode, self.list_cutoff > 0)

    def _integrator_layout(self):
        """(number of integrator params, index of the one that holds the first particle's index, or -1)."""
        params = np.asarray(self.integrator.kernel(1, self.dtype)[2])
        try:
            shifted = np.asarray(self.integrator.kernel(1, self.dtype, first_particle=4)[2])
        except TypeError:
            return len(params), -1
        moved = np.flatnonzero(shifted != params)
        return len(params), int(moved[0]) if moved.size else -1

    def _layout(self, n):
        mode = self.mode
        if mode == "auto":
            mode = "grid" if self.replicas == 1 and n >= 8192 and not gpu.SIMULATOR else "replicas"
        threads = self.threads or max(32, min(256, _next_power_of_two(n)))
        return mode, threads

    def _packed_terms(self):
        dtype = self.dtype
        pairs, systems = self.force_field.kernel_terms(dtype)

        def pack(params_list):
            width = max([len(p) for p in params_list] + [1])
            table = np.zeros((max(len(params_list), 1), width), dtype)
            lengths = np.zeros(max(len(params_list), 1), np.int64)
            for s, p in enumerate(params_list):
                table[s, :len(p)] = p
                lengths[s] = len(p)
            return table, lengths

        pp, plen = pack([p for _, p, _ in pairs])
        pcut2 = np.zeros(max(len(pairs), 1), dtype)
        for s, (_, _, cutoff) in enumerate(pairs):
            pcut2[s] = dtype(cutoff) * dtype(cutoff)
        sp, slen = pack([p for _, p in systems])
        return pp, plen, pcut2, sp, slen

    def kernel_ptx(self, state, compute_capability=(9, 0)):
        """PTX of the MD kernel for this sampler and state (NVVM only, no GPU needed; see kernels.cuda.ptx)."""
        return self._launch(state, 1, 1, 1, False, ptx_for=compute_capability)

    def _launch(self, state, n_equilibration, n_frames, stride, record_velocities, force_rebuild=False,
                forces_out=None, ptx_for=None):
        """Run the kernel until every replica finished or failed, regrowing lists that overflow.

        Returns (Trajectory, status) for a run, the start-of-run sums (R, 2 + dim^2)
        when forces_out is given (potential energy, 2 KE... see evaluate).
        """
        from numba import cuda

        dtype = self.dtype
        R, n, dim = state.positions.shape
        mode, threads = self._layout(n)
        eng = self.engine(dim, mode, threads)
        first, second, iparams = self.integrator.kernel(state.dof, dtype)
        pp, plen, pcut2, sp, slen = self._packed_terms()
        list_cutoff = dtype(self.list_cutoff)
        if self.list_cutoff > 0 and dim == 3:
            ncell = np.floor(state.box.astype(np.float64) / float(list_cutoff)).astype(np.int64)
        else:
            ncell = np.zeros((R, 3), np.int64)
        cells_used = np.all(ncell >= 3, axis=1)
        total_cells = int(max([np.prod(ncell[r]) for r in range(R) if cells_used[r]] + [1]))
        state.cell_capacity = max(int(state.cell_capacity), 1)
        limit = self._step_limit(state)
        F = max(n_frames, 1)
        thermostat = state.thermostat if state.thermostat.shape[1] else np.zeros((R, 1), dtype)
        to = cuda.to_device if ptx_for is None else (lambda a: a)
        d = dict(
            pos=to(state.positions), vel=to(state.velocities), frc=to(np.zeros_like(state.positions)),
            invm=to((1.0 / state.masses).astype(dtype)), box=to(state.box), thermo=to(thermostat),
            seeds=to(state.seeds.astype(np.uint64)), iparams=to(np.asarray(iparams, dtype)),
            pp=to(pp), plen=to(plen), pcut2=to(pcut2), sp=to(sp), slen=to(slen),
            nbr=to(state.nbr_idx), cnt=to(state.nbr_count), ref=to(state.reference_positions),
            prev=to(state.positions), cellc=to(np.zeros((R, total_cells), np.int32)),
            cellm=to(np.zeros((R, total_cells, state.cell_capacity), np.int32)), ncell=to(ncell),
            fpos=to(np.zeros((R, F, n, dim), dtype)),
            fvel=to(np.zeros((R, F if record_velocities else 1, n, dim), dtype)),
            fpot=to(np.zeros((R, F), dtype)), fkin=to(np.zeros((R, F), dtype)),
            fvir=to(np.zeros((R, F, dim, dim), dtype)),
            progress=to(np.zeros(R, np.int64)), resume=to(np.zeros(R, np.int32)),
            rebuilds=to(np.zeros(R, np.int64)), start_out=to(np.zeros((R, eng.n_reduce), dtype)))
        rebuild_flags = np.full(R, int(force_rebuild), np.int32)
        status = np.zeros((R, gpu.N_STATUS), np.int64)
        status[:, gpu.ST_PARTICLE] = n
        scalars_zero = np.zeros((R, gpu.N_SCALARS), dtype)
        flags_zero = np.zeros((R, gpu.N_FLAGS), np.int32)
        scalar = dict(step0=np.uint64(state.step), dt=dtype(self.integrator.dt),
                      list_cut2=list_cutoff * list_cutoff, half_skin_sq=dtype(0.25 * self.skin * self.skin),
                      max_step_sq=dtype(limit) * dtype(limit))

        def arguments(d_status, partials):
            return (d["pos"], d["vel"], d["frc"], d["invm"], d["box"], d["thermo"], d["seeds"], scalar["step0"],
                    d["iparams"], scalar["dt"], d["pp"], d["plen"], d["pcut2"], d["sp"], d["slen"],
                    d["nbr"], d["cnt"], d["ref"], d["prev"], d["cellc"], d["cellm"], d["ncell"],
                    scalar["list_cut2"], scalar["half_skin_sq"], scalar["max_step_sq"],
                    np.int64(n_equilibration), np.int64(n_frames), np.int64(stride), np.int32(record_velocities),
                    d["fpos"], d["fvel"], d["fpot"], d["fkin"], d["fvir"],
                    d["progress"], d["resume"], to(rebuild_flags), d_status, to(flags_zero), partials,
                    to(scalars_zero), d["rebuilds"], d["start_out"])

        blocks = R
        if mode == "grid":
            wanted = max(1, -(-n // threads))
            if gpu.SIMULATOR or ptx_for is not None:   # the simulator runs blocks one after another
                blocks = 1
            else:
                probe = arguments(to(status), to(np.zeros((R, 1, eng.n_reduce), dtype)))
                blocks = max(1, min(wanted, eng.max_cooperative_blocks(probe, threads)))
        partials = to(np.zeros((R, blocks if mode == "grid" else 1, eng.n_reduce), dtype))
        if ptx_for is not None:
            from numba import typeof
            argument_types = tuple(typeof(a) for a in arguments(status, partials))
            return cuda.compile_ptx(eng.kernel.py_func, argument_types, cc=tuple(ptx_for))[0]
        self.relaunches = 0
        for attempt in range(MAX_RELAUNCHES):
            self.relaunches = attempt
            d_status = to(status)
            eng.kernel[blocks, threads](*arguments(d_status, partials))
            cuda.synchronize()
            status = d_status.copy_to_host()
            overflow = status[:, gpu.ST_CODE] == gpu.STATUS_OVERFLOW
            if not overflow.any():
                break
            need_nbr = int(status[overflow, gpu.ST_NEED_NBR].max())
            need_cell = int(status[overflow, gpu.ST_NEED_CELL].max())
            progress = d["progress"].copy_to_host()
            n_steps = n_equilibration + n_frames * stride
            rebuild_flags[~overflow & (progress >= n_steps)] = 0
            if need_nbr > d["nbr"].shape[2]:
                old = d["nbr"].copy_to_host()
                grown = np.zeros((R, n, need_nbr + need_nbr // 4 + 1), np.int32)
                grown[:, :, :old.shape[2]] = old
                d["nbr"] = to(grown)
            if need_cell > state.cell_capacity:
                state.cell_capacity = need_cell + need_cell // 4 + 1
                d["cellm"] = to(np.zeros((R, total_cells, state.cell_capacity), np.int32))
            status[overflow, gpu.ST_CODE] = gpu.STATUS_OK
            status[overflow, gpu.ST_NEED_NBR] = 0
            status[overflow, gpu.ST_NEED_CELL] = 0
        else:
            raise RuntimeError(f"neighbour lists still overflow after {MAX_RELAUNCHES} regrowths")
        state.positions[...] = d["pos"].copy_to_host()
        state.velocities[...] = d["vel"].copy_to_host()
        if state.thermostat.shape[1]:
            state.thermostat[...] = d["thermo"].copy_to_host()
        state.nbr_idx = d["nbr"].copy_to_host()
        state.nbr_count = d["cnt"].copy_to_host()
        state.reference_positions = d["ref"].copy_to_host()
        if forces_out is not None:
            forces_out[...] = d["frc"].copy_to_host()
            start = d["start_out"].copy_to_host()
            start[:, 1] *= 0.5
            return start
        if n_frames == 0 and n_equilibration == 0 and not record_velocities and force_rebuild:
            return None, status
        frames = md.Trajectory(d["fpos"].copy_to_host()[:, :n_frames],
                               d["fvel"].copy_to_host()[:, :n_frames] if record_velocities
                               else np.empty((R, 0, n, dim), dtype),
                               d["fpot"].copy_to_host()[:, :n_frames], d["fkin"].copy_to_host()[:, :n_frames],
                               d["fvir"].copy_to_host()[:, :n_frames], state.box.copy(),
                               d["rebuilds"].copy_to_host())
        return frames, status
