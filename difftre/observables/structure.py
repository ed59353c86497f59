"""Gaussian-smoothed radial (RDF) and angular (ADF) distribution functions.

Both are differentiable in the positions: every pair distance or triplet angle
contributes a unit-area Gaussian centred on its value, evaluated at the bin
centres. Paper setup (CG water): RDF on 300 bins over [0, 1] nm, ADF on 200
bins over [0, pi], both smoothed with sigma = one bin width; ADF over triplets
j-i-k whose legs r_ij, r_ik are both shorter than 0.318 nm.

``rdf_of_trajectory`` and ``adf_of_trajectory`` give the same functions for
every state of a trajectory in one Numba call (``difftre.kernels.structure``),
for quantities computed once per reference trajectory.

Targets (experimental O-O RDF and O-O-O ADF of water, Soper & Benmore 2008)
ship in ``difftre/data/cg_water`` and are read with ``load_rdf_target`` and
``load_adf_target``.
"""
from importlib import resources
import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from difftre.kernels.neighbors import check_box_for_cutoff
from difftre.kernels.structure import angle_histograms, pair_distance_histograms
from difftre.observables.geometry import neighbor_displacements, safe_norm, volume


def bin_centers(lower, upper, n_bins):
    """Centres of ``n_bins`` equal bins on [lower, upper] (NumPy float64)."""
    width = (upper - lower) / n_bins
    return lower + width * (np.arange(n_bins) + 0.5)


WINDOW = 8.0   # each Gaussian is summed over the bins within WINDOW sigma: the rest is below exp(-32) = 1e-14


def smoothed_histogram(values, weights, centers, sigma):
    """sum_t weights_t * G_sigma(centers - values_t), G_sigma the unit-area Gaussian.

    ``values`` and ``weights`` have the same (any) shape; ``centers`` are equally spaced bin centres
    (NumPy, fixed when traced) and ``sigma`` a number. Each value adds its Gaussian to the bins
    within WINDOW sigma of it only (scatter-add), so time and memory grow with the number of
    values times 2 WINDOW sigma / spacing + 1, not with the number of bins: an RDF of 901 beads
    on 300 bins with one-bin smoothing touches 17 bins per pair and never stores a
    (pairs, bins) array, vmapped over states or not.
    """
    centers = np.asarray(centers)
    spacing = float(centers[1] - centers[0])
    half = int(math.ceil(WINDOW * float(sigma) / spacing))
    values, weights = values.reshape(-1), weights.reshape(-1)
    nearest = jnp.round((values - centers[0]) / spacing).astype(jnp.int32)
    index = nearest[:, None] + jnp.arange(-half, half + 1, dtype=jnp.int32)[None, :]
    inside = (index >= 0) & (index < centers.size)
    gaussian = norm.pdf(centers[0] + index * spacing, loc=values[:, None], scale=sigma)
    contribution = jnp.where(inside, weights[:, None] * gaussian, 0.0)
    histogram = jnp.zeros(centers.size, contribution.dtype)
    return histogram.at[jnp.where(inside, index, 0)].add(contribution)


def _default_sigma(centers, sigma):
    """One bin width unless given (a number, fixed when traced)."""
    centers = np.asarray(centers)
    return float(centers[1] - centers[0]) if sigma is None else sigma


def rdf(state, centers, sigma=None):
    """Smoothed radial distribution function g(r) of one state.

    g(r_b) = V / (N (N - 1)) * sum_{i != j} G_sigma(r_b - r_ij) / S(r_b), with
    S(r) = 4 pi r^2 in 3-D (the sphere surface in general), so g -> 1 for an
    ideal gas at r >> sigma. Pairs are taken from the dense neighbour list
    (padding masked); its cut-off must exceed the last bin centre by a few
    sigma, or the last bins miss pairs just beyond it.

    With a neighbour list this costs O(N k) for k listed neighbours; without one
    (``state.neighbors`` None) every pair, O(N^2).

    Args:
      state: ``State`` (positions (N, dim) nm, box (dim,) nm, neighbors: dense
        full list (N, capacity) padded with N, or None for all pairs).
      centers: (B,) bin centres (nm), e.g. ``bin_centers(0, 1, 300)``.
      sigma: smoothing width (nm); default one bin width.

    Returns:
      (B,) dimensionless g(r).
    """
    n, dim = state.positions.shape
    dr, mask = neighbor_displacements(state)
    hist = smoothed_histogram(safe_norm(dr, mask), mask, centers, _default_sigma(centers, sigma))
    sphere = 2 * math.pi ** (dim / 2) / math.gamma(dim / 2) * centers ** (dim - 1)
    return volume(state.box) / (n * (n - 1)) * hist / sphere


