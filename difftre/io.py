"""Trajectory files through ASE (extended XYZ; also any format ASE writes, chosen by the suffix).

Extended XYZ keeps the periodic cell, positions, velocities and per-frame
energies, and is read by OVITO, VMD, ASE and MDAnalysis. Positions are written
in Angstrom (the format's unit) converted from nm; 1-D and 2-D systems are
padded with zero coordinates.
"""
import numpy as np

NM_TO_ANGSTROM = 10.0


def write_trajectory(path, trajectory, symbol="X", length_unit=NM_TO_ANGSTROM):
    """Write an md.Trajectory (positions (n_frames, N, dim) in nm) to `path`; returns the frame count."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    positions = np.asarray(trajectory.positions, np.float64)
    n_frames, n, dim = positions.shape
    if n_frames == 0:
        raise ValueError(f"{path}: the trajectory has no frames to write")
    pad = lambda a: np.concatenate([a, np.zeros(a.shape[:-1] + (3 - dim,))], axis=-1)
    cell = np.diag(pad(np.asarray(trajectory.box, np.float64)[None])[0] * length_unit)
    frames = []
    for f in range(n_frames):
        atoms = Atoms(symbol * n if len(symbol) == 1 else symbol, positions=pad(positions[f]) * length_unit,
                      cell=cell, pbc=[True] * dim + [False] * (3 - dim))
        if len(trajectory.velocities):
            atoms.info["velocities_nm_per_ps"] = True
            atoms.set_array("vel", pad(np.asarray(trajectory.velocities[f], np.float64)))
        atoms.calc = SinglePointCalculator(atoms, energy=float(trajectory.potential_energy[f]))
        atoms.info["kinetic_energy"] = float(trajectory.kinetic_energy[f])
        frames.append(atoms)
    write(str(path), frames)
    return n_frames
