import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from difftre.models.geometry import dense_neighbor_list  # noqa: E402
from difftre.models.priors import harmonic, lennard_jones, repulsive, stillinger_weber  # noqa: E402
from difftre.models.state import State  # noqa: E402

EV = 96.485332  # kJ/mol per eV
SI = dict(sigma=0.20951, epsilon=2.1683 * EV)   # silicon, nm and kJ/mol
A_SI = 0.5431                                  # lattice constant (nm)


def diamond(cells, a):
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    basis = np.concatenate([fcc, fcc + 0.25])
    shifts = np.array(list(np.ndindex(cells, cells, cells)))
    return a * (shifts[:, None, :] + basis[None]).reshape(-1, 3), np.full(3, cells * a)


def random_gas(n, box, min_dist, seed):
    rng, pos = np.random.default_rng(seed), np.zeros((0, len(box)))
    while len(pos) < n:
        x = rng.uniform(0, box)
        d = pos - x
        d -= box * np.round(d / box)
        if np.all(np.linalg.norm(d, axis=1) > min_dist):
            pos = np.vstack([pos, x])
    return pos


def at(energy_fn, pos, box, nbrs=None):
    """U of a prior (params None) at positions ``pos`` in ``box`` with the neighbour list ``nbrs``."""
    return energy_fn(None, State(pos, box, nbrs))


def check_forces(energy_fn, pos, box, nbrs, atoms=range(4), eps=1e-6, rtol=1e-6):
    """-grad U equals central finite differences of U for a few atoms (float64)."""
    energy = jax.jit(lambda x: at(energy_fn, x, box, nbrs))
    force = -jax.grad(energy)(pos)
    assert np.all(np.isfinite(force))
    for i in atoms:
        for d in range(pos.shape[1]):
            p, m = pos.copy(), pos.copy()
            p[i, d] += eps
            m[i, d] -= eps
            fd = -(float(energy(p)) - float(energy(m))) / (2 * eps)
            np.testing.assert_allclose(force[i, d], fd, rtol=rtol, atol=rtol * np.abs(force).max())


def test_harmonic():
    energy_fn = harmonic(150.0, 0.5, dtype=np.float64)   # the double-well prior 75 (x - 0.5)^2
    x = np.array([[0.3], [1.7], [-0.1]])
    np.testing.assert_allclose(at(energy_fn, x, np.ones(1)), 75 * np.sum((x % 1.0 - 0.5) ** 2), rtol=1e-12)
    energy_3d = harmonic(3.0, np.array([1.0, 2.0, 0.5]), dtype=np.float64)
    pos = np.random.default_rng(0).uniform(-3, 6, (6, 3))
    check_forces(energy_3d, pos, np.array([2.0, 3.0, 2.5]), None, atoms=range(6))


def lj_np(r, s=0.3, e=1.2):
    return 4 * e * ((s / r) ** 12 - (s / r) ** 6)


@pytest.mark.parametrize("make, pair_np", [
    (lambda dt: lennard_jones(1.2, 0.3, 0.9, dtype=dt), lj_np),
    (lambda dt: lennard_jones(1.2, 0.3, 0.9, shift=True, dtype=dt), lambda r: lj_np(r) - lj_np(0.9)),
    (lambda dt: repulsive(1.0, 0.3165, 0.9, dtype=dt), lambda r: (0.3165 / r) ** 12),
    (lambda dt: repulsive(2.0, 0.3, 0.9, exponent=6, dtype=dt), lambda r: 2.0 * (0.3 / r) ** 6),
])
def test_pair_priors_forces_and_double_loop(make, pair_np):
    box = np.array([2.0, 2.2, 2.1])
    pos = random_gas(40, box, 0.27, seed=1) + 2.0 * box   # unwrapped copy
    nbrs = dense_neighbor_list(pos, box, 1.0, capacity=60)  # padding and pairs beyond r_cut
    energy_fn = make(np.float64)
    check_forces(energy_fn, pos, box, nbrs)
    ref = 0.0
    for i in range(len(pos)):
        d = pos[i] - pos[i + 1:]
        r = np.linalg.norm(d - box * np.round(d / box), axis=1)
        ref += np.sum(pair_np(r[r < 0.9]))
    np.testing.assert_allclose(at(energy_fn, pos, box, nbrs), ref, rtol=1e-12)
    e32 = at(make(np.float32), pos, box, nbrs)
    assert e32.dtype == np.float32
    np.testing.assert_allclose(e32, ref, rtol=1e-4)


