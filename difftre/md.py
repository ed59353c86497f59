"""MD front end: force fields, integrators, state and the sampler over the Numba kernels.

    ff = ForceField([lennard_jones(eps=1.0, sigma=1.0, cutoff=2.5)])
    sampler = Sampler(ff, Langevin(dt=0.005, kT=1.0, friction=1.0), skin=0.3)
    state = sampler.init_state(positions, box, masses=1.0, seed=0)
    trajectory, state = sampler.run(state, n_equilibration=1000, n_frames=100, stride=10)

The state carries everything a continuation needs (positions, velocities,
thermostat variables, the random stream's seed and step counter, the neighbour
list), so the next `run` continues the same trajectory. Units: nm, ps, u, kJ/mol
(or reduced units, consistently).
"""
import concurrent.futures
import dataclasses
from typing import Callable

import numba
import numpy as np

from difftre.kernels import external, integrators, manybody, neighbors, pair, sampler as engine
from difftre.kernels.buffers import aligned_copy, aligned_empty
from difftre.kernels.space import check_orthorhombic
from difftre.kernels.spline import pack_spline_table

BOLTZMANN = 0.0083144626  # kJ/(mol K)
DTYPES = (np.float32, np.float64)


class SimulationError(RuntimeError):
    """A trajectory stopped being physical (non-finite values or a blow-up)."""

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


def _positive(name, value):
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and positive, got {value}")
    return float(value)


# ----------------------------------------------------------------------------- force-field terms

@dataclasses.dataclass(frozen=True)
class PairTerm:
    """A pair potential: numba pair function (r2, params) -> (u, f_over_r), its params and cut-off (nm)."""
    function: Callable
    params: np.ndarray
    cutoff: float


@dataclasses.dataclass(frozen=True)
class SystemTerm:
    """A whole-system (many-body or external) numba function and its params.

    neighbor_cutoff > 0 asks for a full neighbour list covering that distance (nm);
    keep_alive holds whatever the function needs alive (a JAX callback of difftre.bridge).
    per_particle marks one-body terms (each particle's force depends on itself only).
    """
    function: Callable
    params: np.ndarray
    neighbor_cutoff: float = 0.0
    per_particle: bool = False
    keep_alive: object = dataclasses.field(default=None, compare=False, repr=False)


def lennard_jones(eps, sigma, cutoff, shifted=False):
    """Lennard-Jones 4 eps [(s/r)^12 - (s/r)^6], truncated at cutoff (and shifted to 0 there if asked)."""
    eps, sigma, cutoff = _positive("eps", eps), _positive("sigma", sigma), _positive("cutoff", cutoff)
    if shifted:
        return PairTerm(pair.lennard_jones_shifted,
                        np.array([eps, sigma, pair.lennard_jones_shift(eps, sigma, cutoff)]), cutoff)
    return PairTerm(pair.lennard_jones, np.array([eps, sigma]), cutoff)


def repulsive(eps, sigma, cutoff, exponent=12.0):
    """eps (sigma/r)^exponent for r < cutoff (the coarse-grained water prior)."""
    return PairTerm(pair.repulsive_power, np.array([_positive("eps", eps), _positive("sigma", sigma),
                                                    _positive("exponent", exponent)]), _positive("cutoff", cutoff))


def tabulated_pair(x0, h, coefficients):
    """Cubic spline pair table (models' export format); the cut-off is its last knot."""
    coefficients = np.asarray(coefficients)
    return PairTerm(pair.tabulated, pack_spline_table(x0, h, coefficients), x0 + h * coefficients.shape[0])


def stillinger_weber(epsilon, sigma, **constants):
    """Stillinger-Weber (silicon constants unless overridden); cut-off a * sigma."""
    params = manybody.stillinger_weber_params(epsilon, sigma, **constants)
    return SystemTerm(manybody.stillinger_weber, params, float(params[6] * params[1]))


