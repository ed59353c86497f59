"""MD steps per second: the same system run by difftre, JAX MD or LAMMPS (``difftre bench md``).

Used by ``difftre bench md`` (`difftre.cli`) and by the pytest-benchmark suite
in ``bench/``. Every engine starts from the same state: a lattice, melted or
thermalised by a short difftre run (``equilibration`` steps, not timed), so
that neighbour-list rebuild rates are those of the liquid (LJ) or the hot
crystal (SW) and not of the perfect lattice.

Systems
-------
``lj``  Lennard-Jones liquid in reduced units (sigma = eps = m = 1):
        rho* = 0.8442, cut-off 2.5 (truncated, not shifted), skin 0.3, velocity
        Verlet NVE, dt = 0.005, T* = 0.72. Lattice: fcc when N = 4 n^3, simple cubic when N = n^3, and
        otherwise the smaller of the two lattices with at least N sites, N of
        its sites taken evenly spread (np.linspace over the site index); the box
        is always (N / rho*)^(1/3), so the density is exact.
``sw``  Stillinger-Weber diamond silicon in nm/ps/u/kJ/mol: eps = 2.1683 eV =
        209.2 kJ/mol, sigma = 0.20951 nm, a = 0.5431 nm, m = 28.0855 u, dt = 1 fs,
        skin 0.03 nm, T = 300 K. N must be 8 n^3 (n^3 cubic cells).

Velocities are drawn at the target temperature on the lattice; the
equilibration (difftre, float64) is Langevin at that temperature (friction
1/tau for LJ, 5/ps for SW), so every engine's NVE run starts near the target
temperature whatever the lattice's potential energy.

Timing: steps_per_second = replicas * steps / wall seconds of the timed run
(every replica's steps count), atom_steps_per_second = N times that. The
timed run follows a warm-up run; the first-call time (Numba compile or cache
load, XLA compile, LAMMPS set-up) is reported as compile_seconds.
"""
import dataclasses
import datetime
import time

import numpy as np

from difftre import systems
from difftre.benchmarks import BenchmarkUnavailable, machine_info

POTENTIALS = ("lj", "sw")
DEVICES = ("cpu", "cuda")
ENGINES = ("difftre", "jaxmd", "lammps")
DTYPES = {"float32": np.float32, "float64": np.float64}

# Lennard-Jones (reduced units)
LJ_DENSITY = 0.8442
LJ_CUTOFF = 2.5
LJ_SKIN = 0.3
LJ_DT = 0.005
LJ_TEMPERATURE = 0.72          # kT*
LJ_FRICTION = 1.0              # 1/tau, equilibration only

# Stillinger-Weber silicon (nm, ps, u, kJ/mol)
SW_EPSILON = 209.2             # kJ/mol (= 2.1683 eV)
SW_SIGMA = 0.20951             # nm
SW_LATTICE = 0.5431            # nm
SW_MASS = 28.0855              # u
SW_DT = 0.001                  # ps
SW_SKIN = 0.03                 # nm
SW_TEMPERATURE = 300.0         # K
SW_A = 1.8                     # cut-off a * sigma
SW_FRICTION = 5.0              # 1/ps, equilibration only
BOLTZMANN = 0.0083144626       # kJ/(mol K)

DEFAULT_EQUILIBRATION = 1000


@dataclasses.dataclass
class MDSystem:
    """One benchmark system; arrays are float64, positions unwrapped inside [0, L) at creation."""
    potential: str
    positions: np.ndarray     # (N, 3)
    velocities: np.ndarray    # (N, 3)
    box: np.ndarray           # (3,)
    mass: float
    dt: float
    cutoff: float
    skin: float
    kT: float                 # target kT (reduced for lj, kJ/mol for sw)
    friction: float           # Langevin friction of the equilibration (1/time)
    lattice: str
    units: str

    @property
    def n(self):
        return self.positions.shape[0]

    def temperature(self, velocities=None):
        """Kinetic temperature in the system's units (kT* for lj, K for sw), 3N - 3 degrees of freedom."""
        kT = float(systems.temperature(self.velocities if velocities is None else velocities, self.mass,
                                       3 * self.n - 3))
        return kT if self.potential == "lj" else kT / BOLTZMANN


def lj_system(n, seed=0):
    """The LJ liquid of N atoms (before equilibration)."""
    if n < 2:
        raise ValueError(f"--n: the LJ system needs at least 2 atoms, got {n}")
    positions, box, lattice = systems.lattice_start(n, LJ_DENSITY)
    length = box[0]
    if length <= 2 * (LJ_CUTOFF + LJ_SKIN):
        smallest = int(np.ceil(LJ_DENSITY * (2 * (LJ_CUTOFF + LJ_SKIN)) ** 3 + 1e-9))
        raise ValueError(f"--n: the LJ box for N={n} is {length:.3g} sigma, shorter than 2 (cut-off + skin) = "
                         f"{2 * (LJ_CUTOFF + LJ_SKIN):.3g} sigma; use N >= {smallest}")
    velocities = systems.maxwell_boltzmann_velocities(np.ones(n), LJ_TEMPERATURE, seed)
    return MDSystem("lj", positions, velocities, box, 1.0, LJ_DT, LJ_CUTOFF, LJ_SKIN, LJ_TEMPERATURE, LJ_FRICTION,
                    lattice, "reduced LJ (sigma = eps = m = 1)")


