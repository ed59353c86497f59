"""Stored states and their neighbour lists: stored_states / neighbor_lists (Numba cell lists), narrowed and
models.state.neighbors_within (JAX side), against a brute-force NumPy list."""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from difftre.models.state import State, neighbors_within  # noqa: E402
from difftre.states import CAPACITY_STEP, narrowed, neighbor_lists, stored_states  # noqa: E402


def brute_force_sets(positions, box, cutoff, deformation=None):
    """Per-particle sets of j != i with |F (minimum image of r_i - r_j)| < cutoff."""
    dr = positions[:, None, :] - positions[None, :, :]
    dr -= box * np.round(dr / box)
    if deformation is not None:
        dr = dr @ np.asarray(deformation).T
    within = np.sum(dr * dr, axis=-1) < cutoff ** 2
    np.fill_diagonal(within, False)
    return [set(np.flatnonzero(row).tolist()) for row in within]


def row_sets(neighbors, n):
    """Per-row sets of listed neighbours (padding n dropped); asserts no duplicate and padding last."""
    sets = []
    for row in np.asarray(neighbors):
        real = row[row < n]
        assert len(set(real.tolist())) == len(real), "a neighbour listed twice"
        assert np.all(row[len(real):] == n), "padding must follow the real neighbours"
        sets.append(set(real.tolist()))
    return sets


@pytest.fixture(scope="module")
def frames():
    """Three frames of 300 random particles in a 2.2 nm box (unwrapped: some coordinates outside the box)."""
    rng = np.random.default_rng(0)
    box = np.array([2.2, 2.4, 2.3])
    positions = rng.uniform(0, 1, (3, 300, 3)) * box + rng.integers(-1, 2, (3, 300, 3)) * box
    return positions, box


def test_stored_lists_hold_every_pair(frames):
    positions, box = frames
    lists = neighbor_lists(positions, box, 0.6)
    n = positions.shape[1]
    largest = max(max(len(s) for s in brute_force_sets(p, box, 0.6)) for p in positions)
    assert lists.dtype == np.int32 and lists.shape[:2] == positions.shape[:2]
    assert lists.shape[2] % CAPACITY_STEP == 0 and largest <= lists.shape[2] < largest + CAPACITY_STEP
    for p, nl in zip(positions, lists):
        assert row_sets(nl, n) == brute_force_sets(p, box, 0.6)
    states = stored_states(positions, box, 0.6)
    np.testing.assert_array_equal(states.neighbors, lists)
    assert states.box.shape == (3, 3) and states.velocities is None and states.deformation is None
    assert stored_states(positions, box).neighbors is None                  # cut-off 0: no list


def test_narrowed_equals_list_built_at_the_smaller_cutoff(frames):
    positions, box = frames
    n = positions.shape[1]
    wide = stored_states(positions, box, 0.7)
    direct = stored_states(positions, box, 0.45)
    narrow, capacity = narrowed(wide, 0.45)
    assert capacity == wide.neighbors.shape[2] and narrow.neighbors.shape == wide.neighbors.shape
    for k in range(len(positions)):
        assert row_sets(narrow.neighbors[k], n) == row_sets(direct.neighbors[k], n)
    np.testing.assert_array_equal(narrow.positions, wide.positions)


def test_narrowed_regrows_a_too_small_capacity_instead_of_dropping_pairs(frames):
    positions, box = frames
    n = positions.shape[1]
    wide = stored_states(positions, box, 0.7)
    direct = stored_states(positions, box, 0.45)
    needed = max(max(len(s) for s in brute_force_sets(p, box, 0.45)) for p in positions)
    assert needed > 8
    narrow, capacity = narrowed(wide, 0.45, capacity=8)
    assert capacity > 8 and capacity >= needed and capacity % CAPACITY_STEP == 0
    assert narrow.neighbors.shape == (len(positions), n, capacity)
    for k in range(len(positions)):
        assert row_sets(narrow.neighbors[k], n) == row_sets(direct.neighbors[k], n)
    # from states without lists (all pairs)
    from_all, capacity_all = narrowed(stored_states(positions, box), 0.45, capacity=8)
    assert capacity_all == capacity
    for k in range(len(positions)):
        assert row_sets(from_all.neighbors[k], n) == brute_force_sets(positions[k], box, 0.45)


def test_neighbors_within_reports_overflow(frames):
    positions, box = frames
    n = positions.shape[1]
    state = State(jnp.asarray(positions[0]), jnp.asarray(box), jnp.asarray(neighbor_lists(positions[:1], box, 0.7)[0]))
    exact = brute_force_sets(positions[0], box, 0.45)
    largest = max(len(s) for s in exact)

    kept, needed = neighbors_within(state, 0.45, 4)
    assert int(needed) == largest and int(needed) > 4                   # overflow: needed > capacity
    assert kept.shape == (n, 4) and kept.dtype == jnp.int32
    for listed, true in zip(row_sets(kept, n), exact):
        assert listed <= true and len(listed) == min(4, len(true))      # truncated, never a wrong pair

    kept, needed = neighbors_within(state, 0.45, largest)
    assert int(needed) == largest                                        # fits exactly: no overflow
    assert row_sets(kept, n) == exact

    kept, needed = jax.jit(neighbors_within, static_argnums=(1, 2))(state._replace(neighbors=None), 0.45, 64)
    assert int(needed) == largest and kept.shape == (n, 64)             # all pairs, padded up to the capacity
    assert row_sets(kept, n) == exact


def test_neighbors_within_uses_the_deformation(frames):
    positions, box = frames
    n = positions.shape[1]
    deformation = np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.02], [0.03, 0.0, 1.0]])
    state = State(jnp.asarray(positions[1]), jnp.asarray(box), deformation=jnp.asarray(deformation))
    kept, needed = neighbors_within(state, 0.45, 64)
    exact = brute_force_sets(positions[1], box, 0.45, deformation)
    assert int(needed) == max(len(s) for s in exact) <= 64
    assert row_sets(kept, n) == exact
    assert exact != brute_force_sets(positions[1], box, 0.45)           # the deformation changed the sets
