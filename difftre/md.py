"""MD front end: force fields, integrators, state and the samplers over the Numba kernels.

    ff = ForceField([lennard_jones(epsilon=1.0, sigma=1.0, cutoff=2.5)])
    sampler = Sampler(ff, Langevin(dt=0.005, kT=1.0, friction=1.0), skin=0.3)
    state = sampler.init_state(positions, box, masses=1.0, seed=0)
    trajectory, state = sampler.run(state, n_equilibration=1000, n_frames=100, stride=10)

The state carries everything a continuation needs (positions, velocities,
thermostat variables, the random stream's seed and step counter, the neighbour
list), so the next `run` continues the same trajectory. Units: nm, ps, u, kJ/mol
(or reduced units, consistently).

With ``Sampler(..., barostat=MonteCarloBarostat(pressure))`` the CPU sampler runs at
constant pressure (isotropic Monte Carlo volume moves, `difftre.kernels.barostat`); so
does ``difftre.md_cuda.CudaSampler`` for each of its replicas.

Force-field terms come from `difftre.potentials` (one record per potential, its
Numba kernel next to its JAX twin) and are re-exported here. `SamplerBase` is
what every sampler shares (checks, degrees of freedom, the Maxwell-Boltzmann
draw, state checks, error texts): `Sampler` here runs on the CPU,
`difftre.md_cuda.CudaSampler` and `difftre.md_cuda.HostSteppedSampler` on a GPU.
"""
import concurrent.futures
import dataclasses
from typing import ClassVar

import numba
import numpy as np

from difftre.kernels import integrators, neighbors, sampler as engine
from difftre.kernels.buffers import ALIGNMENT, aligned_copy, aligned_empty
from difftre.kernels.space import check_orthorhombic, volume
from difftre.potentials import (PairTerm, SystemTerm, external_spline, harmonic, lennard_jones,  # noqa: F401
                                repulsive, stillinger_weber, tabulated_pair)   # (the terms of difftre.md's API)
from difftre.potentials import positive as _positive

BOLTZMANN = 0.0083144626  # kJ/(mol K)
BAR = 0.0602214           # 1 bar in kJ mol^-1 nm^-3
GPA = 602.2137            # 1 GPa in kJ mol^-1 nm^-3
DTYPES = (np.float32, np.float64)
MAX_STEP = np.iinfo(np.int64).max   # the engines count steps in int64 (the random stream in uint64)


class SimulationError(RuntimeError):
    """A trajectory stopped being physical (non-finite values or a blow-up).

    step and particle name where; the replica samplers (difftre.md_cuda) add replica
    (the first that failed) and failed_replicas.
    """

    def __init__(self, message, step, particle):
        super().__init__(message)
        self.step = step
        self.particle = particle


