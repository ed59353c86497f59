"""What a configuration asks of the numbers and of the machine, checked before any work starts.

The schema (``difftre.config``) checks each field alone; this module checks what several fields
make together, for every experiment the runner runs:

- the steps of a trajectory and of the whole run fit the engines' 64-bit step counter with margin
  (``sampling.n_equilibration + sampling.n_frames * sampling.stride``; an int64 wrap records no
  frame at all);
- the stored reference trajectory (frames x particles x dimensions, velocities, neighbour lists,
  per-state features) and the largest temporary array fit the available memory;
- every neighbour-list cut-off is below half the shortest box edge (minimum image).

An experiment reports what it needs as a ``Demand`` from its module's
``check_resources(config, source)``, where it also checks its own cross-field rules (the time
step against the system's fastest motion with ``check_time_step``, grids against the box).
Every refusal is a ``ConfigError`` (``ResourceError`` for memory) naming the fields and the rule.
"""
import dataclasses
import math
import os

from difftre.config import ConfigError, refuse

MAX_STEPS = 2 ** 62                 # the engines count steps in (u)int64: a factor 2 (and more) of margin
BYTES_PER_INDEX = 4                 # neighbour lists are int32
COPIES_OF_STORED_FRAMES = 3         # the sampler's buffers, the stored states, the checkpoint's arrays
PERIOD_FRACTION = 1.0 / 20.0        # dt at most 1/20 of the fastest oscillation's period
THERMAL_SPEED_SIGMAS = 5.0          # a particle's speed is below 5 thermal standard deviations


class ResourceError(ConfigError):
    """A configuration needs more memory than the machine has available."""


@dataclasses.dataclass(frozen=True)
class Demand:
    """What one configuration needs, as an experiment's ``check_resources`` reports it.

    n_particles, box: the system (box edges in the configuration's length unit); particles_field: the
    field that sets n_particles (named when memory runs short); list_cutoffs:
    {what sets it: cut-off} of the neighbour lists stored with every state (each must be below half
    the shortest box edge); values_per_state: floats of per-state features kept for the loss;
    working_bytes and working_fields: the largest temporary array of one chunk and the fields that
    set its size.
    """
    n_particles: int
    box: tuple
    particles_field: str
    list_cutoffs: dict = dataclasses.field(default_factory=dict)
    values_per_state: int = 0
    working_bytes: int = 0
    working_fields: str = ""


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable, or free pages)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n_bytes):
    """``n_bytes`` as text in GiB."""
    return f"{n_bytes / 2 ** 30:.3g} GiB"


def steps_per_trajectory(sampling):
    """n_equilibration + n_frames * stride of a sampling section (exact, Python integers)."""
    return sampling["n_equilibration"] + sampling["n_frames"] * sampling["stride"]


def neighbor_capacity(cutoff, n_particles, box):
    """Neighbours per particle within ``cutoff`` at the mean density, with the engines' 30 % headroom."""
    volume = math.prod(box)
    ball = {1: 2 * cutoff, 2: math.pi * cutoff ** 2, 3: 4.0 / 3.0 * math.pi * cutoff ** 3}[len(box)]
    return int(1.3 * ball * n_particles / volume) + 8


def memory_needed(config, demand):
    """{what: bytes} of the stored reference trajectory and the largest temporary array."""
    sampling = config["sampling"]
    n_frames, n = sampling["n_frames"] * sampling.get("replicas", 1), demand.n_particles   # all replicas' states
    itemsize = 4 if sampling["dtype"] == "float32" else 8
    needed = {"frames": COPIES_OF_STORED_FRAMES * n_frames * n * len(demand.box) * itemsize,
              "neighbour lists": sum(n_frames * n * neighbor_capacity(c, n, demand.box) * BYTES_PER_INDEX
                                     for c in demand.list_cutoffs.values()),
              "per-state features": n_frames * demand.values_per_state * 8,
              "temporaries": demand.working_bytes}
    return needed


def check(config, demand, source):
    """The generic checks of a validated configuration and its experiment's Demand (see the module)."""
    sampling, n_updates = config["sampling"], config["training"]["n_updates"]
    steps = steps_per_trajectory(sampling)
    trajectories = n_updates + 1
    if steps * trajectories > MAX_STEPS:
        raise ConfigError(
            f"{source}: sampling.n_equilibration + sampling.n_frames x sampling.stride = {steps} steps per "
            f"trajectory, over training.n_updates + 1 = {trajectories} trajectories, must be at most "
            f"2^62 = {MAX_STEPS} steps in all (the engines' 64-bit step counter)")
    shortest = min(demand.box)
    for what, cutoff in demand.list_cutoffs.items():
        if not 2 * cutoff < shortest:
            raise ConfigError(f"{source}: {what} = {cutoff:g} must be below half the shortest box edge "
                              f"({shortest:g} / 2, minimum image)")
    needed = memory_needed(config, demand)
    total, available = sum(needed.values()), available_memory()
    if total > available:
        parts = ", ".join(f"{what} {gib(size)}" for what, size in needed.items() if size)
        fields = ", ".join(filter(None, ("sampling.n_frames", "sampling.replicas", demand.particles_field, demand.working_fields)))
        raise ResourceError(f"{source}: the configuration needs {gib(total)} ({total} bytes: {parts}) and must "
                            f"fit the {gib(available)} available; lower {fields}")


def time_step_limit(mass, kT, stiffness, max_displacement):
    """Largest time step that resolves the fastest motion: 1/20 of the period 2 pi sqrt(mass / stiffness)
    of the stiffest oscillation, and a particle at 5 thermal standard deviations of speed
    (sqrt(kT / mass)) moving at most ``max_displacement`` per step (the engines' blow-up limit)."""
    oscillation = PERIOD_FRACTION * 2 * math.pi * math.sqrt(mass / stiffness)
    thermal = max_displacement / (THERMAL_SPEED_SIGMAS * math.sqrt(kT / mass))
    return min(oscillation, thermal)


def check_time_step(source, dt, mass, kT, stiffness, max_displacement, fields):
    """Refuse sampling.dt above ``time_step_limit`` (``fields`` names what set the limit)."""
    limit = time_step_limit(mass, kT, stiffness, max_displacement)
    if not dt <= limit:
        raise refuse(source, "sampling.dt", dt, f"in (0, {limit:.3g}] for {fields} (1/20 of the fastest "
                                                f"oscillation's period and no particle moving more than "
                                                f"{max_displacement:.3g} per step)")
