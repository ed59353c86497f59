"""RDF and ADF: against freud and a brute-force NumPy implementation, limits, targets, gradients."""
import jax

jax.config.update("jax_enable_x64", True)

import freud  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import ndtr  # noqa: E402
from scipy.stats import norm  # noqa: E402

from difftre.observables import (  # noqa: E402
    adf, bin_centers, dense_neighbor_list, load_adf_target, load_rdf_target, rdf, weighted_average,
)
from difftre.models.state import State  # noqa: E402
from difftre.observables.geometry import neighbor_displacements, safe_norm  # noqa: E402


def state_of(positions, box, neighbors=None):
    """One ``State`` (or a stack, every leaf with a leading frame axis) from NumPy arrays."""
    return State(jnp.asarray(positions), jnp.asarray(box), None if neighbors is None else jnp.asarray(neighbors))


def noisy_fcc(cells, a, noise, seed):
    """fcc lattice of cells^3 conventional cells (lattice constant a) with Gaussian noise."""
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    positions = a * (grid + basis).reshape(-1, 3)
    positions += np.random.default_rng(seed).normal(scale=noise, size=positions.shape)
    return positions, np.full(3, cells * a)


def test_rdf_matches_freud_counts_convolved():
    positions, box = noisy_fcc(4, 0.5, 0.03, seed=0)  # L = 2 nm, 256 particles
    n, sigma = len(positions), 0.01
    centers = bin_centers(0.05, 0.9, 85)
    nbrs = dense_neighbor_list(positions, box, 0.9 + 6 * sigma)
    ours = rdf(state_of(positions, box, nbrs), jnp.asarray(centers), sigma)

    fine = freud.density.RDF(bins=960, r_max=0.96)  # freud 3.4 fails to allocate ~2000+ bins
    fine.compute(system=(freud.box.Box.cube(box[0]), positions.astype(np.float32)))
    assert fine.bin_counts.sum() == np.sum(nbrs < n)  # ordered pairs i != j, both directions
    smeared = norm.pdf(centers[:, None], loc=fine.bin_centers[None, :], scale=sigma) @ fine.bin_counts
    reference = np.prod(box) / (n * (n - 1)) * smeared / (4 * np.pi * centers**2)
    np.testing.assert_allclose(ours, reference, atol=2e-3 * reference.max())


def test_rdf_all_pairs_equals_neighbor_list():
    positions, box = noisy_fcc(3, 0.5, 0.05, seed=1)
    centers = bin_centers(0, 0.7, 70)
    nbrs = jnp.asarray(dense_neighbor_list(positions, box, 0.7 + 0.1))
    with_list = rdf(state_of(positions, box, nbrs), centers)
    all_pairs = rdf(state_of(positions, box), centers)
    np.testing.assert_allclose(with_list, all_pairs, atol=1e-10)


def test_ideal_gas_rdf_tends_to_one():
    n, length, frames = 500, 3.0, 20
    rng = np.random.default_rng(2)
    box = np.full(3, length)
    positions = rng.uniform(0, length, (frames, n, 3))
    nbrs = np.stack([dense_neighbor_list(p, box, 1.05, capacity=160) for p in positions])
    centers = bin_centers(0, 1, 300)
    states = state_of(positions, np.broadcast_to(box, (frames, 3)), nbrs)
    g = weighted_average(lambda s: rdf(s, centers), states, chunk_size=5)
    far = np.asarray(g)[centers > 0.3]
    assert abs(far.mean() - 1) < 0.01
    assert np.max(np.abs(far - 1)) < 0.08  # per-bin statistical error ~1.5 %


def brute_force_adf(positions, box, centers, sigma, r_cut, width):
    """Independent O(N^3) NumPy ADF: all ordered-free triplets j < k around every vertex i."""
    dr = positions[:, None, :] - positions[None, :, :]
    dr -= box * np.round(dr / box)
    r = np.linalg.norm(dr, axis=-1)
    hist = np.zeros_like(centers)
    for i in range(len(positions)):
        others = np.flatnonzero((np.arange(len(positions)) != i) & (r[i] < r_cut + 10 * width))
        j, k = np.triu_indices(len(others), 1)
        u, v = dr[i, others[j]], dr[i, others[k]]
        cos = np.sum(u * v, -1) / (r[i, others[j]] * r[i, others[k]])
        weight = ndtr((r_cut - r[i, others[j]]) / width) * ndtr((r_cut - r[i, others[k]]) / width)
        hist += norm.pdf(centers[:, None], loc=np.arccos(np.clip(cos, -1, 1)), scale=sigma) @ weight
    return hist / (hist.sum() * (centers[1] - centers[0]))


