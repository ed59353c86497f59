"""The relaxed-ion stiffness at 0 K (``static_stiffness``) against explicit strains with the atoms relaxed.

Diamond with the Stillinger-Weber prior of the diamond experiment (2 x 2 x 2 cells, 64 atoms): each
strain of the box is applied, the atoms are relaxed by minimising the energy (scipy L-BFGS on the JAX
gradient), and the second central difference of the relaxed energy in the strain gives V C. That
route shares nothing with the formula's Hessian blocks and pseudo-inverse; it includes the internal
relaxation of diamond's two sublattices, which lowers C44 well below its Born value.
"""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from difftre.experiments.diamond import crystal  # noqa: E402
from difftre.models import priors  # noqa: E402
from difftre.models.state import deformed, strain_deformation  # noqa: E402
from difftre.observables.elastic import born_stiffness, cubic_constants, static_stiffness  # noqa: E402
from difftre.states import stored_states  # noqa: E402

SW = priors.stillinger_weber(200.0, 0.14, dtype=np.float64)
CUTOFF = 1.8 * 0.14 + 0.02


def lattice():
    positions, box = crystal(2, 3512.0, 12.011)
    states = stored_states(positions[None], box, CUTOFF)
    return jax.tree.map(lambda x: None if x is None else x[0], states, is_leaf=lambda x: x is None)


def relaxed_energy(state, eps):
    """min over the atoms' displacements of U at the box strain eps (kJ/mol)."""
    def energy(u_flat):
        u = jnp.reshape(u_flat, state.positions.shape)
        return SW(None, deformed(state._replace(positions=state.positions + u), strain_deformation(eps)))
    value_and_grad = jax.jit(jax.value_and_grad(energy))
    result = minimize(lambda u: tuple(np.asarray(x, np.float64) for x in value_and_grad(u)),
                      np.zeros(state.positions.size), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-10, "ftol": 1e-16, "maxiter": 2000})
    return result.fun


def test_static_stiffness_equals_relaxed_strain_energy_curvature():
    state = lattice()
    static = jax.jit(lambda s: static_stiffness(SW, None, s))(state)
    assert float(static["largest_force"]) < 1e-8 and float(static["lowest_internal_curvature"]) > 0
    volume = float(np.prod(state.box))
    h = 1e-3
    curvature = {}
    for name, direction in (("c11", np.diag([1.0, 0.0, 0.0])),
                            ("c44", np.array([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))):
        energies = [relaxed_energy(state, s * h * direction) for s in (-1, 0, 1)]
        curvature[name] = (energies[0] - 2 * energies[1] + energies[2]) / h ** 2 / volume
    # eps with eps_xy = eps_yx = h/2 is the engineering shear h: d2U/dh2 = V C_xyxy = V C44
    c = np.asarray(static["stiffness"])
    assert c[0, 0, 0, 0] == pytest.approx(curvature["c11"], rel=2e-4)
    assert c[0, 1, 0, 1] == pytest.approx(curvature["c44"], rel=2e-4)
    born = np.asarray(cubic_constants(born_stiffness(SW, None, state)))
    relaxed = np.asarray(cubic_constants(static["stiffness"]))
    # the relaxation touches only the shear: C11 and C12 keep their Born values, C44 drops
    np.testing.assert_allclose(relaxed[:2], born[:2], rtol=1e-10)
    assert relaxed[2] < 0.8 * born[2]
