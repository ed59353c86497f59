"""Learnable potentials: U_theta = model + prior, in JAX, and their export to the Numba kernels.

A `Potential` gives the total energy of one state as a JAX function of the
parameters (what DiffTRe reweights and differentiates) and, for spline-type
models, the Numba force field that runs the MD with the same U_theta entirely in
compiled code. Models whose forces only JAX can compute (neural networks) have
``force_field=None`` and run their MD through ``difftre.bridge``.
"""
import dataclasses
from typing import Callable, Optional

import numpy as np

from difftre import md
from difftre.models import priors, spline


@dataclasses.dataclass(frozen=True)
class Potential:
    """energy(params, positions, box) -> U (kJ/mol, JAX); force_field(params) -> md.ForceField or None."""
    energy: Callable
    force_field: Optional[Callable] = None


def external_spline_with_harmonic_prior(grid, prior_k, prior_center, dtype):
    """1-D spline model on `grid` plus the prior 0.5 k (x - c)^2 (the double well: k = 150, c = 0.5)."""
    prior = priors.harmonic_external(prior_k, [prior_center], dtype=dtype)

    def energy(params, positions, box):
        return spline.external_spline_energy(params, positions, box, grid) + prior(positions, box)

    def force_field(params):
        x0, h, coefficients = spline.export_spline_table(params, grid)
        return md.ForceField([md.external_spline(x0, h, coefficients), md.harmonic(prior_k, [prior_center])])

    return Potential(energy, force_field)


def learned_external_profile(potential, params, x, box):
    """U_theta on points x of a 1-D box, one particle at a time (for plots and checks)."""
    import jax
    positions = np.asarray(x)[:, None, None]
    return np.asarray(jax.vmap(lambda p: potential.energy(params, p, box))(positions))
