"""DimeNet++ and its sparse graph: structure, capacity handling, symmetries, forces, NVE."""
import re

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import special  # noqa: E402

from difftre.models import dimenet as dn  # noqa: E402
from difftre.models import graph as gr  # noqa: E402
from difftre.models.geometry import minimum_image  # noqa: E402
from difftre.models.state import State  # noqa: E402

CUT = 0.5           # nm, water cut-off
N, K = 40, 40       # atoms, neighbour-list capacity
E_CAP, T_CAP = 800, 12000
SMALL = dict(embed_size=8, out_embed_size=8, int_embed_size=4, basis_embed_size=4, type_embed_size=4,
             n_interactions=1)   # a small network for tests of the plumbing


# ----------------------------------------------------------------------------- helpers

def min_image(dr, box):
    return dr - box * np.round(dr / box)


def brute_force_neighbors(pos, box, r_list, capacity):
    """Full dense neighbour list (N, capacity) int32, minimum image, padded with N."""
    n = len(pos)
    dr = min_image(pos[:, None] - pos[None], box)
    within = np.sum(dr * dr, -1) < r_list ** 2
    np.fill_diagonal(within, False)
    assert within.sum(1).max() <= capacity
    nbrs = np.full((n, capacity), n, np.int32)
    for i in range(n):
        j = np.flatnonzero(within[i])
        nbrs[i, :len(j)] = j
    return nbrs


def add_random_atoms(pos, n, sample, box, d_min, rng):
    """Random sequential addition: append atoms from ``sample()`` at distance >= d_min."""
    pos = list(pos)
    while len(pos) < n:
        x = sample(rng)
        if not pos or np.min(np.sum(min_image(np.array(pos) - x, box) ** 2, -1)) >= d_min ** 2:
            pos.append(x)
    return np.array(pos)


@pytest.fixture(scope="module")
def cluster():
    """40 atoms in a 4 nm box: a sphere of radius 0.75 nm (with atoms 0-2 exactly
    collinear, 0.3 nm apart) and atom 3 isolated 1.35 nm from the centre (>= 0.6 nm
    from every atom and image, also after rotations about the centre). Returns (pos, box)."""
    box = np.full(3, 4.0)
    c = np.full(3, 2.0)
    seed = [c + [-0.3, 0, 0], c.copy(), c + [0.3, 0, 0], c + 1.35 / np.sqrt(3)]

    def in_sphere(rng):
        while True:
            x = rng.uniform(-0.75, 0.75, 3)
            if x @ x < 0.75 ** 2:
                return c + x
    return add_random_atoms(seed, N, in_sphere, box, 0.25, np.random.default_rng(1)), box


@pytest.fixture(scope="module")
def periodic():
    """40 atoms in a periodic 1.1 nm cube (about water density), d_min 0.25 nm."""
    box = np.full(3, 1.1)
    return add_random_atoms([], N, lambda rng: rng.uniform(0, 1.1, 3), box, 0.25,
                            np.random.default_rng(2)), box


@pytest.fixture(scope="module")
def params64():
    return dn.init_dimenet(jax.random.PRNGKey(0), dtype=np.float64)


MODEL = dn.dimenet(CUT, E_CAP, T_CAP)


@jax.jit
def energy_grads(params, pos, box, nbrs):
    """(energy, forces, dU/dparams), the graph rebuilt from ``nbrs`` at ``pos`` inside the model."""
    e, (g_params, g_pos) = jax.value_and_grad(lambda p, r: MODEL(p, State(r, box, nbrs)), (0, 1))(params, pos)
    return e, -g_pos, g_params


def evaluate(params, pos, box, r_list=CUT + 0.1):
    e, f, _ = energy_grads(params, jnp.asarray(pos), jnp.asarray(box), brute_force_neighbors(pos, box, r_list, K))
    assert np.isfinite(e)    # NaN would mean the graph overflowed
    return float(e), np.asarray(f)


# ----------------------------------------------------------------------------- basis functions

def test_spherical_bessel_closed_form_matches_scipy():
    x = np.concatenate([[0.0], np.logspace(-4, 0, 40), np.linspace(1, 30, 500)])
    for l in range(7):
        ref = special.spherical_jn(l, x)
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 5e-6)):
            val = np.asarray(dn.spherical_jn(l, jnp.asarray(x, dtype)))
            assert val.dtype == dtype
            np.testing.assert_allclose(val, ref, atol=tol * np.abs(ref).max(), rtol=tol)
    roots = dn.spherical_bessel_roots(7, 6)
    assert np.allclose(special.spherical_jn(np.arange(7)[:, None], roots), 0, atol=1e-12)
    assert np.all(np.diff(roots, axis=1) > 0) and np.allclose(roots[0], np.pi * np.arange(1, 7))
    assert float(dn.envelope(jnp.asarray(1.0))) == 0.0
    x = jnp.linspace(0, 0.999, 7)
    np.testing.assert_allclose(dn.envelope(x), 1 - 28 * x ** 6 + 48 * x ** 7 - 21 * x ** 8)


