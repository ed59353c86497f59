"""GPU front end: `CudaSampler`, the CUDA twin of `difftre.md.Sampler`, for R replicas at once.

    ff = ForceField([lennard_jones(epsilon=1.0, sigma=1.0, cutoff=2.5)])
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
With ``barostat=md.MonteCarloBarostat(...)`` every replica runs at constant pressure
in its own box: the CPU sampler's volume moves (same draws and acceptance test) inside
the same launch; the trajectory then has a box per frame, (R, n_frames, dim), and
barostat_moves (R, 3).

A force field whose only term is a JAX model (`difftre.bridge.jax_force_term`,
e.g. a neural network plus its prior written with `difftre.models.priors`) runs
host-stepped instead (`HostSteppedSampler`; ``CudaSampler(...)`` returns one for
such a force field): each step launches the integrator's first half, hands the
positions to JAX and its forces back through `difftre.bridge` (DLPack / CUDA
array interface, no copies on a GPU) and launches the second half. Same steps
and random stream as the CPU sampler with the same term.

Checks, degrees of freedom, the velocity draw and error texts are the CPU
sampler's (`difftre.md.SamplerBase`); `ReplicaSampler` adds what both GPU
samplers share (replica states, continuing CPU states, the thread layout).
"""
import dataclasses

import numpy as np

from difftre import md
from difftre.kernels.cuda import engine as gpu

MAX_RELAUNCHES = 32
BAROSTAT_NOT_HOST_STEPPED = ("the Monte Carlo barostat does not run host-stepped (a JAX force term, "
                             "HostSteppedSampler): use the CPU sampler (device='cpu') for NPT with JAX forces")


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


def replica_trajectory(trajectory, r):
    """Replica r of a batched sampler's trajectory (every field with a leading replica axis) in the CPU
    sampler's layout."""
    fields = ("positions", "velocities", "potential_energy", "kinetic_energy", "virial", "box",
              "n_neighbor_rebuilds", "barostat_moves")
    return md.Trajectory(*(None if getattr(trajectory, name) is None else np.asarray(getattr(trajectory, name))[r]
                           for name in fields))


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


@dataclasses.dataclass
class LaunchResult:
    """What one `CudaSampler._launch` gives back (host arrays, leading replica axis)."""
    frames: md.Trajectory    # the recorded frames (n_neighbor_rebuilds per replica)
    status: np.ndarray       # (R, engine.N_STATUS) code, step, particle, ... per replica
    forces: np.ndarray       # (R, N, dim) kJ/mol/nm at the last evaluated positions
    start: np.ndarray        # (R, 2 + dim^2) at the start: potential energy (kJ/mol), 2 K, virial (kJ/mol)