def kT_from_temperature(temperature):
    """kB T in kJ/mol for a temperature in K."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature} K")
    return BOLTZMANN * temperature


def check_dtype(dtype):
    """numpy.float32 or numpy.float64, or a clear error."""
    dtype = np.dtype(dtype).type
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype).name}")
    return dtype


class ForceField:
    """A sum of pair terms (3-D, half neighbour list) and system terms (full list when they ask)."""

    def __init__(self, terms):
        self.pair_terms = tuple(t for t in terms if isinstance(t, PairTerm))
        self.system_terms = tuple(t for t in terms if isinstance(t, SystemTerm))
        unknown = [t for t in terms if not isinstance(t, (PairTerm, SystemTerm))]
        if unknown:
            raise TypeError(f"force-field terms must be PairTerm or SystemTerm, got {type(unknown[0]).__name__}")
        cutoffs = [t.cutoff for t in self.pair_terms] + [t.neighbor_cutoff for t in self.system_terms]
        self.cutoff = max(cutoffs, default=0.0)
        self.half_list = not any(t.neighbor_cutoff > 0 for t in self.system_terms)
        self.conserves_momentum = not any(t.per_particle for t in self.system_terms)
        self.independent_particles = not self.pair_terms and all(t.per_particle for t in self.system_terms)

    def kernel_terms(self, dtype):
        """The tuples the Numba kernels take, params cast to dtype."""
        pairs = tuple((t.function, np.asarray(t.params, dtype), dtype(t.cutoff)) for t in self.pair_terms)
        systems = tuple((t.function, np.asarray(t.params, dtype)) for t in self.system_terms)
        return pairs, systems

    def energies_and_virials(self, frames, box):
        """Potential energy (S,) kJ/mol and virial W = sum f (x) r (S, 3, 3) kJ/mol of each frame
        (S, N, 3) nm in the orthorhombic box (3,) nm, by the MD kernels in float64."""
        frames = np.ascontiguousarray(frames, np.float64)
        energies, virials = np.empty(len(frames)), np.empty((len(frames), 3, 3))
        engine.frame_energies_and_virials(*self.kernel_terms(np.float64), frames, np.asarray(box, np.float64),
                                          float(self.cutoff), self.half_list, energies, virials)
        return energies, virials


# ----------------------------------------------------------------------------- integrators

@dataclasses.dataclass(frozen=True)
class Integrator:
    """An integrator as data both engines read (dt in ps).

    kind: the name of its halves in the engines ("verlet", "langevin", "nose_hoover"; the
    CUDA engine has one template per kind); halves: the CPU kernels (first_half,
    second_half) of `difftre.kernels.integrators`; PARAMS: the names of the kernels'
    params in order, `named_params` their values; conserves_momentum: False when a bath
    exchanges momentum with the particles; thermostat_size: length of the state's
    thermostat array.
    """
    dt: float
    kind: ClassVar[str]
    halves: ClassVar[tuple]
    PARAMS: ClassVar[tuple] = ()
    POSITIVE: ClassVar[tuple] = ("dt",)
    conserves_momentum: ClassVar[bool] = True
    thermostat_size: ClassVar[int] = 0

    def __post_init__(self):
        for name in self.POSITIVE:
            _positive(name, getattr(self, name))

    def named_params(self, dof, first_particle=0):
        """{name: value} of PARAMS for a system of `dof` degrees of freedom whose first particle has index
        first_particle (a chunk of a larger system keys the random stream by it)."""
        return {}

    def params(self, dof, dtype, first_particle=0):
        """The kernels' params array in PARAMS order, in dtype (one unused 0 when there are none: the GPU
        takes no empty arrays)."""
        named = self.named_params(dof, first_particle)
        return np.array([named[name] for name in self.PARAMS] or [0.0], dtype)


@dataclasses.dataclass(frozen=True)
class VelocityVerlet(Integrator):
    """NVE velocity Verlet; dt in ps."""
    kind: ClassVar[str] = "verlet"
    halves: ClassVar[tuple] = (integrators.verlet_first_half, integrators.verlet_second_half)


@dataclasses.dataclass(frozen=True)
class Langevin(Integrator):
    """Langevin BAOAB; dt in ps, kT in kJ/mol, friction in 1/ps."""
    kT: float
    friction: float
    kind: ClassVar[str] = "langevin"
    halves: ClassVar[tuple] = (integrators.baoab_first_half, integrators.baoab_second_half)
    PARAMS: ClassVar[tuple] = ("kT", "friction", "first_particle")
    POSITIVE: ClassVar[tuple] = ("dt", "kT", "friction")
    conserves_momentum: ClassVar[bool] = False

    def named_params(self, dof, first_particle=0):
        return dict(kT=self.kT, friction=self.friction, first_particle=first_particle)


@dataclasses.dataclass(frozen=True)
class NoseHooverChain(Integrator):
    """Nose-Hoover chain NVT; dt and tau in ps, kT in kJ/mol."""
    kT: float
    tau: float
    chain_length: int = 5
    n_substeps: int = 1
    kind: ClassVar[str] = "nose_hoover"
    halves: ClassVar[tuple] = (integrators.nose_hoover_first_half, integrators.nose_hoover_second_half)
    PARAMS: ClassVar[tuple] = ("kT", "dof", "tau", "n_substeps")
    POSITIVE: ClassVar[tuple] = ("dt", "kT", "tau")

    def __post_init__(self):
        super().__post_init__()
        if self.chain_length < 1 or self.n_substeps < 1:
            raise ValueError(f"chain_length and n_substeps must be >= 1, got {self.chain_length}, {self.n_substeps}")

    @property
    def thermostat_size(self):
        """The chain's positions and velocities."""
        return 2 * self.chain_length

    def named_params(self, dof, first_particle=0):
        return dict(kT=self.kT, dof=dof, tau=self.tau, n_substeps=self.n_substeps)


