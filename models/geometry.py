"""Periodic geometry shared by the JAX models: wrapping, minimum image, masked neighbours.

Conventions (docs/DESIGN.md): positions (N, dim) unwrapped, orthorhombic box (dim,)
of edge lengths, dense neighbour list (N, capacity) int32 padded with N.
"""
import jax.numpy as jnp
import numpy as np


def _check_orthorhombic(box):
    if jnp.ndim(box) != 1:
        raise ValueError(f"only orthorhombic boxes of shape (dim,) are supported, got shape {jnp.shape(box)}")


def wrap(positions, box):
    """Positions wrapped into [0, L) per dimension: ``x - L floor(x / L)``."""
    _check_orthorhombic(box)
    return positions - box * jnp.floor(positions / box)


def minimum_image(dr, box):
    """Minimum-image displacement ``dr - L round(dr / L)``."""
    _check_orthorhombic(box)
    return dr - box * jnp.round(dr / box)


def deform(dr, deformation):
    """Displacements under an affine deformation F (dim, dim): dr -> F dr (identity when None).

    The strain contract of difftre.observables.stress: an energy evaluated with a
    deformation is the energy of the affinely strained configuration (fixed
    fractional coordinates), so dU/dF gives the virial stress and the Born terms.
    """
    return dr if deformation is None else dr @ deformation.T


def state_arrays(state, dtype):
    """(positions, box, deformation) of a ``models.state.State`` as ``dtype`` arrays.

    The one conversion at a model's entry: nm for positions and box, the deformation
    dimensionless and left None (the identity) when the state has none.
    """
    deformation = None if state.deformation is None else jnp.asarray(state.deformation, dtype)
    return jnp.asarray(state.positions, dtype), jnp.asarray(state.box, dtype), deformation


def neighbor_distances(positions, box, neighbors, r_cut, deformation=None):
    """Masked minimum-image neighbour vectors and distances (optionally deformed, see `deform`).

    Args:
      positions: (N, dim) positions (nm).
      box: (dim,) box edge lengths (nm).
      neighbors: (N, capacity) int32 dense neighbour list padded with N (``State.neighbors``).
      r_cut: cut-off (nm); pairs with r >= r_cut are masked out.
      deformation: optional (dim, dim) affine deformation F (``State.deformation``).

    Returns:
      dr: (N, capacity, dim) vectors r_i - r_j (nm), padded entries arbitrary.
      r: (N, capacity) distances (nm); masked entries are set to r_cut / 2 so that any
        pair function evaluated on them is finite (the double-where trick: gradients
        of ``jnp.where(mask, f(r), 0)`` are then finite and exactly zero there).
      mask: (N, capacity) bool, True for real neighbours closer than r_cut.
    """
    if neighbors is None:
        raise ValueError("this energy needs a neighbour list: a State with neighbors (full dense list, N, capacity)")
    n = positions.shape[0]
    real = neighbors < n
    dr = deform(minimum_image(positions[:, None, :] - positions[jnp.where(real, neighbors, 0)], box), deformation)
    r = jnp.sqrt(jnp.where(real, jnp.sum(dr * dr, axis=-1), 1.0))
    mask = real & (r < r_cut)
    return dr, jnp.where(mask, r, 0.5 * r_cut), mask


def pair_energy(pair_fn, positions, box, neighbors, r_cut, deformation=None):
    """sum_{i<j, r_ij < r_cut} pair_fn(r_ij) over a full dense neighbour list (kJ/mol)."""
    _, r, mask = neighbor_distances(positions, box, neighbors, r_cut, deformation)
    return 0.5 * jnp.sum(jnp.where(mask, pair_fn(r), 0.0))


def dense_neighbor_list(positions, box, r_cut, capacity=None):
    """Brute-force O(N^2) numpy reference: full dense list (N, capacity) int32 padded with N.

    For small systems and tests; raises if a row holds more than ``capacity`` neighbours.
    """
    pos, box = np.asarray(positions, np.float64), np.asarray(box, np.float64)
    dr = pos[:, None, :] - pos[None, :, :]
    dr -= box * np.round(dr / box)
    within = np.sum(dr * dr, axis=-1) < r_cut ** 2
    np.fill_diagonal(within, False)
    n, counts = len(pos), within.sum(axis=1)
    capacity = int(counts.max()) if capacity is None else capacity
    if counts.max() > capacity:
        raise ValueError(f"neighbour capacity {capacity} exceeded ({counts.max()} neighbours)")
    neighbors = np.full((n, capacity), n, np.int32)
    for i in range(n):
        j = np.flatnonzero(within[i])
        neighbors[i, :len(j)] = j
    return neighbors