class ReplicaSampler(md.SamplerBase):
    """What both GPU samplers share: R replicas per state, continuing CPU states, the thread layout.

    mode: "replicas" (one thread block per replica), "grid" (one system over a
    cooperative grid of blocks, for large N; replicas must be 1) or "auto"
    (grid for a single system of >= 8192 particles). threads: per block, a
    power of two (default: 256, fewer for small systems). barostat: a
    ``md.MonteCarloBarostat`` (CudaSampler only): each replica makes the CPU sampler's volume
    moves in its own box (the trajectory's box is then (R, n_frames, dim), its
    barostat_moves (R, 3)).
    """
    batched = True

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, replicas=1,
                 max_step_displacement=None, threads=None, mode="auto", barostat=None):
        super().__init__(force_field, integrator, skin, dtype, max_step_displacement, replicas, barostat)
        if mode not in ("auto", "replicas", "grid"):
            raise ValueError(f"mode must be 'auto', 'replicas' or 'grid', got {mode!r}")
        if mode == "grid" and replicas != 1:
            raise ValueError("mode 'grid' runs one system; use mode 'replicas' for several")
        if threads is not None and (threads < 1 or threads & (threads - 1)):
            raise ValueError(f"threads must be a power of two, got {threads}")
        if integrator.kind not in gpu.INTEGRATOR_TEMPLATES:
            raise NotImplementedError(f"no CUDA version of integrator {type(integrator).__name__}")
        self.threads = threads
        self.mode = mode

    def init_state(self, positions, box, masses, seed, velocities=None, kT=None):
        """R new states: positions/box/masses/velocities shared by the replicas or given per replica.

        seed: an int (replica r gets seed + r) or R seeds. Without velocities,
        replica r draws Maxwell-Boltzmann velocities at kT exactly as
        ``difftre.md.Sampler.init_state`` does with its seed.
        """
        initial = self.initial_arrays(positions, box, masses, seed, velocities, kT)
        R, n, _ = initial.positions.shape
        capacity, cell_capacity = self._initial_capacities(n, initial.box)
        return CudaMDState(initial.positions, initial.velocities, initial.masses, initial.box,
                           np.zeros((R, self.integrator.thermostat_size), self.dtype), initial.seeds, 0, initial.dof,
                           np.zeros((R, n, capacity), np.int32), np.zeros((R, n), np.int32),
                           initial.positions.copy(), cell_capacity)

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
        """(neighbours per particle, members per cell) to start with (both regrow on demand)."""
        if self.list_cutoff == 0:
            return 1, 1
        density = n / float(np.min(np.prod(box, axis=1)))
        expected = 4.0 / 3.0 * np.pi * self.list_cutoff ** 3 * density
        per_cell = density * float(np.max(np.prod(box / np.floor(box / self.list_cutoff), axis=1)))
        return int(1.3 * expected) + 8, int(2.0 * per_cell) + 8

    def _layout(self, n):
        """(mode, threads per block) of a system of n particles."""
        mode = self.mode
        if mode == "auto":
            mode = "grid" if self.replicas == 1 and n >= 8192 and not gpu.SIMULATOR else "replicas"
        threads = self.threads or max(32, min(256, _next_power_of_two(n)))
        return mode, threads

    def _engine_terms(self):
        """(pair functions, (system function, kind) pairs) the engine evaluates."""
        raise NotImplementedError

    def engine(self, dim, mode, threads):
        """The compiled engine (difftre.kernels.cuda.engine.Engine) of this sampler for dim, mode, threads."""
        pairs, systems = self._engine_terms()
        return gpu.get_engine(self.dtype, pairs, systems, self.integrator.kind, self.integrator.PARAMS, dim,
                              threads, mode, self.list_cutoff > 0, self.barostat is not None)


