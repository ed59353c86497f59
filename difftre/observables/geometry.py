"""Minimum-image displacements over a dense neighbour list, shared by all observables.

Conventions (docs/DESIGN.md): positions (N, dim) in nm, possibly unwrapped;
box (dim,) orthorhombic edge lengths; displacement r_ij = r_i - r_j reduced to
the minimum image; dense neighbour list (N, capacity) int32 padded with N.

``deformation`` (dim, dim), where accepted, multiplies every minimum-image
displacement: dr' = deformation @ dr. This is how observables take strain
derivatives of an energy at fixed fractional coordinates (see ``stress.py``).
"""
import jax.numpy as jnp
import numpy as np


def check_orthorhombic(box):
    """Raise unless ``box`` is a (dim,) array of orthorhombic edge lengths."""
    if jnp.ndim(box) != 1:
        raise ValueError(f"only orthorhombic boxes (dim,) are supported, got shape {jnp.shape(box)}")


def volume(box):
    """Volume of an orthorhombic box (nm^dim)."""
    check_orthorhombic(box)
    return jnp.prod(box)


def minimum_image(dr, box):
    """Minimum image of displacement(s) ``dr`` (..., dim) in an orthorhombic ``box``."""
    return dr - box * jnp.round(dr / box)


def all_pairs(n):
    """Dense 'neighbour list' (n, n) holding every particle; self pairs are masked later."""
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (n, n))


def neighbor_displacements(positions, box, neighbors=None, deformation=None):
    """Displacements from each particle to its listed neighbours.

    Args:
      positions: (N, dim) nm.
      box: (dim,) nm.
      neighbors: dense list (N, capacity) padded with N; None means all pairs.
      deformation: optional (dim, dim) matrix applied to each minimum-image vector.

    Returns:
      dr: (N, capacity, dim) with dr[i, k] = r_i - r_{neighbors[i, k]} (minimum
        image, deformed); padded slots hold a dummy finite vector.
      mask: (N, capacity) bool, True for real neighbours (not padding, not i itself).
    """
    check_orthorhombic(box)
    n = positions.shape[0]
    neighbors = all_pairs(n) if neighbors is None else neighbors
    mask = (neighbors < n) & (neighbors != jnp.arange(n)[:, None])
    dr = minimum_image(positions[:, None, :] - positions[jnp.where(mask, neighbors, 0)], box)
    if deformation is not None:
        dr = dr @ deformation.T
    return dr, mask


def safe_norm(dr, mask):
    """|dr| over the last axis where ``mask``, 1 elsewhere (keeps gradients finite)."""
    sq = jnp.sum(dr**2, axis=-1)
    return jnp.sqrt(jnp.where(mask, sq, 1.0))


def dense_neighbor_list(positions, box, cutoff, capacity=None):
    """Reference O(N^2) NumPy builder of a full dense neighbour list (analysis and tests).

    The MD engine builds the lists used while sampling; this one serves
    post-processing, e.g. an RDF whose range exceeds the model cut-off.

    Args:
      positions: (N, dim) nm; box: (dim,) nm; cutoff: nm.
      capacity: columns of the list; default the largest neighbour count.

    Returns:
      int32 array (N, capacity) padded with N.

    Raises:
      ValueError: if a particle has more than ``capacity`` neighbours.
    """
    positions, box = np.asarray(positions), np.asarray(box)
    n = positions.shape[0]
    dr = positions[:, None, :] - positions[None, :, :]
    dr -= box * np.round(dr / box)
    close = np.sum(dr**2, axis=-1) < cutoff**2
    np.fill_diagonal(close, False)
    counts = close.sum(axis=1)
    capacity = int(counts.max()) if capacity is None else capacity
    if counts.max() > capacity:
        raise ValueError(f"neighbour list overflow: {counts.max()} neighbours > capacity {capacity}")
    order = np.argsort(~close, axis=1, kind="stable")[:, :capacity]
    nbrs = np.where(np.take_along_axis(close, order, axis=1), order, n)
    return np.pad(nbrs, ((0, 0), (0, capacity - nbrs.shape[1])), constant_values=n).astype(np.int32)