def test_adf_matches_brute_force_and_integrates_to_one():
    rng = np.random.default_rng(3)
    box = np.full(3, 1.5)
    positions = rng.uniform(0, 1.5, (110, 3))  # water-like number density 33 / nm^3
    centers = bin_centers(0, np.pi, 200)
    sigma = np.pi / 200
    nbrs = jnp.asarray(dense_neighbor_list(positions, box, 0.4))
    ours = np.asarray(adf(state_of(positions, box, nbrs), jnp.asarray(centers)))
    reference = brute_force_adf(positions, box, centers, sigma, 0.318, 0.005)
    np.testing.assert_allclose(ours, reference, atol=1e-8)
    assert np.sum(ours) * (centers[1] - centers[0]) == pytest.approx(1.0, abs=1e-12)


def test_adf_ideal_gas_is_sine_distributed():
    """Independent directions: P(theta) = sin(theta)/2 away from the excluded small angles."""
    rng = np.random.default_rng(4)
    box = np.full(3, 2.0)
    frames = rng.uniform(0, 2.0, (6, 264, 3))
    centers = bin_centers(0, np.pi, 20)
    states = state_of(frames, np.broadcast_to(box, (len(frames), 3)),
                      np.stack([dense_neighbor_list(f, box, 0.4, capacity=40) for f in frames]))
    p = weighted_average(lambda s: adf(s, centers, sigma=0.05), states)
    interior = (centers > 0.4) & (centers < np.pi - 0.4)
    np.testing.assert_allclose(np.asarray(p)[interior], np.sin(centers[interior]) / 2, atol=0.05)


def test_targets_are_packaged_and_interpolated():
    r = bin_centers(0, 1, 300)
    g = load_rdf_target(r)
    assert g.shape == (300,) and 0.26 < r[np.argmax(g)] < 0.30 and 2.0 < g.max() < 3.5
    assert np.all(g[r < 0.2] < 1e-3) and abs(g[-1] - 1) < 0.02
    theta = bin_centers(0, np.pi, 200)
    p = load_adf_target(theta)
    assert p.sum() * (theta[1] - theta[0]) == pytest.approx(1.0)
    assert 1.6 < theta[np.argmax(p)] < 2.0  # near-tetrahedral peak


def test_reweighted_rdf_gradient_matches_finite_differences():
    """d/dtheta of a loss on the reweighted RDF, weights = softmax(-beta (U_theta - U_ref))."""
    rng = np.random.default_rng(5)
    box = jnp.full(3, 1.2)
    positions = jnp.asarray(rng.uniform(0, 1.2, (8, 40, 3)))
    centers = bin_centers(0.1, 0.5, 40)
    target = jnp.linspace(0.5, 1.5, 40)

    def energy(theta, pos):
        dr, mask = neighbor_displacements(State(pos, box))
        r = safe_norm(dr, mask)
        return 0.5 * jnp.sum(jnp.where(mask, theta[0] * jnp.exp(-(r / theta[1]) ** 2), 0.0))

    theta_ref = jnp.array([1.0, 0.3])
    u_ref = jax.vmap(lambda p: energy(theta_ref, p))(positions)

    @jax.jit
    def loss(theta):
        weights = jax.nn.softmax(-(jax.vmap(lambda p: energy(theta, p))(positions) - u_ref))
        g = weighted_average(lambda p: rdf(State(p, box), centers), positions, weights, chunk_size=3)
        return jnp.mean((g - target) ** 2)

    theta = jnp.array([1.3, 0.25])
    grad = jax.grad(loss)(theta)
    h = 1e-6
    fd = [(loss(theta.at[i].add(h)) - loss(theta.at[i].add(-h))) / (2 * h) for i in range(2)]
    assert np.abs(np.asarray(grad)).min() > 1e-6
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