def sw_system(n, seed=0):
    """Diamond silicon of N = 8 n^3 atoms (before equilibration)."""
    cells = int(round((n / 8) ** (1 / 3)))
    if n < 1 or 8 * cells ** 3 != n:
        lower, upper = max(cells - 1, 1), cells + 1
        options = sorted({8 * c ** 3 for c in (lower, cells, upper) if c >= 1})
        raise ValueError(f"--n: the SW diamond lattice has N = 8 n^3 atoms; {n} is not of that form "
                         f"(nearby: {', '.join(map(str, options))})")
    positions, box = systems.diamond_lattice(cells, SW_LATTICE)
    if box[0] <= 2 * (SW_A * SW_SIGMA + SW_SKIN):
        raise ValueError(f"--n: SW N={n} gives a {box[0]:.3g} nm box, shorter than 2 (cut-off + skin); use N >= 64")
    kT = BOLTZMANN * SW_TEMPERATURE
    velocities = systems.maxwell_boltzmann_velocities(np.full(n, SW_MASS), kT, seed)
    return MDSystem("sw", positions, velocities, box, SW_MASS, SW_DT,
                    SW_A * SW_SIGMA, SW_SKIN, kT, SW_FRICTION, f"diamond {cells}x{cells}x{cells} cells",
                    "nm, ps, u, kJ/mol")


def make_system(potential, n, seed=0):
    if potential == "lj":
        return lj_system(n, seed)
    if potential == "sw":
        return sw_system(n, seed)
    raise ValueError(f"--potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")


# ----------------------------------------------------------------------------- difftre (CPU and CUDA)

def difftre_force_field(potential):
    from difftre import md
    if potential == "lj":
        return md.ForceField([md.lennard_jones(1.0, 1.0, LJ_CUTOFF)])
    return md.ForceField([md.stillinger_weber(SW_EPSILON, SW_SIGMA)])


def difftre_sampler(system, dtype=np.float64):
    from difftre import md
    return md.Sampler(difftre_force_field(system.potential), md.VelocityVerlet(dt=system.dt),
                      skin=system.skin, dtype=dtype)


_EQUILIBRATED = {}


def equilibrate(system, steps, seed=0):
    """Run `steps` difftre float64 Langevin steps at the target kT; return the new system (memoised)."""
    from difftre import md
    key = (system.potential, system.n, steps, seed)
    if key in _EQUILIBRATED:
        return _EQUILIBRATED[key]
    if steps > 0:
        sampler = md.Sampler(difftre_force_field(system.potential),
                             md.Langevin(dt=system.dt, kT=system.kT, friction=system.friction), skin=system.skin)
        state = sampler.init_state(system.positions, system.box, system.mass, seed, velocities=system.velocities)
        sampler.run(state, n_equilibration=steps, n_frames=0, stride=1)
        positions = state.positions - system.box * np.floor(state.positions / system.box)
        system = dataclasses.replace(system, positions=positions, velocities=state.velocities.copy())
    _EQUILIBRATED[key] = system
    return system


class DifftreRunner:
    """difftre's CPU sampler on one system; `run(steps)` continues the trajectory."""
    engine = "difftre"

    def __init__(self, system, dtype=np.float64, replicas=1, seed=0):
        self.system = system
        self.dtype = dtype
        self.sampler = difftre_sampler(system, dtype)
        self.states = [self.sampler.init_state(system.positions, system.box, system.mass, seed + r,
                                               velocities=system.velocities) for r in range(replicas)]
        self.neighbor_rebuilds = 0

    def run(self, steps):
        self.neighbor_rebuilds = 0
        for state in self.states:
            frames, _ = self.sampler.run(state, n_equilibration=steps, n_frames=0, stride=1)
            self.neighbor_rebuilds += frames.n_neighbor_rebuilds

    def velocities(self):
        return np.asarray(self.states[0].velocities, np.float64)


def _unavailable(error):
    text = " ".join(str(error).split()).rstrip(" :")   # numba's CUDA errors span several lines
    return BenchmarkUnavailable(f"CUDA front end not available: {type(error).__name__}: {text}")