# ----------------------------------------------------------------------------- graph

def test_graph_matches_brute_force(periodic):
    pos, box = periodic
    nbrs = brute_force_neighbors(pos, box, CUT + 0.2, K)   # list with a skin: graph must cut
    build = gr.graph_from_neighbors(nbrs, pos, box, CUT, E_CAP, T_CAP)
    g = build.graph
    dr = min_image(pos[:, None] - pos[None], box)
    within = np.sum(dr * dr, -1) < CUT ** 2
    np.fill_diagonal(within, False)
    deg = within.sum(1)
    assert not build.overflowed
    assert int(build.needed_edges) == within.sum() == int(g.edge_mask.sum())
    assert int(build.needed_triplets) == np.sum(deg * (deg - 1)) == int(g.triplet_mask.sum())

    em, tm = np.asarray(g.edge_mask), np.asarray(g.triplet_mask)
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    assert set(zip(r[em], s[em])) == set(zip(*np.nonzero(within)))
    assert np.all(s[~em] == N) and np.all(r[~em] == N) and np.all(np.diff(r) >= 0)
    kj, ji = np.asarray(g.triplet_kj)[tm], np.asarray(g.triplet_ji)[tm]
    assert np.all(em[kj] & em[ji])
    assert np.all(r[kj] == s[ji]) and np.all(s[kj] != r[ji])          # k->j, j->i, k != i
    assert len(set(zip(kj, ji))) == len(kj)
    assert np.all(np.asarray(g.triplet_kj)[~tm] == E_CAP)
    assert g.senders.dtype == g.triplet_kj.dtype == jnp.int32


def test_capacity_regrow_and_overflow(periodic, params64):
    pos, box = periodic
    nbrs = brute_force_neighbors(pos, box, CUT + 0.1, K)
    state = State(pos, box, nbrs)
    needed_e, needed_t = (int(c) for c in gr.graph_counts(nbrs, pos, box, CUT))

    grown = (int(np.ceil(1.25 * needed_e)), int(np.ceil(1.25 * needed_t)))
    assert gr.graph_capacities(state, CUT) == grown
    assert gr.graph_capacities(state, CUT, (10, 10)) == grown
    assert gr.graph_capacities(state, CUT, (10, T_CAP)) == (grown[0], T_CAP)     # only what overflows regrows
    assert gr.graph_capacities(state, CUT, (E_CAP, T_CAP)) == (E_CAP, T_CAP)     # fits: kept
    # over a stack of states: the largest need (the second state is denser: the same atoms squeezed)
    squeezed = State(pos * 0.9, box * 0.9, brute_force_neighbors(pos * 0.9, box * 0.9, CUT + 0.1, K))
    stack = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), state, squeezed)
    needed_squeezed = [int(c) for c in gr.graph_counts(squeezed.neighbors, squeezed.positions, squeezed.box, CUT)]
    assert needed_squeezed[0] > needed_e and needed_squeezed[1] > needed_t
    assert gr.graph_capacities(stack, CUT) == gr.graph_capacities(squeezed, CUT)

    tight = dn.dimenet(CUT, *grown)
    big = gr.graph_from_neighbors(nbrs, pos, box, CUT, E_CAP, T_CAP).graph
    # padded entries contribute exactly nothing: tight and padded graphs agree
    assert E_CAP > grown[0] and not bool(big.triplet_mask.all())
    np.testing.assert_allclose(jax.jit(tight)(params64, state), jax.jit(MODEL)(params64, state), rtol=1e-12)
    # an overflowing graph is never silent: NaN energy and NaN gradients, inside jit (small network: fast)
    small = dn.init_dimenet(jax.random.PRNGKey(11), dtype=np.float64, **SMALL)
    for e_cap, t_cap in ((needed_e - 1, T_CAP), (E_CAP, needed_t - 1)):
        model = dn.dimenet(CUT, e_cap, t_cap)
        e, (g_params, g_pos) = jax.jit(jax.value_and_grad(lambda p, x: model(p, State(x, box, nbrs)), (0, 1)))(
            small, pos)
        assert np.isnan(e) and np.all(np.isnan(g_pos))
        assert all(np.all(np.isnan(x)) for x in jax.tree_util.tree_leaves(g_params))

    for e_cap, t_cap, which in ((10, T_CAP, "edge"), (E_CAP, 10, "triplet"), (10, 10, "edge")):
        g, ne, nt, overflowed = gr.graph_from_neighbors(nbrs, pos, box, CUT, e_cap, t_cap)
        assert bool(overflowed) and (int(ne), int(nt)) == (needed_e, needed_t)
        with pytest.raises(gr.GraphCapacityError, match=f"{which} capacity 10 < "):
            gr.check_capacity(g, ne, nt)
    gr.check_capacity(big, needed_e, needed_t)   # fits: no error


