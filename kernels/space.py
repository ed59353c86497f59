"""Periodic orthorhombic boxes: minimum image and wrapping (Numba).

A box is a float array of edge lengths (dim,) in nm. Positions are kept
unwrapped by the engine; every distance goes through `minimum_image`.
A triclinic box would be a (dim, dim) matrix; functions here check
``box.ndim == 1`` at the Python entry points (``check_orthorhombic``).
"""
import numpy as np
from difftre.kernels.jit import kernel


@kernel(inline="always")
def minimum_image(d, length, inv_length):
    """Nearest periodic image of one displacement component d in a box edge `length` (inv_length = 1/length)."""
    return d - length * np.rint(d * inv_length)


@kernel(inline="always")
def displacement(positions, i, j, box, inv_box):
    """(dx, dy, dz, squared length) of the minimum image of r_j - r_i (3-D; nm, nm^2)."""
    dx = minimum_image(positions[j, 0] - positions[i, 0], box[0], inv_box[0])
    dy = minimum_image(positions[j, 1] - positions[i, 1], box[1], inv_box[1])
    dz = minimum_image(positions[j, 2] - positions[i, 2], box[2], inv_box[2])
    return dx, dy, dz, dx * dx + dy * dy + dz * dz


@kernel(inline="always")
def wrap(x, length):
    """Coordinate x wrapped into [0, length)."""
    return x - length * np.floor(x / length)


def check_orthorhombic(box, dim, name="box"):
    """Validate an orthorhombic box: finite positive edge lengths, one per dimension."""
    box = np.asarray(box)
    if box.ndim != 1 or box.shape[0] != dim:
        raise ValueError(f"{name} must be the {dim} edge lengths of an orthorhombic box, got shape {box.shape}")
    if not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"{name} edge lengths must be finite and positive, got {box.tolist()}")
    return box


def volume(box):
    """Box volume (nm^dim)."""
    return float(np.prod(box))