@dataclasses.dataclass(frozen=True)
class MonteCarloBarostat:
    """Isotropic Monte Carlo barostat of `Sampler` and `difftre.md_cuda.CudaSampler` (see `difftre.kernels.barostat`).

    With a thermostatted integrator (Langevin, NoseHooverChain; kT is the integrator's) the
    sampler samples the isothermal-isobaric ensemble p(V, x) ~ V^N exp(-(P V + U) / kT).
    pressure: P in kJ mol^-1 nm^-3 (``1.0 * md.BAR`` is 1 bar; in reduced units P sigma^3 /
    epsilon); interval: steps between volume moves; max_volume_change: the largest change
    of one move (nm^3; the change is uniform in +-max_volume_change), None: 1% of the box
    volume at the start of each run, per replica (then a trajectory depends on how it is split
    into runs; give a number for one that does not). Aim for an acceptance
    (`Trajectory.barostat_acceptance`) of roughly 0.2-0.5. Truncated pair potentials must
    be shifted to zero at the cut-off (``lennard_jones(..., shift=True)``): the volume
    moves use the energy, the MD the forces, and these must be of the same potential.
    """
    pressure: float
    interval: int = 25
    max_volume_change: float = None

    def __post_init__(self):
        if not (np.isfinite(self.pressure) and self.pressure >= 0):
            raise ValueError(f"pressure must be finite and non-negative (kJ mol^-1 nm^-3), got {self.pressure}")
        if int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"interval must be a positive integer (steps), got {self.interval}")
        if self.max_volume_change is not None:
            _positive("max_volume_change", self.max_volume_change)

    def params(self, kT, box, dtype):
        """The kernels' params [pressure, max_dV, kT, interval] in dtype for a run starting in `box`."""
        change = 0.01 * volume(box) if self.max_volume_change is None else self.max_volume_change
        return np.array([self.pressure, change, kT, self.interval], dtype)


# ----------------------------------------------------------------------------- state and trajectory

@dataclasses.dataclass
class MDState:
    """Everything a trajectory continues from. Arrays share one dtype."""
    positions: np.ndarray          # (N, dim) nm, unwrapped
    velocities: np.ndarray         # (N, dim) nm/ps
    masses: np.ndarray             # (N,) u
    box: np.ndarray                # (dim,) nm
    thermostat: np.ndarray         # Nose-Hoover chain [xi..., v_xi...] (empty otherwise)
    seed: int                      # random stream key
    step: int                      # global step counter (random stream position)
    dof: int                       # degrees of freedom for the thermostat and temperature
    nbr_idx: np.ndarray            # (N, capacity) int32
    nbr_count: np.ndarray          # (N,) int32
    reference_positions: np.ndarray  # positions at the last neighbour-list build


@dataclasses.dataclass
class Trajectory:
    """Recorded production states."""
    positions: np.ndarray          # (n_frames, N, dim) nm, unwrapped
    velocities: np.ndarray         # (n_frames, N, dim) nm/ps, or (0, N, dim) when not recorded
    potential_energy: np.ndarray   # (n_frames,) kJ/mol
    kinetic_energy: np.ndarray     # (n_frames,) kJ/mol
    virial: np.ndarray             # (n_frames, dim, dim) kJ/mol (W = sum f (x) r)
    box: np.ndarray                # (dim,) nm; with a barostat (n_frames, dim), the box of each frame
    n_neighbor_rebuilds: int = 0
    barostat_moves: np.ndarray = None  # barostat only: (attempted, accepted, refused) volume moves of the run
                                       # (equilibration included); refused: box edge <= 2 (cutoff + skin)

    @property
    def barostat_acceptance(self):
        """Fraction of the run's volume moves that were accepted (None without a barostat)."""
        if self.barostat_moves is None:
            return None
        attempted, accepted, _ = (int(c) for c in self.barostat_moves)
        return accepted / attempted if attempted else float("nan")


def dense_neighbor_list(nbr_idx, nbr_count):
    """The kernels' list as the dense format JAX models take: (N, capacity) int32 padded with N."""
    n, capacity = nbr_idx.shape
    dense = np.where(np.arange(capacity)[None, :] < nbr_count[:, None], nbr_idx, n).astype(np.int32)
    return dense


def full_neighbor_list(positions, box, cutoff):
    """Dense full neighbour list (both directions) of pairs closer than cutoff, built by the kernels."""
    positions = np.ascontiguousarray(positions, np.float64)
    n = positions.shape[0]
    nbr_idx, nbr_count = np.zeros((n, 16), np.int32), np.zeros(n, np.int32)
    nbr_idx = neighbors.build(positions, np.asarray(box, np.float64), float(cutoff), False, nbr_idx, nbr_count,
                              np.empty_like(positions))
    return dense_neighbor_list(nbr_idx, nbr_count)



