"""Trajectories written through ASE read back unchanged."""
import numpy as np
import pytest

from difftre import md
from difftre.io import write_trajectory


def test_extended_xyz_round_trip(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    rng = np.random.default_rng(0)
    trajectory = md.Trajectory(rng.uniform(0, 3, (4, 10, 3)), rng.normal(size=(4, 10, 3)), rng.normal(size=4),
                               rng.uniform(1, 2, 4), np.zeros((4, 3, 3)), np.array([3.0, 3.1, 3.2]))
    path = tmp_path / "traj.extxyz"
    assert write_trajectory(path, trajectory) == 4
    frames = ase_io.read(str(path), index=":")
    assert len(frames) == 4
    for f, atoms in enumerate(frames):
        np.testing.assert_allclose(atoms.positions / 10.0, trajectory.positions[f], rtol=1e-7)
        np.testing.assert_allclose(atoms.cell.lengths() / 10.0, trajectory.box)
        assert atoms.get_potential_energy() == pytest.approx(trajectory.potential_energy[f])
    with pytest.raises(ValueError, match="no frames"):
        write_trajectory(tmp_path / "empty.extxyz", md.Trajectory(np.empty((0, 10, 3)), np.empty((0, 10, 3)),
                                                                  np.empty(0), np.empty(0), np.empty((0, 3, 3)),
                                                                  np.ones(3)))
