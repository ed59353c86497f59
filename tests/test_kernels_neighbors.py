"""Neighbour lists against brute force, including edge cases and capacity overflow."""
import numpy as np
import pytest

from conftest import brute_force_pairs, lattice_positions
from difftre.kernels import neighbors


def listed_pairs(positions, box, cutoff, half_list, capacity):
    n = positions.shape[0]
    idx = np.zeros((n, capacity), np.int32)
    count = np.zeros(n, np.int32)
    idx = neighbors.build(positions, box, cutoff, half_list, idx, count, np.empty_like(positions))
    pairs = [(i, int(j)) for i in range(n) for j in idx[i, :count[i]]]
    if half_list:
        assert len(pairs) == len(set(pairs)), "a pair is listed twice"
        return {(min(p), max(p)) for p in pairs}, idx
    ordered = set(pairs)
    assert len(pairs) == len(ordered)
    assert all((j, i) in ordered for i, j in ordered), "full list is not symmetric"
    return {(i, j) for i, j in ordered if i < j}, idx


@pytest.mark.parametrize("half_list", [True, False])
@pytest.mark.parametrize("case", ["random", "dense", "faces", "minimum_box", "unwrapped"])
def test_neighbor_list_equals_brute_force(case, half_list, rng):
    cutoff = 1.0
    if case == "random":
        box = np.array([4.1, 5.3, 6.2])
        positions = rng.uniform(0, 1, (300, 3)) * box
    elif case == "dense":   # many neighbours per particle
        box = np.full(3, 3.3)
        positions = lattice_positions(9, 3.3, 0.02, rng)
    elif case == "faces":   # particles exactly on the box faces and corners
        box = np.full(3, 3.5)
        positions = rng.uniform(0, 1, (200, 3)) * box
        positions[:40, 0] = 0.0
        positions[40:80, 1] = box[1]
        positions[80:90] = box
        positions[90:100] = 0.0 + rng.uniform(0, 1e-12, (10, 3))
    elif case == "minimum_box":  # just above 2 * cutoff: fewer than 3 cells, all-pairs path
        box = np.full(3, 2.0 * cutoff * (1 + 1e-6))
        positions = rng.uniform(0, 1, (150, 3)) * box
    else:                   # unwrapped positions far outside the box
        box = np.array([3.2, 3.3, 3.4])
        positions = rng.uniform(-20, 20, (250, 3))
    expected = brute_force_pairs(positions, box, cutoff)
    found, _ = listed_pairs(positions, box, cutoff, half_list, capacity=4)
    assert found == expected


def test_capacity_overflow_regrows(rng):
    box = np.full(3, 3.3)
    positions = lattice_positions(9, 3.3, 0.02, rng)
    found, idx = listed_pairs(positions, box, 1.0, True, capacity=1)
    assert idx.shape[1] > 1
    assert found == brute_force_pairs(positions, box, 1.0)
    count = np.zeros(len(positions), np.int32)
    small = np.zeros((len(positions), 3), np.int32)
    largest = neighbors.fill_neighbor_list(positions, box, 1.0, True, small, count)
    assert largest > 3 and count.max() == 3  # the overflow is reported, never hidden


def test_box_too_small_is_an_error():
    with pytest.raises(ValueError, match="box edge 1 .* must exceed 2"):
        neighbors.check_box_for_cutoff(np.array([3.0, 1.9, 3.0]), 1.0)