# ----------------------------------------------------------------------------- model

def test_default_hyper_parameters_count_and_precision(periodic):
    pos, box = periodic
    p32 = dn.init_dimenet(jax.random.PRNGKey(3))
    n_params = dn.param_count(p32)
    print(f"\nDimeNet++ default hyper-parameters: {n_params} parameters")
    assert n_params == 121398                  # 1.2e5 as in the paper
    assert {x.dtype for x in jax.tree_util.tree_leaves(p32)} == {np.dtype(np.float32)}

    nbrs = brute_force_neighbors(pos, box, CUT, K)
    energy = jax.jit(MODEL)
    e32 = energy(p32, State(pos, box, nbrs))    # float64 positions are converted to float32
    assert e32.dtype == jnp.float32 and e32.shape == ()
    force = jax.grad(lambda p, x: MODEL(p, State(x, box.astype(np.float32), nbrs)), argnums=1)
    jaxpr = str(jax.make_jaxpr(force)(p32, pos.astype(np.float32)))
    assert not re.search(r"f64\[\d", jaxpr)       # no float64 arrays (only weak Python scalars)
    p64 = jax.tree_util.tree_map(lambda x: x.astype(np.float64), p32)
    e64 = energy(p64, State(pos, box, nbrs))
    assert e64.dtype == jnp.float64
    np.testing.assert_allclose(e32, e64, rtol=1e-4)
    with pytest.raises(TypeError):
        dn.init_dimenet(jax.random.PRNGKey(0), embed_sise=8)


def test_species_small_network(periodic):
    """n_species = 2 with a small network: species matter, and (species, atoms) permute together."""
    pos, box = periodic
    hyper = dict(SMALL, n_species=2, cutoff=CUT)
    params = dn.init_dimenet(jax.random.PRNGKey(9), dtype=np.float64, **hyper)
    assert params["embedding"]["species"].shape == (2, 4)
    state = State(pos, box, brute_force_neighbors(pos, box, CUT, K))
    capacities = gr.graph_capacities(state, CUT)

    def energy(species, state):
        return dn.dimenet(edge_capacity=capacities[0], triplet_capacity=capacities[1], species=species,
                          **hyper)(params, state)
    species = np.arange(N) % 2
    e0 = energy(species, state)
    assert abs(float(e0 - energy(1 - species, state))) > 1e-6 * abs(float(e0))
    perm = np.random.default_rng(10).permutation(N)
    permuted = State(pos[perm], box, brute_force_neighbors(pos[perm], box, CUT, K))
    np.testing.assert_allclose(energy(species[perm], permuted), e0, rtol=1e-10)


def test_invariance_cluster(cluster, params64):
    """General rotation, periodic translation and permutation of an isolated cluster."""
    pos, box = cluster
    e0, f0 = evaluate(params64, pos, box)
    assert np.all(np.isfinite(f0)) and abs(e0) > 1e-3
    assert np.allclose(f0[3], 0.0)              # isolated atom

    rot, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))
    centre = box / 2
    e, f = evaluate(params64, (pos - centre) @ rot.T + centre, box)
    np.testing.assert_allclose(e, e0, rtol=1e-10)
    np.testing.assert_allclose(f, f0 @ rot.T, atol=1e-9 * np.abs(f0).max())

    shift = np.array([1.37, -2.71, 3.9])        # cluster straddles the boundary, unwrapped
    for moved in (pos + shift, (pos + shift) % box):
        e, f = evaluate(params64, moved, box)
        np.testing.assert_allclose(e, e0, rtol=1e-10)
        np.testing.assert_allclose(f, f0, atol=1e-9 * np.abs(f0).max())

    perm = np.random.default_rng(5).permutation(N)
    e, f = evaluate(params64, pos[perm], box)
    np.testing.assert_allclose(e, e0, rtol=1e-10)
    np.testing.assert_allclose(f, f0[perm], atol=1e-9 * np.abs(f0).max())


def test_invariance_periodic_cell(periodic, params64):
    """Cubic-symmetry rotation (signed axis permutation) and translation of a periodic cell."""
    pos, box = periodic
    e0, f0 = evaluate(params64, pos, box)
    rot = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)
    for moved, f_expected in ((pos @ rot.T, f0 @ rot.T), (pos + [0.31, 7.7, -0.52], f0)):
        e, f = evaluate(params64, moved, box)
        np.testing.assert_allclose(e, e0, rtol=1e-10)
        np.testing.assert_allclose(f, f_expected, atol=1e-9 * np.abs(f0).max())