# ---------------------------------------------------------------- neighbour lists of a water state

def water_901():
    """The packaged 901-bead CG water state (positions (901, 3) nm, box (3,) nm, float64)."""
    from importlib import resources

    from difftre.io import read_gro

    with resources.as_file(resources.files("difftre") / "data" / "cg_water" / "water_901_cg.gro") as path:
        structure = read_gro(path, expected_atoms=901)
    return np.asarray(structure.positions, np.float64), np.asarray(structure.box, np.float64)


def first(states):
    """State 0 of a stack."""
    return jax.tree.map(lambda x: x[0], states)


def test_water_rdf_with_stored_list_equals_all_pairs():
    """RDF of the 901-bead water state (paper bins) over a list built at rdf_list_cutoff = all pairs."""
    from difftre.observables.structure import rdf_list_cutoff
    from difftre.states import stored_states

    positions, box = water_901()
    centers = bin_centers(0, 1, 300)
    state = first(stored_states(positions[None], box, rdf_list_cutoff(centers)))
    assert state.neighbors.shape[1] < len(positions) // 4          # a real list, not all pairs
    g_rdf = jax.jit(lambda s: rdf(s, centers))                     # jit: the all-pairs histogram stays fused
    with_list, all_pairs = np.asarray(g_rdf(state)), np.asarray(g_rdf(state._replace(neighbors=None)))
    np.testing.assert_allclose(with_list, all_pairs, rtol=1e-12, atol=0)
    assert 0.26 < centers[np.argmax(all_pairs)] < 0.30 and 2.0 < all_pairs.max() < 4.0   # it is water


def water_cube(side):
    """Beads of the water state whose wrapped positions lie in [0, side)^3, in a periodic box of that side:
    a smaller system at water density (the cut faces are not physical, which does not matter here)."""
    positions, box = water_901()
    wrapped = positions - box * np.floor(positions / box)
    return wrapped[np.all(wrapped < side, axis=1)], np.full(3, side)


def test_water_adf_with_stored_list_equals_all_pairs():
    """The all-pairs ADF is O(N^3) in memory (901 beads: ~10 GB per gathered leg array), so the
    all-pairs comparison runs on a 1.6 nm cube of the water state (134 beads, ~2.4 GB peak under jit)."""
    from difftre.observables.structure import adf_list_cutoff
    from difftre.states import stored_states

    positions, box = water_cube(1.6)
    assert 120 < len(positions) < 150
    centers = bin_centers(0, np.pi, 200)
    state = first(stored_states(positions[None], box, adf_list_cutoff()))
    g_adf = jax.jit(lambda s: adf(s, centers))
    with_list, all_pairs = np.asarray(g_adf(state)), np.asarray(g_adf(state._replace(neighbors=None)))
    np.testing.assert_allclose(with_list, all_pairs, rtol=1e-12, atol=0)


def test_water_901_adf_with_stored_list():
    """The full 901-bead state, list only: equals the independent NumPy triplet sum, and a list at a much
    larger cut-off (every leg up to 0.6 nm: weights beyond adf_list_cutoff are below 1e-15)."""
    from difftre.observables.structure import adf_list_cutoff
    from difftre.states import stored_states

    positions, box = water_901()
    centers = bin_centers(0, np.pi, 200)
    g_adf = jax.jit(lambda s: adf(s, centers))
    state = first(stored_states(positions[None], box, adf_list_cutoff()))
    ours = np.asarray(g_adf(state))
    wide = np.asarray(g_adf(first(stored_states(positions[None], box, 0.6))))
    # relative to the peak: bins at small angles (~1e-300 here) hold only triplets with a leg beyond the list
    # cut-off, whose weight (< 1e-15 each) the list drops by design
    np.testing.assert_allclose(ours, wide, rtol=1e-12, atol=1e-12 * wide.max())
    reference = brute_force_adf(positions, box, centers, np.pi / 200, 0.318, 0.005)
    np.testing.assert_allclose(ours, reference, atol=1e-8)
    assert np.sum(ours) * (centers[1] - centers[0]) == pytest.approx(1.0, abs=1e-12)
    assert 1.6 < centers[np.argmax(ours)] < 2.0                    # near-tetrahedral peak
