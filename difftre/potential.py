"""Learnable potentials: U_theta = model + prior, in JAX, and their export to the Numba kernels.

A `Potential` gives the total energy of one state as a JAX function
``energy(params, state)`` (what DiffTRe reweights and differentiates; ``state`` is a
``difftre.models.state.State`` with a neighbour list for ``cutoff``) and, for
spline-type models, the Numba force field that runs the MD with the same U_theta
entirely in compiled code. Models whose forces only JAX can compute (neural
networks) get their force field from ``difftre.bridge.jax_force_term``.

A model whose energy splits into parameter-independent per-state features and a
cheap function of parameters and features (the linear spline model:
U = U_prior + theta . Phi) gives ``features(state)`` and
``energy_from_features(params, features)``; the trainer then computes the
features once per reference trajectory and reweights without evaluating the
model on the states again.
"""
import dataclasses
from typing import Callable, Optional

import numpy as np

from difftre import md
from difftre.models import priors, spline
from difftre.models.state import State


@dataclasses.dataclass(frozen=True)
class Potential:
    """energy(params, state) -> U (kJ/mol, JAX); force_field(params) -> md.ForceField.

    cutoff: neighbour-list cut-off (nm) ``energy`` needs in ``state.neighbors`` (0: none).
    features / energy_from_features: the optional split described in the module doc.
    trajectory_features: optional compiled twin of ``features`` for a whole trajectory,
      (frames (S, N, 3) nm, box (3,) nm, velocities (S, N, 3) or None) -> features stacked on axis 0
      (NumPy); the trainer uses it instead of ``features`` (tests hold the two equal).
    """
    energy: Callable
    force_field: Callable
    cutoff: float = 0.0
    features: Optional[Callable] = None
    energy_from_features: Optional[Callable] = None
    trajectory_features: Optional[Callable] = None

    def __post_init__(self):
        if (self.features is None) != (self.energy_from_features is None):
            raise ValueError("a potential gives features and energy_from_features together, or neither")
        if self.trajectory_features is not None and self.features is None:
            raise ValueError("a potential's trajectory_features is the compiled twin of its features: give both")


def external_spline_with_harmonic_prior(grid, prior_k, prior_center, dtype):
    """1-D spline model on `grid` plus the prior 0.5 k (x - c)^2 (the double well: k = 150, c = 0.5)."""
    prior = priors.harmonic(prior_k, [prior_center], dtype=dtype)
    model = spline.external_spline(grid)

    def energy(params, state):
        return model(params, state) + prior(params, state)

    def force_field(params):
        x0, h, coefficients = spline.export_spline_table(params, grid)
        return md.ForceField([md.external_spline(x0, h, coefficients), md.harmonic(prior_k, [prior_center])])

    return Potential(energy, force_field)


def learned_external_profile(potential, params, x, box):
    """U_theta on points x of a 1-D box, one particle at a time (for plots and checks)."""
    import jax
    positions = np.asarray(x)[:, None, None]
    return np.asarray(jax.vmap(lambda p: potential.energy(params, State(p, box)))(positions))