def triplet_angles(a, b, valid):
    """Angles (rad) between vectors a and b (..., dim); 0 where not ``valid``.

    arctan2(|a x b|, a . b) with |a x b|^2 = |a|^2 |b|^2 - (a . b)^2, guarded
    so that gradients stay finite for masked and collinear triplets.
    """
    dot = jnp.sum(a * b, axis=-1)
    cross_sq = jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1) - dot**2
    ok = valid & (cross_sq > 0)
    cross = jnp.where(ok, jnp.sqrt(jnp.where(ok, cross_sq, 1.0)), 0.0)
    return jnp.arctan2(cross, jnp.where(valid, dot, 1.0))


def neighbor_pairs(capacity):
    """Index arrays (a, b), a < b, of all pairs of neighbour-list slots."""
    return np.triu_indices(capacity, 1)


def adf(state, centers, sigma=None, r_cut=0.318, cutoff_width=0.005):
    """Smoothed angular distribution function P(theta) of one state.

    Triplets j-i-k (i the vertex, j != k from i's neighbour list) contribute a
    Gaussian at theta_jik with weight c(r_ij) c(r_ik), where the smooth cut-off
    c(r) = Phi((r_cut - r) / cutoff_width) is the Gaussian CDF: ~1 well inside
    r_cut, 1/2 at r_cut, ~0 beyond r_cut + 3 cutoff_width. The result is
    normalised so that sum_b P(theta_b) dtheta = 1 over [0, pi]; it is NaN for a
    state without any triplet. The neighbour list must contain all pairs out to
    r_cut + ~4 cutoff_width (``adf_list_cutoff``). With k listed neighbours per
    particle it costs O(N k^2); without a list (all pairs) O(N^3).

    Args:
      state: ``State`` (positions (N, dim) nm, box (dim,) nm, neighbors: dense
        full list (N, capacity) padded with N, or None for all pairs).
      centers: (B,) equally spaced bin centres in [0, pi], e.g.
        ``bin_centers(0, np.pi, 200)``.
      sigma: angular smoothing width (rad); default one bin width.
      r_cut: leg cut-off (nm); 0.318 nm in the paper.
      cutoff_width: width of the Gaussian-CDF cut-off (nm).

    Returns:
      (B,) P(theta) in 1/rad.
    """
    dr, mask = neighbor_displacements(state)
    leg = jnp.where(mask, norm.cdf(r_cut - safe_norm(dr, mask), scale=cutoff_width), 0.0)
    a, b = neighbor_pairs(dr.shape[1])
    theta = triplet_angles(dr[:, a], dr[:, b], mask[:, a] & mask[:, b])
    sigma = _default_sigma(centers, sigma)
    hist = smoothed_histogram(theta, leg[:, a] * leg[:, b], centers, sigma)
    return hist / (jnp.sum(hist) * (centers[1] - centers[0]))


def adf_list_cutoff(r_cut=0.318, cutoff_width=0.005):
    """Neighbour-list cut-off (nm) that holds every leg with a cut-off weight above 1e-15 (8 widths)."""
    return r_cut + 8.0 * cutoff_width


def rdf_list_cutoff(centers, sigma=None):
    """Neighbour-list cut-off (nm) that holds every pair whose Gaussian reaches the last bin above
    1e-15 of its peak (8 sigma beyond the last centre)."""
    return float(centers[-1] + 8.0 * _default_sigma(centers, sigma))


def _window_half_width(centers, sigma):
    """Bins on each side of a value's nearest bin that ``smoothed_histogram`` fills: ceil(WINDOW sigma / spacing)."""
    return int(math.ceil(WINDOW * float(sigma) / float(centers[1] - centers[0])))


def _checked_centers(centers):
    """``centers`` as float64 after checking that there are at least 2, increasing and equally spaced."""
    centers = np.asarray(centers, np.float64)
    if centers.ndim != 1 or centers.size < 2:
        raise ValueError(f"centers must be at least 2 bin centres (B,), got shape {centers.shape}")
    steps = np.diff(centers)
    if not (steps[0] > 0 and np.allclose(steps, steps[0], rtol=1e-9, atol=0.0)):
        raise ValueError("centers must be increasing and equally spaced")
    return centers


def _checked_sigma(centers, sigma):
    """The smoothing width (default one bin width) as a float, positive and finite."""
    sigma = float(_default_sigma(centers, sigma))
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite width, got {sigma}")
    return sigma