class CudaSampler(ReplicaSampler):
    """Runs R replicas of one force field with one integrator on the GPU, all in compiled code.

    A force field whose only term is a JAX model gives a `HostSteppedSampler` instead.
    """

    def __new__(cls, force_field, integrator, *args, **kwargs):
        if cls is CudaSampler and _jax_model(force_field) is not None:
            return HostSteppedSampler(force_field, integrator, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, replicas=1,
                 max_step_displacement=None, threads=None, mode="auto", barostat=None):
        super().__init__(force_field, integrator, skin, dtype, replicas, max_step_displacement, threads, mode,
                         barostat)
        for term in force_field.system_terms:   # fail early on a term the GPU cannot run
            gpu.system_term_kind(term.function, term.per_particle)
        self.relaunches = 0   # regrowth relaunches of the last kernel run (diagnostics)

    def _engine_terms(self):
        return (tuple(t.function for t in self.force_field.pair_terms),
                tuple((t.function, gpu.system_term_kind(t.function, t.per_particle))
                      for t in self.force_field.system_terms))

    def init_state(self, positions, box, masses, seed, velocities=None, kT=None):
        state = super().init_state(positions, box, masses, seed, velocities, kT)
        if self.list_cutoff > 0:
            self._launch(state, 0, 0, 1, False, force_rebuild=True)
        return state

    init_state.__doc__ = ReplicaSampler.init_state.__doc__

    def run(self, state, n_equilibration, n_frames, stride, record_velocities=False):
        """Advance all replicas in place; return (Trajectory with a leading replica axis, state).

        Raises SimulationError naming the replica, step and particle of the
        first replica that blew up (the others have completed their run, the
        failing ones hold their failing step).
        """
        self._check_run(state, n_equilibration, n_frames, stride)
        result = self._launch(state, int(n_equilibration), int(n_frames), int(stride), bool(record_velocities))
        failed = np.flatnonzero(result.status[:, gpu.ST_CODE] != gpu.STATUS_OK)
        if failed.size:
            r = int(failed[0])
            code, step, particle = (int(v) for v in result.status[r, :3])
            particle = 0 if particle >= state.positions.shape[1] else particle
            raise self._blow_up(step, particle, self.blow_up_reason(code, self.step_limit(state.box)),
                                state.positions[r, particle].tolist(), r, failed.tolist())
        state.step += int(n_equilibration + n_frames * stride)
        return result.frames, state

    def evaluate(self, state):
        """(potential energy (R,), forces (R, N, dim), virial (R, dim, dim)) of the current positions.

        Rebuilds the neighbour lists first (state's lists are updated).
        """
        self._check_state(state)
        result = self._launch(state, 0, 0, 1, False, force_rebuild=self.list_cutoff > 0)
        dim = state.positions.shape[2]
        return result.start[:, 0].copy(), result.forces, result.start[:, 2:].reshape(-1, dim, dim).copy()

    def kernel_ptx(self, state, compute_capability=(9, 0)):
        """PTX of the MD kernel for this sampler and state (NVVM only, no GPU needed; see kernels.cuda.ptx)."""
        from numba import cuda, typeof
        call = _KernelCall(self, state, 1, 1, 1, False, False, to_device=None)
        argument_types = tuple(typeof(a) for a in call.arguments())
        return cuda.compile_ptx(call.engine.kernel.py_func, argument_types, cc=tuple(compute_capability))[0]

    def _launch(self, state, n_equilibration, n_frames, stride, record_velocities, force_rebuild=False):
        """Run the kernel until every replica finished or failed, regrowing lists that overflow; the
        state arrays are updated in place. Returns a LaunchResult."""
        from numba import cuda

        R, n, dim = state.positions.shape
        call = _KernelCall(self, state, n_equilibration, n_frames, stride, record_velocities, force_rebuild,
                           to_device=cuda.to_device)
        d = call.device
        self.relaunches = 0
        for attempt in range(MAX_RELAUNCHES):
            self.relaunches = attempt
            d_status = cuda.to_device(call.status)
            call.engine.kernel[call.blocks, call.threads](*call.arguments(d_status))
            cuda.synchronize()
            status = call.status = d_status.copy_to_host()
            overflow = status[:, gpu.ST_CODE] == gpu.STATUS_OVERFLOW
            if not overflow.any():
                break
            need_nbr = int(status[overflow, gpu.ST_NEED_NBR].max())
            need_cell = int(status[overflow, gpu.ST_NEED_CELL].max())
            progress = d["progress"].copy_to_host()
            call.rebuild_flags[~overflow & (progress >= n_equilibration + n_frames * stride)] = 0
            if need_nbr > d["nbr"].shape[2]:
                old = d["nbr"].copy_to_host()
                grown = np.zeros((R, n, need_nbr + need_nbr // 4 + 1), np.int32)
                grown[:, :, :old.shape[2]] = old
                d["nbr"] = cuda.to_device(grown)
                if self.barostat is not None:   # the trial list (rebuilt when its move is redone)
                    d["tnbr"] = cuda.to_device(np.zeros_like(grown))
            if need_cell > state.cell_capacity:
                state.cell_capacity = need_cell + need_cell // 4 + 1
                d["cellm"] = cuda.to_device(np.zeros((R, call.total_cells, state.cell_capacity), np.int32))
            status[overflow, gpu.ST_CODE] = gpu.STATUS_OK
            status[overflow, gpu.ST_NEED_NBR] = 0
            status[overflow, gpu.ST_NEED_CELL] = 0
        else:
            raise RuntimeError(f"neighbour lists still overflow after {MAX_RELAUNCHES} regrowths")
        state.positions[...] = d["pos"].copy_to_host()
        state.velocities[...] = d["vel"].copy_to_host()
        state.box[...] = d["box"].copy_to_host()
        if state.thermostat.shape[1]:
            state.thermostat[...] = d["thermo"].copy_to_host()
        state.nbr_idx = d["nbr"].copy_to_host()
        state.nbr_count = d["cnt"].copy_to_host()
        state.reference_positions = d["ref"].copy_to_host()
        frames = md.Trajectory(d["fpos"].copy_to_host()[:, :n_frames],
                               d["fvel"].copy_to_host()[:, :n_frames] if record_velocities
                               else np.empty((R, 0, n, dim), self.dtype),
                               d["fpot"].copy_to_host()[:, :n_frames], d["fkin"].copy_to_host()[:, :n_frames],
                               d["fvir"].copy_to_host()[:, :n_frames], state.box.copy(),
                               d["rebuilds"].copy_to_host())
        if self.barostat is not None:
            frames.box, frames.barostat_moves = d["fbox"].copy_to_host()[:, :n_frames], d["moves"].copy_to_host()
        return LaunchResult(frames, call.status, d["frc"].copy_to_host(), d["start_out"].copy_to_host())


class _KernelCall:
    """The MD kernel's arguments for one run of `sampler` from `state` (arrays placed by to_device; None:
    left on the host, for PTX), its engine and launch shape (blocks, threads); `arguments(status)` lists
    them in the kernel's order."""

    def __init__(self, sampler, state, n_equilibration, n_frames, stride, record_velocities, force_rebuild,
                 to_device):
        dtype = sampler.dtype
        R, n, dim = state.positions.shape
        mode, self.threads = sampler._layout(n)
        self.engine = sampler.engine(dim, mode, self.threads)
        list_cutoff = dtype(sampler.list_cutoff)
        if sampler.list_cutoff > 0 and dim == 3:
            ncell = np.floor(state.box.astype(np.float64) / float(list_cutoff)).astype(np.int64)
        else:
            ncell = np.zeros((R, 3), np.int64)
        cells_used = np.all(ncell >= 3, axis=1)
        self.total_cells = int(max([np.prod(ncell[r]) for r in range(R) if cells_used[r]] + [1]))
        state.cell_capacity = max(int(state.cell_capacity), 1)
        limit = sampler.step_limit(state.box)
        frames = max(n_frames, 1)
        thermostat = state.thermostat if state.thermostat.shape[1] else np.zeros((R, 1), dtype)
        to = self.to_device = to_device or (lambda array: array)
        n_reduce = self.engine.n_reduce
        self.device = dict(
            pos=to(state.positions), vel=to(state.velocities), frc=to(np.zeros_like(state.positions)),
            invm=to((1.0 / state.masses).astype(dtype)), box=to(state.box), thermo=to(thermostat),
            seeds=to(state.seeds.astype(np.uint64)),
            iparams=to(sampler.integrator.params(state.dof, dtype)),
            nbr=to(state.nbr_idx), cnt=to(state.nbr_count), ref=to(state.reference_positions),
            prev=to(state.positions), cellc=to(np.zeros((R, self.total_cells), np.int32)),
            cellm=to(np.zeros((R, self.total_cells, state.cell_capacity), np.int32)), ncell=to(ncell),
            fpos=to(np.zeros((R, frames, n, dim), dtype)),
            fvel=to(np.zeros((R, frames if record_velocities else 1, n, dim), dtype)),
            fpot=to(np.zeros((R, frames), dtype)), fkin=to(np.zeros((R, frames), dtype)),
            fvir=to(np.zeros((R, frames, dim, dim), dtype)),
            progress=to(np.zeros(R, np.int64)), resume=to(np.zeros(R, np.int32)),
            rebuilds=to(np.zeros(R, np.int64)), start_out=to(np.zeros((R, n_reduce), dtype)))
        self.device.update(zip(("pp", "plen", "pcut2", "sp", "slen"), (to(a) for a in _packed_terms(sampler))))
        self.device.update({name: to(a) for name, a in _barostat_arrays(sampler, state, frames).items()})
        self.rebuild_flags = np.full(R, int(force_rebuild), np.int32)
        self.status = np.zeros((R, gpu.N_STATUS), np.int64)
        self.status[:, gpu.ST_PARTICLE] = n
        self.scalars = (np.uint64(state.step), dtype(sampler.integrator.dt), list_cutoff, list_cutoff * list_cutoff,
                        dtype(0.25 * sampler.skin * sampler.skin), dtype(limit) * dtype(limit))
        self.counts = (np.int64(n_equilibration), np.int64(n_frames), np.int64(stride), np.int32(record_velocities))
        self.zeros = (np.zeros((R, gpu.N_FLAGS), np.int32), np.zeros((R, gpu.N_SCALARS), dtype))
        self.blocks = R
        self.device["partials"] = to(np.zeros((R, 1, n_reduce), dtype))
        if mode == "grid":
            wanted = max(1, -(-n // self.threads))
            if gpu.SIMULATOR or to_device is None:   # the simulator runs blocks one after another; PTX
                self.blocks = 1                       # needs no launch shape
            else:
                self.blocks = max(1, min(wanted, self.engine.max_cooperative_blocks(
                    self.arguments(to(self.status)), self.threads)))
            self.device["partials"] = to(np.zeros((R, self.blocks, n_reduce), dtype))

    def arguments(self, status=None):
        """The kernel's arguments, status (the device copy of self.status) in its place."""
        d, to = self.device, self.to_device
        step0, dt, list_cut, list_cut2, half_skin_sq, max_step_sq = self.scalars
        flags, scalars = self.zeros
        return (d["pos"], d["vel"], d["frc"], d["invm"], d["box"], d["thermo"], d["seeds"], step0,
                d["iparams"], dt, d["pp"], d["plen"], d["pcut2"], d["sp"], d["slen"],
                d["nbr"], d["cnt"], d["ref"], d["prev"], d["cellc"], d["cellm"], d["ncell"],
                list_cut, list_cut2, half_skin_sq, max_step_sq, *self.counts,
                d["fpos"], d["fvel"], d["fpot"], d["fkin"], d["fvir"],
                d["progress"], d["resume"], to(self.rebuild_flags), to(self.status) if status is None else status,
                to(flags), d["partials"], to(scalars), d["rebuilds"], d["start_out"],
                *(d[name] for name in BAROSTAT_ARRAYS))


BAROSTAT_ARRAYS = ("bparams", "tpos", "tfrc", "tnbr", "tcnt", "tref", "fbox", "moves")   # in the kernel's order


def _barostat_arrays(sampler, state, frames):
    """The kernel's barostat arrays (BAROSTAT_ARRAYS; placeholders of one element per axis without a barostat):
    per replica its params [P, max_dV, kT, interval] (see md.MonteCarloBarostat.params), the trial's positions,
    forces, neighbour list (as state's), counts and reference positions, the frames' boxes (R, frames, dim) and
    the move counts (R, 3)."""
    dtype = sampler.dtype
    R, n, dim = state.positions.shape
    if sampler.barostat is None:
        n, frames, capacity = 1, 1, 1
        params = np.zeros((R, 4), dtype)
    else:
        capacity = state.nbr_idx.shape[2]
        params = np.stack([sampler.barostat.params(sampler.integrator.kT, box, dtype) for box in state.box])
    return dict(bparams=params, tpos=np.zeros((R, n, dim), dtype), tfrc=np.zeros((R, n, dim), dtype),
                tnbr=np.zeros((R, n, capacity), np.int32), tcnt=np.zeros((R, n), np.int32),
                tref=np.zeros((R, n, dim), dtype), fbox=np.zeros((R, frames, dim), dtype),
                moves=np.zeros((R, 3), np.int64))


def _packed_terms(sampler):
    """The force field's params for the kernel: pair params (S, width), their lengths, squared pair
    cut-offs, system params (S, width), their lengths (at least one row each)."""
    dtype = sampler.dtype
    pairs, systems = sampler.force_field.kernel_terms(dtype)

    def pack(params_list):
        width = max([len(p) for p in params_list] + [1])
        table = np.zeros((max(len(params_list), 1), width), dtype)
        lengths = np.zeros(max(len(params_list), 1), np.int64)
        for s, p in enumerate(params_list):
            table[s, :len(p)] = p
            lengths[s] = len(p)
        return table, lengths

    pair_params, pair_lengths = pack([p for _, p, _ in pairs])
    pair_cut2 = np.zeros(max(len(pairs), 1), dtype)
    for s, (_, _, cutoff) in enumerate(pairs):
        pair_cut2[s] = dtype(cutoff) * dtype(cutoff)
    system_params, system_lengths = pack([p for _, p in systems])
    return pair_params, pair_lengths, pair_cut2, system_params, system_lengths


class HostSteppedSampler(ReplicaSampler):
    """R replicas whose forces come from a JAX model (the force field's only term, a
    difftre.bridge.jax_force_term without a neighbour list): one kernel launch per integrator
    half, the JAX forces of all replicas in between (difftre.bridge, no copies on a GPU).

    Same steps and random stream as the CPU sampler with the same term. The virial is not
    computed (NaN).
    """

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, replicas=1,
                 max_step_displacement=None, threads=None, mode="auto", barostat=None):
        if barostat is not None:
            raise NotImplementedError(BAROSTAT_NOT_HOST_STEPPED)
        if mode == "grid":
            raise ValueError("a force field with JAX forces runs host-stepped, one block per replica: "
                             "use mode 'replicas' or 'auto'")
        self.jax_model = _jax_model(force_field)
        if self.jax_model is None:
            raise ValueError("HostSteppedSampler runs a force field whose only term is a difftre.bridge.jax_force_term")
        if force_field.cutoff > 0:
            raise NotImplementedError("host-stepped JAX forces get no neighbour list on the GPU: use a "
                                      "jax_force_term without cutoff")
        super().__init__(force_field, integrator, skin, dtype, replicas, max_step_displacement, threads, "replicas")
        self._forces = None

    def _engine_terms(self):
        return (), ()   # the engine only integrates

    def _jax_forces(self, positions, box, step=0, failure=None):
        """(energies (R,), forces (R, N, dim) device view, failure (R, 2)) of device positions (R, N, dim) and
        host box (R, dim) at step index `step` (difftre.bridge.replica_forces)."""
        import jax.numpy as jnp
        from difftre import bridge
        if self._forces is None:
            energy_fn, params = self.jax_model
            self._forces = bridge.replica_forces(energy_fn, params, self.dtype)
        if failure is None:
            failure = jnp.full((len(box), 2), -1, jnp.int32)
        return self._forces(positions, jnp.asarray(box), step, failure)

    def evaluate(self, state):
        """(potential energy (R,), forces (R, N, dim), virial (R, dim, dim), NaN) of the current positions."""
        from numba import cuda
        self._check_state(state)
        energies, forces, failure = self._jax_forces(cuda.to_device(state.positions), state.box)
        self._raise_failure(state, failure)
        dim = state.positions.shape[2]
        return (np.asarray(energies), forces.copy_to_host(),
                np.full((state.replicas, dim, dim), np.nan, self.dtype))

    def run(self, state, n_equilibration, n_frames, stride, record_velocities=False):
        """Advance all replicas in place; return (Trajectory with a leading replica axis, state).

        A non-finite position, force or energy raises SimulationError naming the replica, step and
        particle (checked at every recorded frame and at the end); the state is then left as it
        was before the run.
        """
        from numba import cuda
        import jax
        import jax.numpy as jnp
        from difftre import bridge

        self._check_run(state, n_equilibration, n_frames, stride)
        n_equilibration, n_frames, stride = int(n_equilibration), int(n_frames), int(stride)
        dtype = self.dtype
        R, n, dim = state.positions.shape
        _, threads = self._layout(n)
        half_step = self.engine(dim, "replicas", threads).half_step_kernel()
        thermostat = state.thermostat if state.thermostat.shape[1] else np.zeros((R, 1), dtype)
        pos, vel, thermo = (cuda.to_device(a) for a in (state.positions, state.velocities, thermostat))
        invm = cuda.to_device((1.0 / state.masses).astype(dtype))
        invm_jax = bridge.device_as_jax(invm)
        seeds = cuda.to_device(state.seeds.astype(np.uint64))
        tail = (cuda.to_device(self.integrator.params(state.dof, dtype)), dtype(self.integrator.dt),
                cuda.to_device(np.zeros((R, 1, 2 + dim * dim), dtype)),
                cuda.to_device(np.zeros((R, gpu.N_SCALARS), dtype)))
        energies, frc, failure = self._jax_forces(pos, state.box)
        self._raise_failure(state, failure)
        frame_positions, frame_velocities, potential, kinetic = [], [], [], []
        n_steps = n_equilibration + n_frames * stride
        for k in range(n_steps):
            step = np.uint64(state.step + k)
            half_step[R, threads](pos, vel, frc, invm, thermo, seeds, step, *tail, np.int32(1))
            cuda.synchronize()   # the kernel has finished before JAX reads the positions
            energies, frc, failure = self._jax_forces(pos, state.box, k, failure)
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
        raise self._blow_up(step, particle, "has a non-finite position or force (JAX forces)",
                            state.positions[r, particle].tolist(), r, failed.tolist(),
                            note="; the state is left as it was before the run (the position is the one then)")
