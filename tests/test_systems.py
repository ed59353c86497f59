"""difftre.systems: lattices, velocities, temperature and pressure; and the README's Python quick-start, run as written."""
import pathlib
import re
import types

import numpy as np
import pytest

from difftre import systems

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def nearest_neighbour_distances(positions, box):
    """Per atom, the minimum-image distance to its nearest other atom."""
    dr = positions[:, None, :] - positions[None, :, :]
    dr -= box * np.round(dr / box)
    r = np.sqrt(np.sum(dr * dr, axis=-1))
    np.fill_diagonal(r, np.inf)
    return r.min(axis=1)


@pytest.mark.parametrize("n, kind", [(256, "fcc 4x4x4"), (343, "simple cubic 7x7x7"), (300, "evenly spread")])
def test_lattice_start_has_the_density_and_no_overlaps(n, kind):
    positions, box, lattice = systems.lattice_start(n, 0.8442)
    assert kind in lattice
    assert positions.shape == (n, 3) and box.shape == (3,)
    assert n / np.prod(box) == pytest.approx(0.8442, rel=1e-12)
    assert np.all((positions >= 0) & (positions < box))
    assert nearest_neighbour_distances(positions, box).min() > 0.8   # sigma units: no two atoms on top


def test_fcc_and_diamond_have_their_neighbour_distances():
    positions, box = systems.fcc_lattice(3, 1.5)
    assert positions.shape == (108, 3) and np.allclose(box, 4.5)
    assert np.allclose(nearest_neighbour_distances(positions, box), 1.5 / np.sqrt(2))
    positions, box = systems.diamond_lattice(2, 0.5431)   # silicon: bond length a sqrt(3) / 4 = 0.2352 nm
    assert positions.shape == (64, 3) and np.allclose(box, 1.0862)
    assert np.allclose(nearest_neighbour_distances(positions, box), 0.5431 * np.sqrt(3) / 4)


def test_velocities_have_zero_momentum_and_the_temperature():
    masses = np.where(np.arange(20000) % 2, 1.0, 3.0)
    velocities = systems.maxwell_boltzmann_velocities(masses, kT=2.5, seed=1)
    assert np.allclose(masses @ velocities, 0.0, atol=1e-9)
    kT = systems.temperature(velocities, masses, dof=3 * masses.size - 3)
    assert kT == pytest.approx(2.5, rel=0.02)   # relative standard error sqrt(2 / 60000) = 0.6 %
    frames = np.stack([velocities, 2 * velocities])
    assert np.allclose(systems.temperature(frames, masses, 3 * masses.size - 3), [kT, 4 * kT])


def test_pressure_is_the_virial_pressure_per_frame():
    box = np.array([2.0, 2.0, 3.0])
    kinetic = np.array([6.0, 6.0])
    virial = np.array([np.zeros((3, 3)), np.diag([1.0, 2.0, 3.0]) + 5.0 * (1 - np.eye(3))])   # off-diagonals ignored
    trajectory = types.SimpleNamespace(box=box, kinetic_energy=kinetic, virial=virial)
    # ideal gas: P V = 2 K / 3 = N kT; with a virial: (2 K + tr W) / (3 V)
    assert np.allclose(systems.pressure(trajectory), [12.0 / 36.0, 18.0 / 36.0])


def test_double_well_density_is_normalised():
    grid = np.linspace(0.0, 1.0, 401)
    density = systems.double_well_density(grid, 0.01)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=2e-3)   # periodic smoothing loses nothing


def readme_quick_start():
    """The Python block of the README's 'Python quick-start' section."""
    section = README.read_text().split("## Python quick-start", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_runs_and_gives_a_thermostatted_liquid():
    namespace = {}
    exec(compile(readme_quick_start(), "README.md quick-start", "exec"), namespace)
    T, P = namespace["T"], namespace["P"]
    assert T.shape == P.shape == (1000,)
    assert T.mean() == pytest.approx(1.0, abs=0.03)            # Langevin at kT* = 1, 1500 degrees of freedom
    assert 1.5 < P.mean() < 3.5                                 # dense LJ liquid, truncated at 2.5 sigma: P* about 2.5