def _checked_frames_and_box(frames, box, list_cutoff):
    """(frames (S, N, 3) float32 or float64, box (3,) float64) after checking shapes and that every box
    edge exceeds 2 list cut-offs (nm)."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[2] != 3 or frames.shape[1] < 2:
        raise ValueError(f"frames must be (n_states, N, 3) positions with N >= 2, got shape {frames.shape}")
    if frames.dtype not in (np.float32, np.float64):
        frames = frames.astype(np.float64)
    box = np.asarray(box, np.float64)
    if box.shape != (3,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"box must be 3 finite positive edge lengths (nm), got {box.tolist()}")
    check_box_for_cutoff(box, list_cutoff)
    return np.ascontiguousarray(frames), box


def rdf_of_trajectory(frames, box, centers, sigma=None):
    """``rdf`` of every state of a trajectory: the same g(r), computed in Numba in one call.

    The trajectory twin of ``rdf`` (same definition, equal to ~1e-12 relative),
    for observables computed once per reference trajectory:
    g_s(r_b) = V / (N (N - 1)) * sum_{i != j} G_sigma(r_b - r_ij) / (4 pi r_b^2)
    over the pairs closer than ``rdf_list_cutoff(centers, sigma)``, each state
    with its own neighbour list (``difftre.kernels.structure``).

    Args:
      frames: (S, N, 3) positions (nm), float64 or float32 (computed in float64).
      box: (3,) orthorhombic box (nm), every edge > 2 list cut-offs.
      centers: (B,) equally spaced bin centres (nm), e.g. ``bin_centers(0, 1, 300)``.
      sigma: smoothing width (nm); default one bin width.

    Returns:
      (S, B) float64, dimensionless g(r) of each state.
    """
    centers = _checked_centers(centers)
    sigma = _checked_sigma(centers, sigma)
    list_cutoff = rdf_list_cutoff(centers, sigma)
    frames, box = _checked_frames_and_box(frames, box, list_cutoff)
    histograms = np.empty((frames.shape[0], centers.size))
    pair_distance_histograms(frames, box, centers, sigma, _window_half_width(centers, sigma), list_cutoff,
                             histograms)
    n = frames.shape[1]
    return np.prod(box) / (n * (n - 1)) * histograms / (4.0 * math.pi * centers**2)


def adf_of_trajectory(frames, box, centers, sigma=None, r_cut=0.318, cutoff_width=0.005):
    """``adf`` of every state of a trajectory: the same P(theta), computed in Numba in one call.

    The trajectory twin of ``adf`` (same definition, equal to ~1e-12 relative),
    for observables computed once per reference trajectory: triplets j-i-k with
    legs closer than ``adf_list_cutoff(r_cut, cutoff_width)``, weighted by
    c(r_ij) c(r_ik), c(r) = Phi((r_cut - r) / cutoff_width), each state with its
    own neighbour list (``difftre.kernels.structure``); every row is normalised
    to sum_b P(theta_b) dtheta = 1, NaN for a state without any triplet.

    Args:
      frames: (S, N, 3) positions (nm), float64 or float32 (computed in float64).
      box: (3,) orthorhombic box (nm), every edge > 2 list cut-offs.
      centers: (B,) equally spaced bin centres in [0, pi] (rad), e.g. ``bin_centers(0, np.pi, 200)``.
      sigma: angular smoothing width (rad); default one bin width.
      r_cut: leg cut-off (nm); 0.318 nm in the paper.
      cutoff_width: width of the Gaussian-CDF cut-off (nm).

    Returns:
      (S, B) float64, P(theta) of each state in 1/rad.
    """
    centers = _checked_centers(centers)
    sigma = _checked_sigma(centers, sigma)
    if not cutoff_width > 0:
        raise ValueError(f"cutoff_width must be positive (nm), got {cutoff_width}")
    list_cutoff = adf_list_cutoff(r_cut, cutoff_width)
    frames, box = _checked_frames_and_box(frames, box, list_cutoff)
    histograms = np.empty((frames.shape[0], centers.size))
    angle_histograms(frames, box, centers, sigma, _window_half_width(centers, sigma), float(r_cut),
                     float(cutoff_width), list_cutoff, histograms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return histograms / (histograms.sum(axis=1, keepdims=True) * (centers[1] - centers[0]))


def _data_file(name):
    return resources.files("difftre") / "data" / "cg_water" / name


def _interpolated(path, centers, upper=np.inf):
    """The checked two-column table at ``path`` (abscissae in [0, upper]) interpolated to ``centers``."""
    from difftre.io import read_xy_table   # parse errors and bad abscissae name the line

    x, y = read_xy_table(path, lower=0.0, upper=upper)
    return np.interp(centers, x, y)


def load_rdf_target(centers, path=None):
    """Target RDF interpolated to ``centers`` (nm); default: experimental water O-O RDF.

    ``path`` is a whitespace-separated two-column file (r in nm, g(r)).
    """
    return _interpolated(path or _data_file("O_O_RDF.csv"), centers)


def load_adf_target(centers, path=None):
    """Target ADF interpolated to ``centers`` (rad); default: experimental water O-O-O ADF.

    ``path`` is a whitespace-separated two-column file (theta in rad, P(theta));
    the result is renormalised with the same rule as ``adf`` (sum * dtheta = 1).
    """
    target = _interpolated(path or _data_file("O_O_O_ADF.csv"), centers, upper=np.pi * (1 + 1e-12))
    return target / (target.sum() * (centers[1] - centers[0]))