def test_lj_values_and_shift():
    def pair(energy_fn, r):   # one pair at distance r
        return at(energy_fn, np.array([[0.0, 0, 0], [r, 0, 0]]), np.full(3, 5.0), np.array([[1], [0]], np.int32))
    plain = lennard_jones(1.2, 0.3, 0.9, dtype=np.float64)
    shifted = lennard_jones(1.2, 0.3, 0.9, shift=True, dtype=np.float64)
    np.testing.assert_allclose(pair(plain, 0.3 * 2 ** (1 / 6)), -1.2, rtol=1e-12)
    np.testing.assert_allclose(pair(shifted, 0.5), lj_np(0.5) - lj_np(0.9), rtol=1e-12)
    assert abs(pair(shifted, 0.9 - 1e-12)) < 1e-12 and pair(shifted, 0.9) == 0.0 and pair(plain, 0.95) == 0.0
    np.testing.assert_allclose(pair(plain, 0.9 - 1e-12), lj_np(0.9), rtol=1e-9)    # truncated, not shifted


def test_sw_diamond_silicon_energy():
    pos, box = diamond(2, A_SI)
    nbrs = dense_neighbor_list(pos, box, 1.8 * SI["sigma"])
    assert nbrs.shape == (64, 4)
    for dtype in (np.float64, np.float32):
        e = at(stillinger_weber(**SI, dtype=dtype), pos, box, nbrs)
        assert e.dtype == dtype
        np.testing.assert_allclose(e / len(pos) / EV, -4.3366, rtol=1e-4)


def sw_distorted(seed=0):
    pos, box = diamond(2, A_SI)
    pos = pos + np.random.default_rng(seed).normal(0, 0.01, pos.shape)
    return pos, box, dense_neighbor_list(pos, box, 1.8 * SI["sigma"], capacity=12)


def test_sw_forces_match_fd():
    pos, box, nbrs = sw_distorted()
    check_forces(stillinger_weber(**SI, dtype=np.float64), pos, box, nbrs, atoms=range(3))
    # the paper's diamond-carbon prior
    check_forces(stillinger_weber(200.0, 0.14, dtype=np.float64), pos * 0.14 / SI["sigma"],
                 box * 0.14 / SI["sigma"], nbrs, atoms=range(2))


def test_sw_three_body_matches_explicit_sum():
    pos, box, nbrs = sw_distorted(1)
    lam_sw = stillinger_weber(**SI, dtype=np.float64)
    two_body = stillinger_weber(**SI, lam=0.0, dtype=np.float64)
    s, eps, rc = SI["sigma"], SI["epsilon"], 1.8 * SI["sigma"]
    ref = 0.0
    for i in range(len(pos)):
        js = [j for j in nbrs[i] if j < len(pos)]
        vec = [(pos[i] - pos[j]) - box * np.round((pos[i] - pos[j]) / box) for j in js]
        vec = [v for v in vec if np.linalg.norm(v) < rc]
        for a in range(len(vec)):
            for b in range(a + 1, len(vec)):
                ra, rb = np.linalg.norm(vec[a]), np.linalg.norm(vec[b])
                cos = vec[a] @ vec[b] / (ra * rb)
                ref += 21.0 * eps * (cos + 1 / 3) ** 2 * np.exp(1.2 * s / (ra - rc)) * np.exp(1.2 * s / (rb - rc))
    np.testing.assert_allclose(at(lam_sw, pos, box, nbrs) - at(two_body, pos, box, nbrs), ref, rtol=1e-10)


def test_sw_translation_and_permutation_invariance():
    pos, box, nbrs = sw_distorted(2)
    prior = jax.jit(stillinger_weber(**SI, dtype=np.float64))
    energy_fn = lambda x, b, nb: at(prior, x, b, nb)  # noqa: E731
    e = energy_fn(pos, box, nbrs)
    shifted = pos + np.array([0.37, -1.9, 5.3])
    np.testing.assert_allclose(energy_fn(shifted, box, dense_neighbor_list(shifted, box, 0.38, 12)), e, rtol=1e-12)
    perm = np.random.default_rng(0).permutation(len(pos))
    np.testing.assert_allclose(energy_fn(pos[perm], box, dense_neighbor_list(pos[perm], box, 0.38, 12)), e,
                               rtol=1e-12)
    # a neighbour list with a shuffled, wider row layout gives the same energy
    wide = dense_neighbor_list(pos, box, 0.45, 40)
    rng = np.random.default_rng(1)
    np.testing.assert_allclose(energy_fn(pos, box, np.array([rng.permutation(row) for row in wide])), e,
                               rtol=1e-12)


@pytest.mark.parametrize("prior", [lennard_jones(1.2, 0.3, 0.9, dtype=np.float64),
                                   stillinger_weber(**SI, dtype=np.float64)])
def test_deformation_is_the_affinely_strained_configuration(prior):
    """A diagonal deformation F of an orthorhombic state equals positions and box scaled by F."""
    pos, box, _ = sw_distorted(3)
    f = np.array([1.03, 0.98, 1.01])
    nbrs = dense_neighbor_list(pos, box, 1.0, capacity=200)   # covers the cut-offs before and after
    deformed = prior(None, State(pos, box, nbrs, deformation=np.diag(f)))
    np.testing.assert_allclose(deformed, at(prior, pos * f, box * f, nbrs), rtol=1e-12)
    assert abs(float(deformed) - float(at(prior, pos, box, nbrs))) > 1e-6 * abs(float(deformed))   # F acts
