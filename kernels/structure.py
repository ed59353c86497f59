"""Gaussian-smoothed pair-distance and triplet-angle histograms of a whole trajectory (Numba, 3-D).

The trajectory twins of the JAX observables ``difftre.observables.structure.rdf``
and ``adf`` before their normalisation: one compiled call fills the histograms
of every stored state, the states spread over Numba's threads (``prange``; each
state writes only its own row, so the result does not depend on the thread
count). Each state gets its own neighbour list (`neighbors.build`, regrown
until nothing is dropped) and minimum-image displacements.

Units: positions and box edges in nm, distances in nm, angles in rad; a
histogram is a sum of unit-area Gaussians, so in 1/nm (distances) or 1/rad
(angles) per counted pair or (weighted) triplet.

Smoothing, exactly as ``smoothed_histogram``: a value v adds
weight * G_sigma(c0 + b * spacing - v) to the bins b = nearest - half ..
nearest + half inside [0, B), nearest = rint((v - c0) / spacing) (half to
even), half = ceil(WINDOW sigma / spacing) computed by the caller. The Gaussian
on the equally spaced bins is built outward from the nearest bin by the
recurrence G(z + d) = G(z) exp(-z d - d^2 / 2) (three exponentials per value
instead of one per bin, 3x faster for the 17-bin window of one-bin smoothing;
relative rounding ~ half^2 machine epsilons).
"""
import math

import numpy as np
from numba import prange

from difftre.kernels import neighbors
from difftre.kernels.jit import kernel
from difftre.kernels.space import displacement

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


@kernel(inline="always")
def _add_gaussian(value, weight, c0, spacing, sigma, half, histogram):
    """histogram[b] += weight * G_sigma(c0 + b * spacing - value) for the bins within `half` of the
    nearest one (value, c0, spacing, sigma in the same unit)."""
    n_bins = histogram.shape[0]
    nearest = int(np.rint((value - c0) / spacing))
    if nearest + half < 0 or nearest - half >= n_bins:
        return
    step = spacing / sigma                       # d: bin spacing in units of sigma
    z = (c0 + nearest * spacing - value) / sigma
    peak = weight * _INV_SQRT_2PI / sigma * np.exp(-0.5 * z * z)
    up = np.exp(-z * step - 0.5 * step * step)   # G(z + d) / G(z)
    down = np.exp(z * step - 0.5 * step * step)  # G(z - d) / G(z)
    squeeze = np.exp(-step * step)               # how both ratios shrink per bin
    if 0 <= nearest < n_bins:
        histogram[nearest] += peak
    value_up = peak
    value_down = peak
    for k in range(1, half + 1):
        value_up *= up
        value_down *= down
        up *= squeeze
        down *= squeeze
        if 0 <= nearest + k < n_bins:
            histogram[nearest + k] += value_up
        if 0 <= nearest - k < n_bins:
            histogram[nearest - k] += value_down


@kernel(inline="always")
def _leg_weight(r, r_cut, cutoff_width):
    """Smooth leg cut-off Phi((r_cut - r) / cutoff_width), Phi the standard normal CDF."""
    return 0.5 * math.erfc(-(r_cut - r) / cutoff_width * _INV_SQRT_2)


@kernel(inline="always")
def _angle(ax, ay, az, bx, by, bz):
    """Angle (rad) between vectors a and b: arctan2(|a x b|, a . b), 0 or pi when collinear."""
    dot = ax * bx + ay * by + az * bz
    cross_sq = (ax * ax + ay * ay + az * az) * (bx * bx + by * by + bz * bz) - dot * dot
    cross = math.sqrt(cross_sq) if cross_sq > 0.0 else 0.0
    return math.atan2(cross, dot)


@kernel
def _initial_capacity(n, box, list_cutoff, half_list):
    """Neighbour-list columns for the ideal-gas count within list_cutoff, with headroom (build regrows
    it when a state needs more)."""
    sphere = 4.0 / 3.0 * np.pi * list_cutoff ** 3
    expected = n / (box[0] * box[1] * box[2]) * sphere * (0.5 if half_list else 1.0)
    return int(1.5 * expected) + 16


@kernel
def _float64_copy(frame):
    """The positions of one frame (N, 3) as a new float64 array (the per-state kernels below are
    compiled for float64 only, whatever the frames' dtype)."""
    positions = np.empty(frame.shape)
    positions[:] = frame
    return positions


@kernel
def _neighbor_list(positions, box, list_cutoff, half_list):
    """(nbr_idx, nbr_count) listing every pair closer than list_cutoff (half or full list)."""
    n = positions.shape[0]
    nbr_idx = np.empty((n, _initial_capacity(n, box, list_cutoff, half_list)), np.int32)
    nbr_count = np.empty(n, np.int32)
    reference = np.empty((n, 3))
    nbr_idx = neighbors.build(positions, box, list_cutoff, half_list, nbr_idx, nbr_count, reference)
    return nbr_idx, nbr_count


