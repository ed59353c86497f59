"""Minimum-image displacements over a dense neighbour list, shared by all observables.

Conventions (docs/DESIGN.md): positions (N, dim) in nm, possibly unwrapped;
box (dim,) orthorhombic edge lengths; displacement r_ij = r_i - r_j reduced to
the minimum image; dense neighbour list (N, capacity) int32 padded with N.

Observables take a ``difftre.models.state.State``; its ``deformation`` (dim, dim),
when set, multiplies every minimum-image displacement: dr' = deformation @ dr. This is how observables take strain
derivatives of an energy at fixed fractional coordinates (see ``stress.py``).
"""
import jax.numpy as jnp

from difftre.models.geometry import deform, dense_neighbor_list, minimum_image  # noqa: F401  (one copy)


def check_orthorhombic(box):
    """Raise unless ``box`` is a (dim,) array of orthorhombic edge lengths."""
    if jnp.ndim(box) != 1:
        raise ValueError(f"only orthorhombic boxes (dim,) are supported, got shape {jnp.shape(box)}")


def volume(box):
    """Volume of an orthorhombic box (nm^dim)."""
    check_orthorhombic(box)
    return jnp.prod(box)


def all_pairs(n):
    """Dense 'neighbour list' (n, n) holding every particle; self pairs are masked later."""
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (n, n))


def neighbor_displacements(state):
    """Displacements from each particle to its listed neighbours.

    Args:
      state: ``difftre.models.state.State``: positions (N, dim) nm, box (dim,) nm,
        neighbors (N, capacity) dense list padded with N (None: all pairs) and an
        optional deformation (dim, dim) applied to each minimum-image vector.

    Returns:
      dr: (N, capacity, dim) with dr[i, k] = r_i - r_{neighbors[i, k]} (minimum
        image, deformed); padded slots hold a dummy finite vector.
      mask: (N, capacity) bool, True for real neighbours (not padding, not i itself).
    """
    positions, box = state.positions, state.box
    check_orthorhombic(box)
    n = positions.shape[0]
    neighbors = all_pairs(n) if state.neighbors is None else state.neighbors
    mask = (neighbors < n) & (neighbors != jnp.arange(n)[:, None])
    dr = minimum_image(positions[:, None, :] - positions[jnp.where(mask, neighbors, 0)], box)
    return deform(dr, state.deformation), mask


def safe_norm(dr, mask):
    """|dr| over the last axis where ``mask``, 1 elsewhere (keeps gradients finite)."""
    sq = jnp.sum(dr**2, axis=-1)
    return jnp.sqrt(jnp.where(mask, sq, 1.0))