# ----------------------------------------------------------------------------- samplers

@dataclasses.dataclass
class InitialArrays:
    """What `SamplerBase.initial_arrays` checked, per replica (leading axis R), in the sampler's dtype."""
    positions: np.ndarray    # (R, N, dim) nm
    velocities: np.ndarray   # (R, N, dim) nm/ps
    masses: np.ndarray       # (R, N) u
    box: np.ndarray          # (R, dim) nm
    seeds: np.ndarray        # (R,) uint64
    dof: int                 # degrees of freedom of one replica


class SamplerBase:
    """What every sampler shares: argument checks, degrees of freedom, the Maxwell-Boltzmann draw,
    state checks and error texts.

    A batched sampler (the GPU ones, `batched = True`) runs `replicas` systems at once; its
    states and errors carry a leading replica axis and name the replica. `Sampler` (CPU) runs
    one system (replicas = 1, no replica axis).
    """
    batched = False

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, max_step_displacement=None,
                 replicas=1, barostat=None):
        """barostat: a MonteCarloBarostat for constant pressure (None: constant volume); it needs a
        thermostatted integrator."""
        if not isinstance(integrator, Integrator):
            raise TypeError(f"integrator must be a difftre.md.Integrator (VelocityVerlet, Langevin, "
                            f"NoseHooverChain), got {type(integrator).__name__}")
        if force_field.cutoff > 0 and not skin > 0:
            raise ValueError(f"a force field with neighbour lists needs skin > 0 (nm), got {skin}")
        if int(replicas) != replicas or replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas}")
        self.force_field = force_field
        self.integrator = integrator
        self.dtype = check_dtype(dtype)
        self.skin = float(skin)
        self.replicas = int(replicas)
        self.max_step_displacement = max_step_displacement
        if barostat is not None:
            if not isinstance(barostat, MonteCarloBarostat):
                raise TypeError(f"barostat must be a difftre.md.MonteCarloBarostat, got {type(barostat).__name__}")
            if not hasattr(integrator, "kT"):
                raise ValueError(f"the Monte Carlo barostat needs a thermostatted integrator (Langevin or "
                                 f"NoseHooverChain), got {type(integrator).__name__}")
        self.barostat = barostat

    @property
    def list_cutoff(self):
        """Neighbour-list cut-off (nm): the force field's plus the skin, 0 without a list."""
        return self.force_field.cutoff + self.skin if self.force_field.cutoff > 0 else 0.0

    def step_limit(self, box):
        """Largest move (nm) of a particle in one step before the run counts as blown up."""
        if self.max_step_displacement is not None:
            return float(self.max_step_displacement)
        return self.skin if self.list_cutoff > 0 else 0.1 * float(np.min(box))

    def _where(self, replica):
        return f"replica {replica}: " if self.batched else ""

    def _per_replica(self, name, value, shape):
        """value of shape `shape` (shared by the replicas; a batched sampler also takes (R, *shape)) as an
        (R, *shape) array in dtype."""
        value = np.asarray(value, dtype=self.dtype)
        full = (self.replicas, *shape)
        if self.batched and value.shape == full:
            return value.copy()
        try:
            return np.broadcast_to(value, full).copy()
        except ValueError:
            either = f" or {full}" if self.batched else ""
            raise ValueError(f"{name} must have shape {tuple(shape)}{either}, got {value.shape}") from None

    def initial_arrays(self, positions, box, masses, seed, velocities=None, kT=None):
        """The checked arrays of new states (see InitialArrays); velocities Maxwell-Boltzmann at kT
        (default: the integrator's) unless given; seed an int (replica r gets seed + r) or R seeds."""
        dim_ok = np.ndim(positions) == 2 or (self.batched and np.ndim(positions) == 3)
        positions = np.asarray(positions)
        if not dim_ok or positions.shape[-1] not in (1, 2, 3):
            either = f" or ({self.replicas}, N, dim)" if self.batched else ""
            raise ValueError(f"positions must have shape (N, dim){either} with dim 1-3, got {positions.shape}")
        n, dim = positions.shape[-2:]
        positions = self._per_replica("positions", positions, (n, dim))
        bad = np.argwhere(~np.isfinite(positions))
        if bad.size:
            r, i = bad[0][:2]
            raise ValueError(f"{self._where(r)}position of particle {i} is not finite: {positions[r, i].tolist()}")
        box = self._per_replica("box", box, (dim,))
        for r in range(self.replicas):
            check_orthorhombic(box[r], dim, name=f"box of replica {r}" if self.batched else "box")
            if self.force_field.cutoff > 0:
                if dim != 3:
                    raise ValueError(f"pair and many-body kernels need 3-D positions, got dim {dim}")
                neighbors.check_box_for_cutoff(box[r], self.list_cutoff)
        masses = self._per_replica("masses", masses, (n,))
        bad = np.argwhere(~(np.isfinite(masses) & (masses > 0)))
        if bad.size:
            r, i = bad[0]
            raise ValueError(f"{self._where(r)}mass of particle {i} must be finite and positive, got {masses[r, i]}")
        seeds = np.broadcast_to(np.asarray(seed), (self.replicas,)) if np.ndim(seed) else int(seed) + np.arange(
            self.replicas)
        if np.any(np.asarray(seeds) < 0):
            raise ValueError(f"seeds must be non-negative, got {seed}")
        seeds = np.asarray(seeds).astype(np.uint64)
        conserves = self.force_field.conserves_momentum and self.integrator.conserves_momentum
        dof = dim * n - (dim if conserves else 0)
        if velocities is None:
            kT = _positive("kT", kT if kT is not None else getattr(self.integrator, "kT", np.nan))
            velocities = np.empty((self.replicas, n, dim))
            for r in range(self.replicas):
                drawn = np.random.default_rng(int(seeds[r])).normal(size=(n, dim)) * np.sqrt(kT / masses[r])[:, None]
                if conserves:
                    drawn -= (masses[r] @ drawn) / masses[r].sum()
                velocities[r] = drawn
        velocities = self._per_replica("velocities", velocities, (n, dim))
        bad = np.argwhere(~np.isfinite(velocities))
        if bad.size:
            r, i = bad[0][:2]
            raise ValueError(f"{self._where(r)}velocity of particle {i} is not finite: {velocities[r, i].tolist()}")
        return InitialArrays(positions, velocities, masses, box, seeds, dof)

    def _check_state(self, state):
        for name in ("positions", "velocities", "masses", "box", "thermostat", "reference_positions"):
            array = getattr(state, name)
            if array.dtype != self.dtype:
                raise TypeError(f"state.{name} is {array.dtype}, but this sampler runs in {np.dtype(self.dtype).name}")
        if self.batched and state.positions.shape[0] != self.replicas:
            raise ValueError(f"state has {state.positions.shape[0]} replicas, the sampler {self.replicas}")

    def _check_run(self, state, n_equilibration, n_frames, stride):
        self._check_state(state)
        if n_equilibration < 0 or n_frames < 0 or stride < 1:
            raise ValueError(f"need n_equilibration >= 0, n_frames >= 0, stride >= 1; got "
                             f"{n_equilibration}, {n_frames}, {stride}")
        last_step = int(np.max(state.step)) + int(n_equilibration) + int(n_frames) * int(stride)
        if last_step > MAX_STEP:
            raise ValueError(f"n_equilibration + n_frames * stride = {last_step - int(np.max(state.step))} steps "
                             f"from step {int(np.max(state.step))} would pass the engines' int64 step counter "
                             f"(at most {MAX_STEP})")

    @staticmethod
    def _check_recorded(frames, n_frames):
        """SimulationError unless all n_frames frames were written (their energies start as NaN and every
        recorded energy is finite), so no unwritten buffer is ever read."""
        written = int(np.count_nonzero(np.isfinite(frames.potential_energy)))
        if written != n_frames:
            raise SimulationError(f"the engine recorded {written} of {n_frames} frames; the trajectory is "
                                  f"incomplete and was not used", -1, -1)

    def _blow_up(self, step, particle, what, position, replica=0, failed_replicas=(0,), note=""):
        """The SimulationError of a run that failed at `step` with `particle` (and `replica`) at `position`:
        `what` happened to it (see blow_up_reason); note: what is left of the run."""
        message = f"{self._where(replica)}trajectory blew up at step {step}: particle {particle} {what} " \
                  f"(position {list(position)})"
        if self.batched:
            message += f"; {len(failed_replicas)} of {self.replicas} replicas failed"
        error = SimulationError(message + note, step, particle)
        if self.batched:
            error.replica = replica
            error.failed_replicas = list(failed_replicas)
        return error

    @staticmethod
    def blow_up_reason(code, limit):
        """What the engines' status code (STATUS_NONFINITE or STATUS_DISPLACEMENT) means; limit in nm."""
        return ("non-finite force or position" if code == engine.STATUS_NONFINITE
                else f"moved more than {limit:.4g} nm in one step")