@kernel
def _pair_distance_histogram(positions, box, c0, spacing, sigma, half, list_cutoff, histogram):
    """One state of `pair_distance_histograms` (float64 positions): each pair of a half list counts
    twice (i j and j i)."""
    nbr_idx, nbr_count = _neighbor_list(positions, box, list_cutoff, True)
    inv_box = 1.0 / box
    histogram[:] = 0.0
    for i in range(positions.shape[0]):
        for k in range(nbr_count[i]):
            _, _, _, r2 = displacement(positions, i, nbr_idx[i, k], box, inv_box)
            _add_gaussian(math.sqrt(r2), 2.0, c0, spacing, sigma, half, histogram)


@kernel(parallel=True)
def pair_distance_histograms(frames, box, centers, sigma, half, list_cutoff, out):
    """Smoothed pair-distance histograms of every state.

    out[s, b] = sum over ordered pairs i != j with r_ij < list_cutoff of
    G_sigma(centers[b] - r_ij), restricted to the bins within `half` of the
    nearest one (module doc); 1/nm.

    Args:
      frames: (S, N, 3) float64 or float32 positions (nm).
      box: (3,) float64 orthorhombic periodic box (nm), every edge > 2 list_cutoff.
      centers: (B,) equally spaced bin centres (nm); only centers[0] and the spacing are read.
      sigma: Gaussian width (nm).
      half: bins on each side of the nearest one, ceil(WINDOW sigma / spacing).
      list_cutoff: pairs at least this far apart (nm) are left out.
      out: (S, B) float64, overwritten.
    """
    c0 = centers[0]
    spacing = centers[1] - centers[0]
    for s in prange(frames.shape[0]):
        _pair_distance_histogram(_float64_copy(frames[s]), box, c0, spacing, sigma, half, list_cutoff, out[s])


@kernel
def _angle_histogram(positions, box, c0, spacing, sigma, half, r_cut, cutoff_width, list_cutoff, histogram):
    """One state of `angle_histograms` (float64 positions)."""
    nbr_idx, nbr_count = _neighbor_list(positions, box, list_cutoff, False)
    inv_box = 1.0 / box
    legs = np.empty((nbr_idx.shape[1], 3))
    weights = np.empty(nbr_idx.shape[1])
    histogram[:] = 0.0
    for i in range(positions.shape[0]):
        count = nbr_count[i]
        for k in range(count):
            dx, dy, dz, r2 = displacement(positions, i, nbr_idx[i, k], box, inv_box)
            legs[k, 0], legs[k, 1], legs[k, 2] = dx, dy, dz
            weights[k] = _leg_weight(math.sqrt(r2), r_cut, cutoff_width)
        for a in range(count):
            for b in range(a + 1, count):
                theta = _angle(legs[a, 0], legs[a, 1], legs[a, 2], legs[b, 0], legs[b, 1], legs[b, 2])
                _add_gaussian(theta, weights[a] * weights[b], c0, spacing, sigma, half, histogram)


@kernel(parallel=True)
def angle_histograms(frames, box, centers, sigma, half, r_cut, cutoff_width, list_cutoff, out):
    """Smoothed, cut-off-weighted triplet-angle histograms of every state.

    out[s, b] = sum over vertices i and unordered pairs {j, k} (j != k) of i's
    neighbours closer than list_cutoff of c(r_ij) c(r_ik) G_sigma(centers[b] -
    theta_jik), c(r) = Phi((r_cut - r) / cutoff_width), restricted to the bins
    within `half` of the nearest one (module doc); 1/rad.

    Args:
      frames: (S, N, 3) float64 or float32 positions (nm).
      box: (3,) float64 orthorhombic periodic box (nm), every edge > 2 list_cutoff.
      centers: (B,) equally spaced bin centres (rad); only centers[0] and the spacing are read.
      sigma: Gaussian width (rad).
      half: bins on each side of the nearest one, ceil(WINDOW sigma / spacing).
      r_cut: leg cut-off (nm), where c = 1/2.
      cutoff_width: width of the Gaussian-CDF cut-off (nm).
      list_cutoff: legs at least this long (nm) are left out.
      out: (S, B) float64, overwritten.
    """
    c0 = centers[0]
    spacing = centers[1] - centers[0]
    for s in prange(frames.shape[0]):
        _angle_histogram(_float64_copy(frames[s]), box, c0, spacing, sigma, half, r_cut, cutoff_width, list_cutoff,
                         out[s])
