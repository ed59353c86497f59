"""Each JAX prior (models/) equals its Numba kernel (kernels/): energies and forces to 1e-10 relative,
float64, random configurations; exported spline tables drive the kernels to the JAX energy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import diamond_lattice, lattice_positions
from difftre import md
from difftre.models import pair_spline, priors, spline
from test_kernels_forces import evaluate

jax.config.update("jax_enable_x64", True)
F64 = np.float64


def jax_energy_forces(energy_fn, positions, box, neighbors):
    positions = jnp.asarray(positions)
    energy, grad = jax.value_and_grad(energy_fn)(positions, jnp.asarray(box), jnp.asarray(neighbors))
    return float(energy), -np.asarray(grad)


def liquid(rng):
    return lattice_positions(6, 2.1, 0.05, rng), np.full(3, 2.1)


def pair_spline_case(rng):
    grid = pair_spline.pair_spline_grid(0.2, 0.9, 40)
    params = pair_spline.init_pair_spline(jax.random.PRNGKey(1), grid, F64, scale=1.0)
    energy = lambda x, b, nb: pair_spline.pair_spline_energy(params, x, b, nb, grid)
    return energy, md.tabulated_pair(*pair_spline.export_pair_table(params, grid)), 0.9


CASES = {
    "lj": lambda rng: (priors.lennard_jones(0.3, 1.2, 0.9, dtype=F64), md.lennard_jones(1.2, 0.3, 0.9), 0.9),
    "lj_shifted": lambda rng: (priors.lennard_jones(0.3, 1.2, 0.9, shift=True, dtype=F64),
                               md.lennard_jones(1.2, 0.3, 0.9, shifted=True), 0.9),
    "repulsive": lambda rng: (priors.soft_sphere(0.3165, 1.0, 0.9, dtype=F64), md.repulsive(1.0, 0.3165, 0.9), 0.9),
    "pair_spline": pair_spline_case,
    "stillinger_weber": lambda rng: (priors.stillinger_weber(0.14, 200.0, dtype=F64),
                                     md.stillinger_weber(200.0, 0.14), 0.252),
}


@pytest.mark.parametrize("name", CASES)
def test_jax_prior_equals_numba_kernel(name, rng):
    jax_energy, term, cutoff = CASES[name](rng)
    if name == "stillinger_weber":
        positions, box = diamond_lattice(3, 0.357)
        positions = positions + rng.normal(0, 0.01, positions.shape)
    else:
        positions, box = liquid(rng)
    numba_energy, numba_forces, _ = evaluate(md.ForceField([term]), positions, box)
    energy, forces = jax_energy_forces(jax_energy, positions, box, md.full_neighbor_list(positions, box, cutoff))
    assert energy == pytest.approx(numba_energy, rel=1e-10)
    np.testing.assert_allclose(forces, numba_forces, rtol=1e-10, atol=1e-10 * np.abs(numba_forces).max())


@pytest.mark.parametrize("dim", [1, 3])
def test_harmonic_and_external_spline(dim, rng):
    positions = rng.uniform(0.1, 0.9, (50, dim)) + rng.integers(-2, 3, (50, dim))   # unwrapped
    box = np.ones(dim)
    center = rng.uniform(0.3, 0.7, dim)
    energy_fn = priors.harmonic_external(150.0, center, dtype=F64)
    numba_energy, numba_forces, _ = evaluate(md.ForceField([md.harmonic(150.0, center)]), positions, box)
    energy, forces = jax_energy_forces(lambda x, b, nb: energy_fn(x, b), positions, box, np.zeros((50, 1), np.int32))
    assert energy == pytest.approx(numba_energy, rel=1e-10)
    np.testing.assert_allclose(forces, numba_forces, rtol=1e-10, atol=1e-12)
    if dim == 1:
        grid = spline.SplineGrid(0.0, 1.0, 50)
        theta = spline.init_spline(jax.random.PRNGKey(2), grid, F64, scale=1.0)
        term = md.external_spline(*spline.export_spline_table(theta, grid))
        numba_energy, numba_forces, _ = evaluate(md.ForceField([term]), positions, box)
        energy, forces = jax_energy_forces(lambda x, b, nb: spline.external_spline_energy(theta, x, b, grid),
                                           positions, box, np.zeros((50, 1), np.int32))
        assert energy == pytest.approx(numba_energy, rel=1e-10)
        np.testing.assert_allclose(forces, numba_forces, rtol=1e-10, atol=1e-12)