def sampler(force_field, integrator, device="cpu", replicas=1, **options):
    """The one entry point to the samplers: device "cpu" gives a `Sampler` (one system, all in one
    compiled call), "cuda" a `difftre.md_cuda.CudaSampler` (``replicas`` independent copies in one
    launch; a force field whose only term is a JAX model runs host-stepped). Both share
    `SamplerBase` (checks, degrees of freedom, velocity draw, errors); ``options`` go to the class
    (skin, dtype, ...)."""
    if device == "cpu":
        if replicas != 1:
            raise ValueError(f"the CPU sampler runs one system (replicas=1), got replicas={replicas}; "
                             f"use device='cuda' for batched replicas")
        return Sampler(force_field, integrator, **options)
    if device == "cuda":
        from difftre import md_cuda
        return md_cuda.CudaSampler(force_field, integrator, replicas=replicas, **options)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def _align_for_jax(state):
    """Give ``state`` 64-byte aligned positions and box (fresh copies where they are not), which a JAX
    force term views without copying (difftre.bridge.as_jax); copy.deepcopy and a loaded checkpoint
    do not keep the sampler's alignment."""
    for name in ("positions", "box"):
        array = getattr(state, name)
        if array.ctypes.data % ALIGNMENT:
            setattr(state, name, aligned_copy(array, array.dtype))


