"""Every force kernel against finite differences: forces = -dU/dx, virial = -dU/d(strain), Newton's third law."""
import numpy as np
import pytest

from conftest import diamond_lattice, lattice_positions
from difftre import md
from difftre.kernels import neighbors, sampler

EV = 96.485332  # kJ/mol per eV


def evaluate(force_field, positions, box):
    """(energy, forces, virial) from the kernels with a freshly built neighbour list."""
    positions = np.asarray(positions, np.float64)
    n, dim = positions.shape
    idx = np.zeros((n, 8), np.int32)
    count = np.zeros(n, np.int32)
    if force_field.cutoff > 0:
        idx = neighbors.build(positions, box, force_field.cutoff, force_field.half_list, idx, count,
                              np.empty_like(positions))
    pairs, systems = force_field.kernel_terms(np.float64)
    forces = np.zeros_like(positions)
    virial = np.zeros((dim, dim))
    energy = sampler.compute_forces(pairs, systems, positions, np.asarray(box, np.float64), idx, count,
                                    force_field.half_list, forces, virial)
    return energy, forces, virial


def smooth_pair_table():
    """A cubic pair table (Morse-like, cut at 1.0 nm) in the kernels' spline format."""
    knots = np.linspace(0.25, 1.0, 31)
    h = knots[1] - knots[0]
    u = lambda r: 5.0 * (np.exp(-2 * 6 * (r - 0.4)) - 2 * np.exp(-6 * (r - 0.4))) * (1 - r) ** 2
    du = lambda r, e=1e-6: (u(r + e) - u(r - e)) / (2 * e)
    coefficients = []
    for x in knots[:-1]:  # cubic Hermite on each interval: C1, exact values and slopes at the knots
        u0, u1, d0, d1 = u(x), u(x + h), du(x), du(x + h)
        coefficients.append([u0, d0, (3 * (u1 - u0) / h - 2 * d0 - d1) / h, (d0 + d1 - 2 * (u1 - u0) / h) / h ** 2])
    return knots[0], h, np.array(coefficients)


FORCE_FIELDS = {
    "lj": lambda: md.ForceField([md.lennard_jones(1.2, 0.35, 0.9)]),
    "lj_shifted": lambda: md.ForceField([md.lennard_jones(1.2, 0.35, 0.9, shift=True)]),
    "repulsive": lambda: md.ForceField([md.repulsive(1.0, 0.3165, 0.9)]),
    "tabulated": lambda: md.ForceField([md.tabulated_pair(*smooth_pair_table())]),
    "stillinger_weber": lambda: md.ForceField([md.stillinger_weber(200.0, 0.14)]),
    "sw_plus_lj": lambda: md.ForceField([md.stillinger_weber(200.0, 0.14), md.lennard_jones(0.3, 0.2, 0.5)]),
    "harmonic": lambda: md.ForceField([md.harmonic(150.0, [0.5, 0.4, 0.6])]),
}


def configuration(name, rng):
    if name.startswith("s"):  # distorted diamond (SW): bonds near 0.154 nm
        positions, box = diamond_lattice(3, 0.357)
        return positions + rng.normal(0, 0.01, positions.shape), box
    if name == "harmonic":
        return rng.uniform(0.1, 0.9, (20, 3)), np.ones(3)
    return lattice_positions(6, 2.1, 0.04, rng), np.full(3, 2.1)   # dense liquid-like, r ~ 0.3 nm


@pytest.mark.parametrize("name", FORCE_FIELDS)
def test_forces_are_minus_energy_gradient(name, rng):
    ff = FORCE_FIELDS[name]()
    positions, box = configuration(name, rng)
    energy, forces, _ = evaluate(ff, positions, box)
    assert np.isfinite(energy) and np.all(np.isfinite(forces))
    h = 1e-6
    for i, a in zip(rng.choice(len(positions), 12, replace=False), rng.integers(0, 3, 12)):
        plus, minus = positions.copy(), positions.copy()
        plus[i, a] += h
        minus[i, a] -= h
        fd = -(evaluate(ff, plus, box)[0] - evaluate(ff, minus, box)[0]) / (2 * h)
        assert forces[i, a] == pytest.approx(fd, rel=1e-6, abs=1e-6 * np.abs(forces).max())
    if name != "harmonic":   # translation invariance: Newton's third law
        assert np.abs(forces.sum(0)).max() < 1e-9 * np.abs(forces).max() * len(forces)