def test_forces_match_finite_differences(cluster, params64):
    """-dU/dx against central differences, including the collinear triplet (atoms 0-2);
    parameter gradients are finite with padded edges and triplets."""
    pos, box = cluster
    nbrs = brute_force_neighbors(pos, box, CUT + 0.2, K)   # fixed list, graph rebuilt
    _, f, g_params = energy_grads(params64, pos, box, nbrs)
    leaves = jax.tree_util.tree_leaves(g_params)     # padded graph: finite parameter gradients
    assert all(np.all(np.isfinite(x)) for x in leaves) and all(np.any(x != 0) for x in leaves)
    rng = np.random.default_rng(6)
    coords = [(0, 0), (1, 0), (1, 1), (2, 2)] + [(i, a) for i, a in zip(rng.integers(4, N, 6),
                                                                          rng.integers(0, 3, 6))]
    h = 1e-6
    for i, a in coords:
        dx = np.zeros_like(pos)
        dx[i, a] = h
        ep = energy_grads(params64, pos + dx, box, nbrs)[0]
        em = energy_grads(params64, pos - dx, box, nbrs)[0]
        np.testing.assert_allclose(-(ep - em) / (2 * h), f[i, a], rtol=1e-6,
                                   atol=1e-7 * np.abs(f).max())


def test_nve_energy_conservation(periodic):
    """Velocity Verlet (lax.scan) with DimeNet++ + smooth repulsive prior: energy error ~ dt^2."""
    pos, box = periodic
    params = dn.init_dimenet(jax.random.PRNGKey(7), dtype=np.float64)
    nbrs = brute_force_neighbors(pos, box, 1.0, K)                    # all pairs: no rebuilds
    mass, kT = 18.0154, 0.0083144626 * 300.0
    sigma, eps = 0.3165, 1.0

    def potential(r):
        g = gr.graph_from_neighbors(nbrs, r, box, CUT, E_CAP, T_CAP).graph
        s, t = jnp.where(g.edge_mask, g.senders, 0), jnp.where(g.edge_mask, g.receivers, 0)
        d2 = jnp.where(g.edge_mask, jnp.sum(minimum_image(r[s] - r[t], box) ** 2, -1), 1.0)
        pair = eps * (sigma ** 2 / d2) ** 6 * dn.envelope(jnp.sqrt(d2) / CUT)   # smooth (C2) at CUT
        prior = 0.5 * jnp.sum(jnp.where(g.edge_mask, pair, 0.0))
        return prior + MODEL(params, State(r, box, nbrs))     # NaN if the graph overflowed

    energy_and_grad = jax.value_and_grad(potential)

    @jax.jit
    def run(state, dt):
        """100 velocity-Verlet steps; returns the state and the total energies."""
        def step(state, _):
            r, v, f = state
            v = v + 0.5 * dt * f / mass
            r = r + dt * v
            u, grad = energy_and_grad(r)
            v = v - 0.5 * dt * grad / mass
            return (r, v, -grad), u + 0.5 * mass * jnp.sum(v * v)
        return jax.lax.scan(step, state, None, length=100)

    rng = np.random.default_rng(8)
    v0 = rng.normal(0, np.sqrt(kT / mass), pos.shape)
    v0 -= v0.mean(0)
    r0 = jnp.asarray(pos)
    u0, grad0 = jax.jit(energy_and_grad)(r0)
    assert 1.0 < np.abs(grad0).max() < 1e3
    e_start = float(u0) + 0.5 * mass * np.sum(v0 * v0)

    errors = []
    for dt, repeats in ((1e-3, 2), (0.5e-3, 4)):                       # ps; 0.2 ps in total
        state, e_trace = (r0, jnp.asarray(v0), -grad0), []
        for _ in range(repeats):
            state, e = run(state, dt)
            assert np.all(np.isfinite(e))      # no graph overflow (NaN) along the trajectory
            e_trace.append(e)
        errors.append(np.max(np.abs(np.concatenate(e_trace) - e_start)))
    kinetic = 1.5 * N * kT
    print(f"\nNVE max |E - E0| / (3/2 N kT): dt=1 fs {errors[0] / kinetic:.2e}, "
          f"dt=0.5 fs {errors[1] / kinetic:.2e}, ratio {errors[0] / errors[1]:.2f}")
    assert errors[0] / kinetic < 1e-3
    assert 3.0 < errors[0] / errors[1] < 5.0