class Sampler(SamplerBase):
    """Runs trajectories of one force field with one integrator inside compiled code (CPU)."""

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, max_step_displacement=None,
                 n_threads=None, barostat=None):
        """n_threads: threads for systems of independent particles (one-body terms only, no global
        thermostat, no barostat); the particles are split into chunks, and the trajectory does not depend
        on it. barostat: see SamplerBase."""
        super().__init__(force_field, integrator, skin, dtype, max_step_displacement, barostat=barostat)
        self.n_threads = numba.config.NUMBA_NUM_THREADS if n_threads is None else int(n_threads)

    def init_state(self, positions, box, masses, seed, velocities=None, kT=None):
        """A new state; velocities Maxwell-Boltzmann at kT (default: the integrator's) unless given."""
        dtype = self.dtype
        initial = self.initial_arrays(positions, box, masses, seed, velocities, kT)
        positions = aligned_copy(initial.positions[0], dtype)
        box = aligned_copy(initial.box[0], dtype)
        n = positions.shape[0]
        capacity = self._initial_capacity(n, box)
        state = MDState(positions, aligned_copy(initial.velocities[0], dtype), initial.masses[0], box,
                        np.zeros(self.integrator.thermostat_size, dtype), int(initial.seeds[0]), 0, initial.dof,
                        np.zeros((n, capacity), np.int32), np.zeros(n, np.int32), positions.copy())
        if self.list_cutoff > 0:
            state.nbr_idx = neighbors.build(positions, box, dtype(self.list_cutoff), self.force_field.half_list,
                                            state.nbr_idx, state.nbr_count, state.reference_positions)
        return state

    def _initial_capacity(self, n, box):
        if self.list_cutoff == 0:
            return 0
        density = n / float(np.prod(box))
        expected = 4.0 / 3.0 * np.pi * self.list_cutoff ** 3 * density
        return int(1.3 * expected * (0.5 if self.force_field.half_list else 1.0)) + 8

    def run(self, state, n_equilibration, n_frames, stride, record_velocities=False):
        """Advance `state` in place; return (Trajectory, state).

        Runs n_equilibration steps, then n_frames * stride steps recording the
        state after every stride-th step. Raises SimulationError (naming the
        step and the particle) on non-finite values or a blow-up.
        """
        self._check_run(state, n_equilibration, n_frames, stride)
        _align_for_jax(state)
        n = state.positions.shape[0]
        limit = self.step_limit(state.box)
        separable = (self.force_field.independent_particles and self.integrator.kind != "nose_hoover"
                     and self.barostat is None and self.n_threads > 1 and n >= 64 * self.n_threads)
        # chunk edges on multiples of 4 particles: the random stream is grouped in fours
        edges = np.unique(np.minimum(4 * np.round(np.linspace(0, n, self.n_threads + 1) / 4).astype(int), n)) \
            if separable else np.array([0, n])
        chunks = list(zip(edges[:-1], edges[1:]))

        def run_chunk(chunk):
            a, b = chunk
            return self._run_chunk(state, a, b, limit, n_equilibration, n_frames, stride, record_velocities)

        if len(chunks) == 1:
            results = [run_chunk(chunks[0])]
            frames = results[0][3]
        else:
            with concurrent.futures.ThreadPoolExecutor(len(chunks)) as pool:
                results = list(pool.map(run_chunk, chunks))
            frames = Trajectory(np.concatenate([r[3].positions for r in results], axis=1),
                                np.concatenate([r[3].velocities for r in results], axis=1),
                                sum(r[3].potential_energy for r in results), sum(r[3].kinetic_energy for r in results),
                                sum(r[3].virial for r in results), state.box.copy())
        failures = [(int(status[1]), int(status[2]) + a, int(status[0]))
                    for (a, _), (_, _, status, _) in zip(chunks, results) if status[0] != engine.STATUS_OK]
        nbr_idx, rebuilds = results[0][0], results[0][1]
        state.nbr_idx = nbr_idx
        frames.n_neighbor_rebuilds = int(rebuilds)
        if failures:
            step, particle, code = min(failures)
            raise self._blow_up(step, particle, self.blow_up_reason(code, limit), state.positions[particle].tolist())
        self._check_recorded(frames, n_frames)
        state.step += int(n_equilibration + n_frames * stride)
        return frames, state

    def _barostat_arguments(self, box, n):
        """The engine's (barostat_params, trial buffers) for a run of n particles starting in `box`: interval 0
        and empty buffers without a barostat; the trial positions, forces and box aligned as the state's
        (a JAX force term views them)."""
        dtype, dim = self.dtype, box.shape[0]
        if self.barostat is None:
            return (np.zeros(4, dtype), (np.empty((0, dim), dtype), np.empty((0, dim), dtype),
                                         np.empty((0, dim), dtype), np.empty(0, dtype), np.empty((0, 0), dtype)))
        return (self.barostat.params(self.integrator.kT, box, dtype),
                (aligned_empty((n, dim), dtype), aligned_empty((n, dim), dtype), np.empty((n, dim), dtype),
                 aligned_empty((dim,), dtype), np.empty((dim, dim), dtype)))

    def _run_chunk(self, state, a, b, limit, n_equilibration, n_frames, stride, record_velocities):
        """Run particles a:b of `state` in place (all of them unless the particles are independent)."""
        dtype = self.dtype
        n, dim = b - a, state.positions.shape[1]
        first, second = self.integrator.halves
        params = self.integrator.params(state.dof, dtype, first_particle=a)
        pairs, systems = self.force_field.kernel_terms(dtype)
        frames = Trajectory(np.empty((n_frames, n, dim), dtype),
                            np.empty((n_frames if record_velocities else 0, n, dim), dtype),
                            np.full(n_frames, np.nan, dtype), np.empty(n_frames, dtype),
                            np.empty((n_frames, dim, dim), dtype), state.box.copy())
        frame_box = np.empty((n_frames if self.barostat is not None else 0, dim), dtype)
        moves = np.zeros(3, np.int64)
        status = np.zeros(3, np.int64)
        nbr_idx, _, rebuilds = engine.run(
            pairs, systems, first, second, params, dtype(self.integrator.dt),
            state.positions[a:b], state.velocities[a:b], aligned_empty((n, dim), dtype),
            np.empty((dim, dim), dtype), 1.0 / state.masses[a:b], state.box, state.thermostat,
            np.uint64(state.seed), np.uint64(state.step), state.nbr_idx, state.nbr_count,
            state.reference_positions[a:b], aligned_empty((n, dim), dtype),
            dtype(self.list_cutoff), dtype(self.skin), self.force_field.half_list, dtype(limit),
            int(n_equilibration), int(n_frames), int(stride),
            frames.positions, frames.velocities, frames.potential_energy, frames.kinetic_energy, frames.virial,
            frame_box, status, *self._barostat_arguments(state.box, n), moves)
        if self.barostat is not None:
            frames.box, frames.barostat_moves = frame_box, moves
        return nbr_idx, rebuilds, status, frames