def harmonic(k, center):
    """External 0.5 k |x - center|^2 on wrapped coordinates (k in kJ/mol/nm^2)."""
    return SystemTerm(external.harmonic, np.concatenate([[_positive("k", k)], np.atleast_1d(center)]),
                      per_particle=True)


def external_spline(x0, h, coefficients):
    """External 1-D cubic spline table on the wrapped coordinate."""
    return SystemTerm(external.spline_1d, pack_spline_table(x0, h, coefficients), per_particle=True)


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


# ----------------------------------------------------------------------------- integrators

@dataclasses.dataclass(frozen=True)
class VelocityVerlet:
    """NVE velocity Verlet; dt in ps."""
    dt: float

    def __post_init__(self):
        _positive("dt", self.dt)

    def kernel(self, dof, dtype, first_particle=0):
        return integrators.verlet_first_half, integrators.verlet_second_half, np.zeros(1, dtype)


@dataclasses.dataclass(frozen=True)
class Langevin:
    """Langevin BAOAB; dt in ps, kT in kJ/mol, friction in 1/ps."""
    dt: float
    kT: float
    friction: float

    def __post_init__(self):
        for name in ("dt", "kT", "friction"):
            _positive(name, getattr(self, name))

    def kernel(self, dof, dtype, first_particle=0):
        params = np.array([self.kT, self.friction, first_particle], dtype)
        return integrators.baoab_first_half, integrators.baoab_second_half, params


@dataclasses.dataclass(frozen=True)
class NoseHooverChain:
    """Nose-Hoover chain NVT; dt and tau in ps, kT in kJ/mol."""
    dt: float
    kT: float
    tau: float
    chain_length: int = 5
    n_substeps: int = 1

    def __post_init__(self):
        for name in ("dt", "kT", "tau"):
            _positive(name, getattr(self, name))
        if self.chain_length < 1 or self.n_substeps < 1:
            raise ValueError(f"chain_length and n_substeps must be >= 1, got {self.chain_length}, {self.n_substeps}")

    def kernel(self, dof, dtype, first_particle=0):
        params = np.array([self.kT, dof, self.tau, self.n_substeps], dtype)
        return integrators.nose_hoover_first_half, integrators.nose_hoover_second_half, params


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
    box: np.ndarray
    n_neighbor_rebuilds: int = 0


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


