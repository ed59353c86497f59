"""Densities: the smoothed one-dimensional profile (the double-well observable) and the mass density of a
state in its own box (a target under a barostat)."""
import math

import jax.numpy as jnp
from jax.scipy.stats import norm

from difftre.observables.geometry import check_orthorhombic, minimum_image, volume

MASS_DENSITY_UNIT = 1.66053906660   # kg/m^3 per u/nm^3


def density_profile(state, grid, sigma=0.01, axis=0):
    """Normalised density along one axis, each particle smeared by a Gaussian.

    rho(x_g) = (1/N) sum_i G_sigma(x_g - x_i), with x_g - x_i taken as the
    minimum image along ``axis`` and G_sigma the unit-area Gaussian, so the
    profile integrates to 1 over [0, L_axis) (up to the Gaussian tails beyond
    L/2, negligible for sigma << L). Paper (double well): grid = 0, 0.01, ..., 1,
    sigma = 0.01, box length 1.

    Args:
      state: ``State`` with positions (N, dim) (unwrapped allowed) and box (dim,).
      grid: (G,) points along ``axis`` where the density is evaluated.
      sigma: Gaussian width, same length unit as positions.
      axis: Cartesian axis of the profile.

    Returns:
      (G,) density in 1/length.
    """
    positions, box = state.positions, state.box
    check_orthorhombic(box)
    dx = minimum_image(grid[:, None] - positions[None, :, axis], box[axis:axis + 1])
    return jnp.mean(norm.pdf(dx, scale=sigma), axis=1)


def density_profile_uniform(state, length, n_points, sigma=0.01, axis=0, window=8.0):
    """`density_profile` on the uniform grid x_g = g L / (n_points - 1), g = 0..n_points-1, summing
    each particle's Gaussian only over grid points within `window` sigma (the rest is below
    exp(-window^2 / 2) = 1e-14 relative for the default): the same values at a fraction of the cost.

    Args:
      state: ``State`` with positions (N, dim); length: the box edge L along `axis` (a Python float: it fixes the
        window size at trace time); n_points: grid points on [0, L] (both ends included).

    Returns:
      (n_points,) density in 1/length.
    """
    positions = state.positions
    length = float(length)
    spacing = length / (n_points - 1)
    half = int(math.ceil(window * sigma / spacing))
    x = positions[:, axis] - length * jnp.floor(positions[:, axis] / length)     # wrapped into [0, L)
    nearest = jnp.round(x / spacing).astype(jnp.int32)
    offsets = jnp.arange(-half, half + 1)
    index = nearest[:, None] + offsets[None, :]                                  # (N, 2 half + 1), may leave [0, n)
    dx = minimum_image(index * spacing - x[:, None], jnp.asarray([length], x.dtype))
    values = norm.pdf(dx, scale=sigma)
    # a grid index outside [0, n_points - 1] is a periodic image of one inside; the points 0 and L coincide
    period = n_points - 1
    wrapped = jnp.mod(index, period)
    profile = jnp.zeros(n_points, values.dtype).at[wrapped.ravel()].add(values.ravel())
    profile = profile.at[period].set(profile[0])
    return profile / positions.shape[0]


def number_density(state):
    """Particles per volume (1/nm^3, or 1/sigma^3 in reduced units) of ``state`` in its own box."""
    return state.positions.shape[-2] / volume(state.box)


def mass_density(state, masses):
    """Mass density (kg/m^3) of ``state`` in its own box: sum of ``masses`` (u; (N,) or one per particle
    as a scalar) over the box volume (nm^3). Under a barostat each stored state has its own box."""
    n = state.positions.shape[-2]
    total = jnp.sum(jnp.broadcast_to(jnp.asarray(masses, state.box.dtype), (n,)))
    return MASS_DENSITY_UNIT * total / volume(state.box)