@pytest.mark.parametrize("name", FORCE_FIELDS)
def test_virial_is_strain_derivative(name, rng):
    """W_ab = -dU/d eps_ab with x -> (1 + eps) x, box -> (1 + eps) box.

    Diagonal strain of a periodic configuration; the full tensor on an isolated
    cluster (no pair crosses the boundary, so a sheared cell changes nothing).
    """
    ff = FORCE_FIELDS[name]()
    positions, box = configuration(name, rng)
    cases = [(positions, box, [(a, a) for a in range(3)])]
    if name != "harmonic":
        cluster = positions[np.linalg.norm(positions - positions.mean(0), axis=1) < 0.5]
        cluster = cluster - cluster.mean(0) + 5.0
        cases.append((cluster, np.full(3, 10.0), [(a, b) for a in range(3) for b in range(3)]))
    h = 1e-6
    for pos, bx, components in cases:
        _, _, virial = evaluate(ff, pos, bx)
        for a, b in components:
            energies = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * h
                energies.append(evaluate(ff, pos @ strain.T, np.diag(strain) * bx)[0])
            fd = -(energies[0] - energies[1]) / (2 * h)
            assert virial[a, b] == pytest.approx(fd, rel=1e-6, abs=1e-7 * np.abs(virial).max())


def test_external_spline_force_is_minus_slope():
    """The 1-D external spline: forces against finite differences, any wrapped position."""
    x0, h, c = smooth_pair_table()
    ff = md.ForceField([md.external_spline(x0, h, c)])
    positions = np.array([[0.3], [0.55], [0.99], [1.7], [-0.4]])   # unwrapped: wrapped into [0, 1.2)
    box = np.array([1.2])
    _, forces, _ = evaluate(ff, positions, box)
    for i in range(len(positions)):
        plus, minus = positions.copy(), positions.copy()
        plus[i, 0] += 1e-6
        minus[i, 0] -= 1e-6
        fd = -(evaluate(ff, plus, box)[0] - evaluate(ff, minus, box)[0]) / 2e-6
        assert forces[i, 0] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_stillinger_weber_silicon_cohesive_energy():
    """Perfect diamond silicon at a = 0.5431 nm: -4.3366 eV/atom (Stillinger & Weber 1985)."""
    positions, box = diamond_lattice(3, 0.5431)
    ff = md.ForceField([md.stillinger_weber(2.1683 * EV, 0.20951)])
    energy, forces, _ = evaluate(ff, positions, box)
    assert energy / len(positions) / EV == pytest.approx(-4.3366, abs=1e-4)
    assert np.abs(forces).max() < 1e-9


def test_stillinger_weber_agrees_with_jax_md(rng):
    """Energies and forces on distorted configurations equal JAX MD's implementation.

    JAX MD adds 1e-7 (length units) to both distances inside its bond-angle cosine;
    it is evaluated here in picometres so that offset is negligible (4e-10 relative).
    """
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jax_md = pytest.importorskip("jax_md")
    positions, box = diamond_lattice(3, 0.5431)
    sigma, eps, pm = 0.20951, 2.1683 * EV, 1000.0
    displacement, _ = jax_md.space.periodic(box[0] * pm)
    jax_energy = jax_md.energy.stillinger_weber(displacement, sigma=sigma * pm, epsilon=eps, cutoff=1.8 * sigma * pm)
    ff = md.ForceField([md.stillinger_weber(eps, sigma)])
    for scale in (0.005, 0.02):
        distorted = positions + rng.normal(0, scale, positions.shape)
        energy, forces, _ = evaluate(ff, distorted, box)
        wrapped_pm = jax.numpy.asarray((distorted % box[0]) * pm)
        assert energy == pytest.approx(float(jax_energy(wrapped_pm)), rel=1e-9)
        expected_forces = -np.asarray(jax.grad(jax_energy)(wrapped_pm)) * pm
        np.testing.assert_allclose(forces, expected_forces, rtol=1e-7, atol=1e-9 * np.abs(forces).max())


def test_stillinger_weber_gather_per_atom_equals_scatter(rng):
    """The per-atom gather the CUDA engine runs (manybody.stillinger_weber_on_atom, compiled here for the
    CPU) summed over atoms gives the CPU kernel's energy, forces and virial."""
    from difftre.kernels import manybody
    positions, box = diamond_lattice(3, 0.357)
    positions = positions + rng.normal(0, 0.01, positions.shape)
    ff = md.ForceField([md.stillinger_weber(200.0, 0.14, a=1.9, cos_theta0=-0.3)])
    energy, forces, virial = evaluate(ff, positions, box)
    n = len(positions)
    idx, count = np.zeros((n, 8), np.int32), np.zeros(n, np.int32)
    idx = neighbors.build(positions, box, ff.cutoff, False, idx, count, np.empty_like(positions))
    params = ff.system_terms[0].params
    gathered, gathered_virial, total = np.zeros_like(positions), np.zeros((3, 3)), 0.0
    for i in range(n):
        total += manybody.stillinger_weber_on_atom(i, positions, box, 1.0 / box, idx, count, params, gathered[i],
                                                   gathered_virial)
    assert total == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(gathered, forces, rtol=1e-10, atol=1e-10 * np.abs(forces).max())
    np.testing.assert_allclose(gathered_virial, virial, rtol=1e-10, atol=1e-10 * np.abs(virial).max())
