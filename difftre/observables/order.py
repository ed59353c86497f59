"""Tetrahedral order parameter q (Errington & Debenedetti 2001) of water-like liquids."""
import jax
import jax.numpy as jnp

from difftre.observables.geometry import neighbor_displacements, safe_norm
from difftre.observables.structure import neighbor_pairs


def tetrahedral_order_parameters(state):
    """Per-molecule q_i = 1 - 3/8 sum_{j<k} (cos psi_jik + 1/3)^2 over i's 4 nearest neighbours.

    The 4 nearest neighbours are the closest entries of i's dense neighbour
    list (padding sorts last). A molecule with fewer than 4 listed neighbours
    has no defined q_i: it is reported invalid and its q_i must not be used.

    Args:
      state: ``State`` with positions (N, 3) nm, box (3,) nm and neighbors, a dense
        full list (N, capacity >= 4) padded with N (None: all pairs).

    Returns:
      q: (N,) values (1 for a perfect tetrahedron, 0 on average for an ideal gas).
      valid: (N,) bool, True where i has at least 4 neighbours.

    Raises:
      ValueError: if the list has fewer than 4 columns.
    """
    dr, mask = neighbor_displacements(state)
    if dr.shape[1] < 4:
        raise ValueError(f"the tetrahedral order parameter needs neighbour-list capacity >= 4, got {dr.shape[1]}")
    r = jnp.where(mask, safe_norm(dr, mask), jnp.inf)
    _, nearest = jax.lax.top_k(-r, 4)
    valid = jnp.sum(mask, axis=1) >= 4
    unit = jnp.take_along_axis(dr / jnp.where(mask, r, 1.0)[..., None], nearest[..., None], axis=1)
    a, b = neighbor_pairs(4)
    cos = jnp.sum(unit[:, a] * unit[:, b], axis=-1)
    return 1.0 - 0.375 * jnp.sum((cos + 1.0 / 3.0) ** 2, axis=1), valid


def tetrahedral_order(state):
    """Mean q over molecules with 4 neighbours (invalid ones excluded); NaN if none is valid."""
    q, valid = tetrahedral_order_parameters(state)
    return jnp.sum(jnp.where(valid, q, 0.0)) / jnp.sum(valid)
