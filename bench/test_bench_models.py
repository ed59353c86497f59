"""States per second for energy + parameter gradient over stored states (the reweighting step).

    python -m pytest bench/test_bench_models.py -q --benchmark-only -s

Cases (CPU, float32 and float64): a tabulated pair-spline model with an LJ prior on the
LJ liquid (N = 1000, rho* = 0.8442, rc = 2.5); DimeNet++ (paper sizes) on the 901-bead
water configuration (cut-off 0.5 nm) with the repulsive prior; DimeNet++ on 1000-atom
diamond (cut-off 0.2 nm) with the SW prior, including the Born stiffness (its parameter
gradient goes through the second strain derivative). Neighbour lists are built once
per state outside the timing, as in training; DimeNet++ builds its sparse graph from
the list inside the timed energy, at capacities sized once over the states. Published
orientation: 0.07 s/state (water) and 0.14 s/state (diamond with Born terms) on a 2021 GPU.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difftre import md
from difftre.models import dimenet, graph as graph_module, pair_spline, priors
from difftre.models.state import State
from difftre.observables.elastic import born_terms

jax.config.update("jax_enable_x64", True)
N_STATES = 4


def read_water():
    from importlib import resources
    lines = resources.files("difftre").joinpath("data/cg_water/water_901_cg.gro").read_text().splitlines()
    n = int(lines[1])
    positions = np.array([[float(v) for v in (line[20:28], line[28:36], line[36:44])] for line in lines[2:2 + n]])
    return positions, np.array([float(v) for v in lines[2 + n].split()[:3]])


def diamond(n_cells=5, density_box=1.78412):
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                      [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    a = density_box / n_cells
    return ((cells + basis[None]) * a).reshape(-1, 3), np.full(3, density_box)


def lj_liquid(n_side=10):
    box = np.full(3, (n_side ** 3 / 0.8442) ** (1 / 3))
    g = (np.arange(n_side) + 0.5) * box[0] / n_side
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3), box


def states(positions, box, jitter, cutoff, dtype, rng):
    """N_STATES jittered copies of ``positions`` as ``State``s with full neighbour lists for ``cutoff``,
    padded to one capacity (one compiled program for all states, as a stored trajectory)."""
    frames = [positions + rng.normal(0, jitter, positions.shape) for _ in range(N_STATES)]
    lists = [md.full_neighbor_list(f, box, cutoff) for f in frames]
    capacity = max(nb.shape[1] for nb in lists)
    return [State(jnp.asarray(f, dtype), jnp.asarray(box, dtype),
                  jnp.asarray(np.pad(nb, ((0, 0), (0, capacity - nb.shape[1])), constant_values=len(f))))
            for f, nb in zip(frames, lists)]


def stack(states_):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states_)


def case_lj(dtype, rng):
    positions, box = lj_liquid()
    grid = pair_spline.pair_spline_grid(0.8, 2.5, 50)
    params = pair_spline.init_pair_spline(jax.random.PRNGKey(0), grid, dtype)
    model, prior = pair_spline.pair_spline(grid), priors.lennard_jones(1.0, 1.0, 2.5, dtype=dtype)
    return params, states(positions, box, 0.05, 2.5, dtype, rng), lambda p, s: model(p, s) + prior(p, s)


def case_water(dtype, rng):
    positions, box = read_water()
    water = states(positions, box, 0.01, 0.5, dtype, rng)
    params = dimenet.init_dimenet(jax.random.PRNGKey(0), dtype)
    model = dimenet.dimenet(0.5, *graph_module.graph_capacities(stack(water), 0.5))
    prior = priors.repulsive(1.0, 0.3165, 0.5, dtype=dtype)
    return params, water, lambda p, s: model(p, s) + prior(p, s)


def case_diamond(dtype, rng):
    positions, box = diamond()
    carbon = states(positions, box, 0.005, 0.252, dtype, rng)
    params = dimenet.init_dimenet(jax.random.PRNGKey(0), dtype)
    model = dimenet.dimenet(0.2, *graph_module.graph_capacities(stack(carbon), 0.2))
    prior = priors.stillinger_weber(200.0, 0.14, dtype=dtype)

    def u(p, s):
        return model(p, s) + prior(p, s)

    def energy(p, s):
        terms = born_terms(u, p, s)
        # energy plus a scalar of the Born stress and stiffness, so the parameter gradient goes through both
        return u(p, s) + jnp.sum(terms["stress"] ** 2) + jnp.sum(terms["stiffness"] ** 2) * 1e-6
    return params, carbon, energy


CASES = {"lj_pair_spline_1000": case_lj, "dimenet_water_901": case_water, "dimenet_diamond_1000_born": case_diamond}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_states_per_second(benchmark, case, dtype):
    rng = np.random.default_rng(0)
    params, states_, energy = CASES[case](dtype, rng)
    value_and_grad = jax.jit(jax.value_and_grad(energy))
    start = time.perf_counter()
    jax.block_until_ready(value_and_grad(params, states_[0]))
    compile_seconds = time.perf_counter() - start

    def all_states():
        return [jax.block_until_ready(value_and_grad(params, s)) for s in states_]

    results = benchmark.pedantic(all_states, rounds=2, iterations=1, warmup_rounds=0)
    value, grads = results[0]
    assert np.isfinite(value) and value.dtype == dtype and all(g.dtype == dtype for g in jax.tree.leaves(grads))
    seconds_per_state = benchmark.stats.stats.median / N_STATES
    benchmark.extra_info.update(states_per_second=1.0 / seconds_per_state, seconds_per_state=seconds_per_state,
                                compile_seconds=compile_seconds, dtype=np.dtype(dtype).name)
    print(f"\n{case} {np.dtype(dtype).name}: {seconds_per_state:.3f} s/state "
          f"({1 / seconds_per_state:.2f} states/s), compile {compile_seconds:.1f} s")
