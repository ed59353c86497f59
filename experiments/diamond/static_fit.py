"""The 0 K warm start of the diamond training: spline coefficients that give the perfect lattice the
target stress and (relaxed-ion) elastic constants.

The stress and stiffness at 298 K differ from their 0 K values by the thermal terms only (the
Stillinger-Weber prior: C11 / C12 / C44 = 555.7 / 277.5 / 201.4 GPa at 0 K and 549.3 / 278.2 / 198-203 at
298 K; stress -17.8 vs -18.9 GPa), and those 0 K values are cheap: one Hessian of a small perfect
lattice (``difftre.observables.elastic.static_stiffness``). Fitting them first leaves DiffTRe the
finite-temperature correction instead of the whole way from the prior. The residuals are those of the
training loss, sqrt(gamma / n) (prediction - target) for the 9 stress entries and the 3 cubic
constants, plus a ridge sqrt(RIDGE) theta that picks the smallest coefficients among the many that fit
4 numbers (stress by symmetry hydrostatic, C11, C12, C44). Units: nm, kJ/mol, kJ mol^-1 nm^-3.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import least_squares

from difftre.observables.elastic import cubic_constants, static_derivatives, static_stiffness
from difftre.states import stored_states

RIDGE = 1e-8
"""(kJ/mol)^-2: coefficients of norm 100 kJ/mol weigh as a 0.3 GPa error of one elastic constant."""


def smallest_lattice(crystal, density, mass, list_cutoff):
    """The perfect lattice of the fewest conventional cells whose box holds the neighbour list's cut-off
    (nm) under the minimum-image rule, as a single ``State``."""
    cells = 1
    while True:
        positions, box = crystal(cells, density, mass)
        if np.min(box) > 2 * list_cutoff:
            break
        cells += 1
    states = stored_states(positions[None], box, list_cutoff)
    return jax.tree.map(lambda x: x[0], states)


def static_fit(energy, state, targets, gamma_stress, gamma_stiffness, n_free):
    """theta (n_free,) kJ/mol minimising the 0 K loss of the stress (target 0) and the cubic constants
    ``targets`` (C11, C12, C44 in kJ mol^-1 nm^-3) of the perfect lattice ``state`` under
    energy(theta, state), with the ridge RIDGE; Levenberg-Marquardt from theta = 0 with the Jacobian by
    forward-mode AD. Returns (theta, report): the report gives the constants and stress before and after
    (kJ mol^-1 nm^-3) and the lowest internal curvature (kJ/mol/nm^2). A fit whose lattice is unstable
    (a non-positive internal curvature) or keeps forces on the atoms is refused with a ValueError."""
    targets = jnp.asarray(targets, jnp.float64)
    # U is linear in theta, so are its derivatives: those at theta = 0 plus theta . (those of each unit
    # coefficient minus those at 0), computed one coefficient at a time (a Jacobian through the Hessian
    # of all n_free at once would need tens of GB)
    derivatives_at = jax.jit(lambda theta: static_derivatives(energy, theta, state))
    at_zero = derivatives_at(jnp.zeros(n_free))
    per_coefficient = jax.lax.map(lambda unit: jax.tree.map(jnp.subtract, derivatives_at(unit), at_zero),
                                  jnp.eye(n_free))

    def predictions(theta):
        derivatives = jax.tree.map(lambda zero, slope: zero + jnp.tensordot(theta, slope, axes=1), at_zero,
                                   per_coefficient)
        static = static_stiffness(None, None, state, derivatives=derivatives)
        return static, cubic_constants(static["stiffness"])

    def residuals(theta):
        static, constants = predictions(theta)
        return jnp.concatenate([math.sqrt(gamma_stress / 9) * static["stress"].ravel(),
                                math.sqrt(gamma_stiffness / 3) * (constants - targets), math.sqrt(RIDGE) * theta])

    residuals_jit, jacobian_jit, predictions_jit = jax.jit(residuals), jax.jit(jax.jacfwd(residuals)), jax.jit(predictions)
    result = least_squares(lambda t: np.asarray(residuals_jit(t)), np.zeros(n_free),
                           jac=lambda t: np.asarray(jacobian_jit(t)), method="lm", xtol=1e-12, ftol=1e-12)
    theta = result.x
    (before, constants_before), (after, constants_after) = predictions_jit(np.zeros(n_free)), predictions_jit(theta)
    if not float(after["lowest_internal_curvature"]) > 0 or not np.isfinite(theta).all():
        raise ValueError(f"the static fit gave an unstable lattice (lowest internal curvature "
                         f"{float(after['lowest_internal_curvature']):.4g} kJ/mol/nm^2): start from the prior "
                         "(model.start = \"prior\")")
    report = {"constants_prior": np.asarray(constants_before).tolist(), "constants": np.asarray(constants_after).tolist(),
              "stress_prior": np.asarray(before["stress"]).tolist(), "stress": np.asarray(after["stress"]).tolist(),
              "lowest_internal_curvature": float(after["lowest_internal_curvature"]),
              "largest_force": float(after["largest_force"]), "theta_norm": float(np.linalg.norm(theta)),
              "evaluations": int(result.nfev)}
    return theta, report