class CudaRunner:
    """difftre's CUDA front end: ``difftre.md_cuda.CudaSampler(force_field, integrator, skin=, dtype=,
    replicas=)``, the CPU sampler's twin with a leading replica axis (all replicas in one launch)."""
    engine = "difftre"

    def __init__(self, system, dtype=np.float64, replicas=1, seed=0):
        try:
            from difftre import md, md_cuda
        except Exception as error:  # noqa: BLE001 - any import failure means the front end is unusable
            raise _unavailable(error) from None
        sampler_class = getattr(md_cuda, "CudaSampler", None) or getattr(md_cuda, "Sampler", None)
        if sampler_class is None:
            raise BenchmarkUnavailable("CUDA front end not available: difftre.md_cuda has no CudaSampler")
        self.system = system
        try:
            self.sampler = sampler_class(difftre_force_field(system.potential), md.VelocityVerlet(dt=system.dt),
                                         skin=system.skin, dtype=dtype, replicas=replicas)
            self.state = self.sampler.init_state(system.positions, system.box, system.mass, seed,
                                                 velocities=system.velocities)
        except Exception as error:  # noqa: BLE001 - no GPU, no driver, no numba-cuda ...
            raise _unavailable(error) from None
        self.neighbor_rebuilds = 0

    def run(self, steps):
        frames, self.state = self.sampler.run(self.state, n_equilibration=steps, n_frames=0, stride=1)
        self.neighbor_rebuilds = int(np.sum(getattr(frames, "n_neighbor_rebuilds", 0)))

    def velocities(self):
        v = np.asarray(self.state.velocities, np.float64)
        return v.reshape(-1, self.system.n, 3)[0]


def make_runner(engine, system, dtype=np.float64, device="cpu", replicas=1, seed=0, chunk=None):
    """A runner of `engine` on `system`: `run(steps)` continues its trajectory, `velocities()` reads it."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "difftre":
        return (CudaRunner if device == "cuda" else DifftreRunner)(system, dtype, replicas, seed)
    if dtype is not np.float64:
        raise ValueError(f"--dtype: the {engine} peer runs in float64 only, got {np.dtype(dtype).name}")
    if device != "cpu":
        raise ValueError(f"--device: the {engine} peer runs on the CPU only, got {device}")
    if replicas != 1:
        raise ValueError(f"--replicas: the {engine} peer runs one replica, got {replicas}")
    from difftre.benchmarks import peers
    if engine == "jaxmd":
        return peers.JaxMDRunner(system, chunk=chunk or 100, seed=seed)
    return peers.LammpsRunner(system)


def describe(system, engine, steps, dtype, device, replicas):
    """The parts of the JSON that do not depend on the timing."""
    return {"engine": engine, "potential": system.potential, "n": system.n, "replicas": replicas,
            "steps": steps, "dtype": np.dtype(dtype).name, "device": device, "dt": system.dt,
            "cutoff": system.cutoff, "skin": system.skin, "box": float(system.box[0]),
            "density": system.n / float(np.prod(system.box)), "lattice": system.lattice, "units": system.units}


def bench_md(potential="lj", n=1000, steps=1000, dtype="float64", device="cpu", replicas=1, engine="difftre",
             equilibration=DEFAULT_EQUILIBRATION, warmup=None, seed=0, chunk=None):
    """Run one benchmark; return the JSON-ready dict (see the module doc)."""
    if potential not in POTENTIALS:
        raise ValueError(f"--potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be float32 or float64, got {dtype!r}")
        dtype = DTYPES[dtype]
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {replicas}")
    if equilibration < 0:
        raise ValueError(f"--equilibration must be >= 0, got {equilibration}")
    if engine == "jaxmd":
        chunk = chunk or min(steps, 100)
        if steps % chunk:
            raise ValueError(f"--steps: JAX MD runs jit-compiled chunks of {chunk} steps; {steps} is not a "
                             f"multiple (set --chunk)")
    warmup = (chunk if engine == "jaxmd" else min(steps, 100)) if warmup is None else warmup
    system = make_system(potential, n, seed)
    result = describe(system, engine, steps, dtype, device, replicas)
    result["machine"] = machine_info()
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    start = time.perf_counter()
    if engine == "difftre" and device == "cpu":
        # first call on the lattice: Numba compile (or cache load) of this dtype's loop, plus one step
        sampler = difftre_sampler(system, dtype)
        state = sampler.init_state(system.positions, system.box, system.mass, seed, velocities=system.velocities)
        sampler.run(state, n_equilibration=1, n_frames=0, stride=1)
        compile_seconds = time.perf_counter() - start
        system = equilibrate(system, equilibration, seed)
        runner = make_runner(engine, system, dtype, device, replicas, seed, chunk)
    else:
        system = equilibrate(system, equilibration, seed)
        start = time.perf_counter()
        runner = make_runner(engine, system, dtype, device, replicas, seed, chunk)
        runner.run(chunk if engine == "jaxmd" else 1)       # compile / set-up
        compile_seconds = time.perf_counter() - start
    result["equilibration_steps"] = equilibration
    result["warmup_steps"] = warmup
    if warmup:
        runner.run(warmup)
    start = time.perf_counter()
    runner.run(steps)
    wall = time.perf_counter() - start
    result.update(timing(system, steps, replicas, wall))
    result["compile_seconds"] = compile_seconds
    result["neighbor_rebuilds"] = runner.neighbor_rebuilds
    result["temperature"] = system.temperature(runner.velocities())
    result["temperature_units"] = "kT*" if potential == "lj" else "K"
    if hasattr(runner, "close"):
        runner.close()
    return result


def timing(system, steps, replicas, wall):
    per_second = replicas * steps / wall
    return {"wall_seconds": wall, "steps_per_second": per_second, "atom_steps_per_second": per_second * system.n}
