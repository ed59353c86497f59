"""Each JAX prior (models/) equals its Numba kernel (kernels/): energies and forces to 1e-10 relative,
float64, random configurations; exported spline tables drive the kernels to the JAX energy.

Driven by the potential records (difftre.potentials.RECORDS): every record is checked, with ONE set of
named parameters per case here; both sides are built by the record from the same values (positional
parameters in the record's order, its constants by name), and both factories' leading parameter names
are the record's. The Numba term's cut-off sizes the neighbour list handed to JAX.
"""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import diamond_lattice, lattice_positions
from difftre import md, potentials
from difftre.models import pair_spline, spline
from difftre.models.state import State
from test_kernels_forces import evaluate

jax.config.update("jax_enable_x64", True)
F64 = np.float64


def liquid(rng):
    return lattice_positions(6, 2.1, 0.05, rng), np.full(3, 2.1)


def diamond(rng):
    positions, box = diamond_lattice(3, 0.357)
    return positions + rng.normal(0, 0.01, positions.shape), box


def unwrapped(dim):
    def configuration(rng):
        return rng.uniform(0.1, 0.9, (50, dim)) + rng.integers(-2, 3, (50, dim)), np.ones(dim)
    return configuration


LJ = dict(epsilon=1.2, sigma=0.3, cutoff=0.9)
SW = dict(epsilon=200.0, sigma=0.14)            # the paper's diamond prior

# case: (record name, named parameters and constants, configuration); every record has a case
CASES = {
    "lennard_jones": ("lennard_jones", LJ, liquid),
    "lennard_jones_shifted": ("lennard_jones_shifted", LJ, liquid),
    "repulsive": ("repulsive", dict(epsilon=1.0, sigma=0.3165, cutoff=0.9), liquid),
    "repulsive_6": ("repulsive", dict(epsilon=2.0, sigma=0.3, cutoff=0.9, exponent=6), liquid),
    "stillinger_weber": ("stillinger_weber", SW, diamond),
    "stillinger_weber_constants": ("stillinger_weber", dict(SW, A=6.5, B=0.7, a=1.9, lam=25.0, gamma=1.1,
                                                            cos_theta0=-0.3), diamond),
    "harmonic_1d": ("harmonic", dict(k=150.0, center=[0.45]), unwrapped(1)),
    "harmonic_3d": ("harmonic", dict(k=150.0, center=[0.4, 0.55, 0.6]), unwrapped(3)),
}


def test_every_record_has_a_case_and_one_name():
    assert {record for record, _, _ in CASES.values()} == set(potentials.RECORDS)
    for name, record in potentials.RECORDS.items():
        assert record.name == name
        numba_factory = md.lennard_jones if name == "lennard_jones_shifted" else getattr(md, name)   # shifted=True
        assert list(inspect.signature(numba_factory).parameters)[:len(record.parameters)] == list(record.parameters)
        assert list(inspect.signature(record.jax_factory()).parameters)[:len(record.parameters)] == \
            list(record.parameters)


def pair_spline_model():
    grid = pair_spline.pair_spline_grid(0.2, 0.9, 40)
    params = pair_spline.init_pair_spline(jax.random.PRNGKey(1), grid, F64, scale=1.0)
    return pair_spline.pair_spline(grid), params, md.tabulated_pair(*pair_spline.export_pair_table(params, grid))


def external_spline_model():
    grid = spline.SplineGrid(0.0, 1.0, 50)
    params = spline.init_spline(jax.random.PRNGKey(2), grid, F64, scale=1.0)
    return spline.external_spline(grid), params, md.external_spline(*spline.export_spline_table(params, grid))


# name: (() -> (JAX model, its params, Numba term of the exported table), configuration)
MODELS = {"pair_spline": (pair_spline_model, liquid), "external_spline": (external_spline_model, unwrapped(1))}


def assert_parity(energy_fn, params, term, positions, box):
    """JAX energy(params, State) and -grad equal the Numba term's energy and forces."""
    force_field = md.ForceField([term])
    numba_energy, numba_forces, _ = evaluate(force_field, positions, box)
    neighbors = (md.full_neighbor_list(positions, box, force_field.cutoff) if force_field.cutoff > 0 else None)
    energy, grad = jax.value_and_grad(lambda x: energy_fn(params, State(x, jnp.asarray(box), neighbors)))(
        jnp.asarray(positions))
    assert float(energy) == pytest.approx(numba_energy, rel=1e-10)
    # an external term's force is one term per particle: absolute 1e-12; interactions: relative to the largest
    atol = 1e-12 if force_field.cutoff == 0 else 1e-10 * np.abs(numba_forces).max()
    np.testing.assert_allclose(-np.asarray(grad), numba_forces, rtol=1e-10, atol=atol)


@pytest.mark.parametrize("name", CASES)
def test_jax_prior_equals_numba_kernel(name, rng):
    record_name, named, configuration = CASES[name]
    record = potentials.RECORDS[record_name]
    leading = [named[p] for p in record.parameters]
    constants = {k: v for k, v in named.items() if k not in record.parameters}
    energy_fn = record.jax_energy(*leading, dtype=F64, **constants)
    assert_parity(energy_fn, None, record.numba_term(*leading, **constants), *configuration(rng))


@pytest.mark.parametrize("name", MODELS)
def test_exported_table_drives_kernel_to_jax_energy(name, rng):
    make, configuration = MODELS[name]
    assert_parity(*make(), *configuration(rng))