class Sampler:
    """Runs trajectories of one force field with one integrator inside compiled code."""

    def __init__(self, force_field, integrator, skin=0.0, dtype=np.float64, max_step_displacement=None,
                 n_threads=None):
        """n_threads: threads for systems of independent particles (one-body terms only, no global
        thermostat); the particles are split into chunks, and the trajectory does not depend on it."""
        self.force_field = force_field
        self.integrator = integrator
        self.dtype = check_dtype(dtype)
        if force_field.cutoff > 0 and not skin > 0:
            raise ValueError(f"a force field with neighbour lists needs skin > 0 (nm), got {skin}")
        self.skin = float(skin)
        self.max_step_displacement = max_step_displacement
        self.n_threads = numba.config.NUMBA_NUM_THREADS if n_threads is None else int(n_threads)

    @property
    def list_cutoff(self):
        return self.force_field.cutoff + self.skin if self.force_field.cutoff > 0 else 0.0

    def init_state(self, positions, box, masses, seed, velocities=None, kT=None):
        """A new state; velocities Maxwell-Boltzmann at kT (default: the integrator's) unless given."""
        dtype = self.dtype
        positions = np.array(positions, dtype=dtype)
        if positions.ndim != 2 or positions.shape[1] not in (1, 2, 3):
            raise ValueError(f"positions must have shape (N, dim) with dim 1-3, got {positions.shape}")
        n, dim = positions.shape
        bad = np.argwhere(~np.isfinite(positions))
        if bad.size:
            raise ValueError(f"position of particle {bad[0][0]} is not finite: {positions[bad[0][0]].tolist()}")
        box = check_orthorhombic(aligned_copy(np.asarray(box, dtype=dtype), dtype), dim)
        if self.force_field.cutoff > 0:
            if dim != 3:
                raise ValueError(f"pair and many-body kernels need 3-D positions, got dim {dim}")
            neighbors.check_box_for_cutoff(box, self.list_cutoff)
        masses = np.broadcast_to(np.asarray(masses, dtype=dtype), (n,)).copy()
        bad = np.flatnonzero(~(np.isfinite(masses) & (masses > 0)))
        if bad.size:
            raise ValueError(f"mass of particle {bad[0]} must be finite and positive, got {masses[bad[0]]}")
        conserves = self.force_field.conserves_momentum and not isinstance(self.integrator, Langevin)
        dof = dim * n - (dim if conserves else 0)
        if velocities is None:
            kT = _positive("kT", kT if kT is not None else getattr(self.integrator, "kT", np.nan))
            rng = np.random.default_rng(seed)
            velocities = rng.normal(size=(n, dim)) * np.sqrt(kT / masses)[:, None]
            if conserves:
                velocities -= (masses @ velocities) / masses.sum()
        positions = aligned_copy(positions, dtype)
        velocities = aligned_copy(velocities, dtype)
        if velocities.shape != positions.shape or not np.all(np.isfinite(velocities)):
            raise ValueError(f"velocities must be finite with shape {positions.shape}")
        chain = getattr(self.integrator, "chain_length", 0)
        thermostat = np.zeros(2 * chain, dtype)
        capacity = self._initial_capacity(n, box)
        state = MDState(positions, velocities, masses, box, thermostat, int(seed), 0, dof,
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

    def _check_state(self, state):
        for name in ("positions", "velocities", "masses", "box", "thermostat", "reference_positions"):
            array = getattr(state, name)
            if array.dtype != self.dtype:
                raise TypeError(f"state.{name} is {array.dtype}, but this sampler runs in {np.dtype(self.dtype).name}")

    def run(self, state, n_equilibration, n_frames, stride, record_velocities=False):
        """Advance `state` in place; return (Trajectory, state).

        Runs n_equilibration steps, then n_frames * stride steps recording the
        state after every stride-th step. Raises SimulationError (naming the
        step and the particle) on non-finite values or a blow-up.
        """
        self._check_state(state)
        if n_equilibration < 0 or n_frames < 0 or stride < 1:
            raise ValueError(f"need n_equilibration >= 0, n_frames >= 0, stride >= 1; got "
                             f"{n_equilibration}, {n_frames}, {stride}")
        dtype = self.dtype
        n, dim = state.positions.shape
        limit = self.max_step_displacement
        if limit is None:
            limit = self.skin if self.list_cutoff > 0 else 0.1 * float(np.min(state.box))
        separable = (self.force_field.independent_particles and not isinstance(self.integrator, NoseHooverChain)
                     and self.n_threads > 1 and n >= 64 * self.n_threads)
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
            what = ("non-finite force or position" if code == engine.STATUS_NONFINITE
                    else f"moved more than {limit:.4g} nm in one step")
            raise SimulationError(f"trajectory blew up at step {step}: particle {particle} {what} "
                                  f"(position {state.positions[particle].tolist()})", step, particle)
        state.step += int(n_equilibration + n_frames * stride)
        return frames, state

    def _run_chunk(self, state, a, b, limit, n_equilibration, n_frames, stride, record_velocities):
        """Run particles a:b of `state` in place (all of them unless the particles are independent)."""
        dtype = self.dtype
        n, dim = b - a, state.positions.shape[1]
        first, second, params = self.integrator.kernel(state.dof, dtype, first_particle=a)
        pairs, systems = self.force_field.kernel_terms(dtype)
        frames = Trajectory(np.empty((n_frames, n, dim), dtype),
                            np.empty((n_frames if record_velocities else 0, n, dim), dtype),
                            np.empty(n_frames, dtype), np.empty(n_frames, dtype),
                            np.empty((n_frames, dim, dim), dtype), state.box.copy())
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
            status)
        return nbr_idx, rebuilds, status, frames
