"""Verlet neighbour lists built from cell lists (Numba, 3-D).

The list holds every pair closer than cutoff + skin (list_cutoff) as
``nbr_idx[i, :nbr_count[i]]`` (int32). A half list stores each pair once (j > i),
a full list twice. It is rebuilt when any particle has moved more than skin/2
since the last build (`check_motion`). Capacity overflow is never
silent: the builder returns the largest count it found, and `build` regrows the
array and builds again when that exceeds the capacity.

With at least 3 cells per box edge the search visits the 27 neighbouring cells;
otherwise it checks all pairs (still O(N) per particle, correct for any box that
satisfies the minimum-image condition L > 2 * list_cutoff, checked by
`check_box_for_cutoff`).
"""
import numpy as np
from difftre.kernels.jit import kernel

from difftre.kernels.space import minimum_image


def check_box_for_cutoff(box, list_cutoff):
    """Raise unless every box edge exceeds twice the list cut-off (minimum-image condition)."""
    short = np.flatnonzero(np.asarray(box) <= 2.0 * list_cutoff)
    if short.size:
        a = int(short[0])
        raise ValueError(
            f"box edge {a} is {float(box[a]):.6g} nm but must exceed 2 * (cutoff + skin) = "
            f"{2.0 * list_cutoff:.6g} nm for the minimum-image convention; use a larger box or a smaller cut-off/skin")


@kernel(inline="always")
def _cell_index(x, length, n_cells):
    c = int(np.floor(x / length * n_cells)) % n_cells
    return c + n_cells if c < 0 else c


@kernel(inline="always")
def _try_add(positions, box, inv_box, i, j, cut2, nbr_idx, count):
    dx = minimum_image(positions[i, 0] - positions[j, 0], box[0], inv_box[0])
    dy = minimum_image(positions[i, 1] - positions[j, 1], box[1], inv_box[1])
    dz = minimum_image(positions[i, 2] - positions[j, 2], box[2], inv_box[2])
    if dx * dx + dy * dy + dz * dz < cut2:
        if count < nbr_idx.shape[1]:
            nbr_idx[i, count] = j
        return count + 1
    return count


@kernel
def fill_neighbor_list(positions, box, list_cutoff, half_list, nbr_idx, nbr_count):
    """Fill nbr_idx / nbr_count (counts clipped to capacity); return the largest true count."""
    n = positions.shape[0]
    cut2 = list_cutoff * list_cutoff
    inv_box = 1.0 / box
    n_cells = np.empty(3, np.int64)
    for a in range(3):
        n_cells[a] = int(np.floor(box[a] / list_cutoff))
    largest = 0
    if n_cells[0] < 3 or n_cells[1] < 3 or n_cells[2] < 3:
        for i in range(n):
            count = 0
            for j in range(i + 1 if half_list else 0, n):
                if j != i:
                    count = _try_add(positions, box, inv_box, i, j, cut2, nbr_idx, count)
            nbr_count[i] = min(count, nbr_idx.shape[1])
            largest = max(largest, count)
        return largest
    # counting sort of particles into cells
    total = n_cells[0] * n_cells[1] * n_cells[2]
    cell_of = np.empty(n, np.int64)
    cell_start = np.zeros(total + 1, np.int64)
    for i in range(n):
        c = (_cell_index(positions[i, 0], box[0], n_cells[0]) * n_cells[1]
             + _cell_index(positions[i, 1], box[1], n_cells[1])) * n_cells[2] \
            + _cell_index(positions[i, 2], box[2], n_cells[2])
        cell_of[i] = c
        cell_start[c + 1] += 1
    for c in range(total):
        cell_start[c + 1] += cell_start[c]
    fill = cell_start[:-1].copy()
    in_cell = np.empty(n, np.int64)
    for i in range(n):
        in_cell[fill[cell_of[i]]] = i
        fill[cell_of[i]] += 1
    for i in range(n):
        c = cell_of[i]
        cz = c % n_cells[2]
        cy = (c // n_cells[2]) % n_cells[1]
        cx = c // (n_cells[1] * n_cells[2])
        count = 0
        for ox in range(-1, 2):
            nx = (cx + ox) % n_cells[0]
            for oy in range(-1, 2):
                ny = (cy + oy) % n_cells[1]
                for oz in range(-1, 2):
                    nc = (nx * n_cells[1] + ny) * n_cells[2] + (cz + oz) % n_cells[2]
                    for s in range(cell_start[nc], cell_start[nc + 1]):
                        j = in_cell[s]
                        if j > i or (not half_list and j != i):
                            count = _try_add(positions, box, inv_box, i, j, cut2, nbr_idx, count)
        nbr_count[i] = min(count, nbr_idx.shape[1])
        largest = max(largest, count)
    return largest


@kernel
def build(positions, box, list_cutoff, half_list, nbr_idx, nbr_count, reference_positions):
    """Build the list, regrowing nbr_idx (25% headroom) until nothing is dropped.

    Returns the (possibly new) nbr_idx; records the build positions in
    reference_positions for the skin criterion.
    """
    largest = fill_neighbor_list(positions, box, list_cutoff, half_list, nbr_idx, nbr_count)
    if largest > nbr_idx.shape[1]:
        nbr_idx = np.empty((positions.shape[0], largest + largest // 4 + 1), np.int32)
        fill_neighbor_list(positions, box, list_cutoff, half_list, nbr_idx, nbr_count)
    reference_positions[:] = positions
    return nbr_idx


@kernel
def check_motion(positions, previous_positions, reference_positions, use_reference):
    """One pass over the particles after a drift: returns (largest squared move since the previous
    step, its particle, largest squared displacement since the last list build), then stores the
    positions as the previous ones. A NaN position makes the first value NaN."""
    largest_move = 0.0
    mover = 0
    largest_drift = 0.0
    for i in range(positions.shape[0]):
        move = 0.0
        drift = 0.0
        for a in range(positions.shape[1]):
            d = positions[i, a] - previous_positions[i, a]
            move += d * d
            if use_reference:
                d = positions[i, a] - reference_positions[i, a]
                drift += d * d
            previous_positions[i, a] = positions[i, a]
        if not move <= largest_move:    # also picks up NaN
            largest_move = move
            mover = i
            if not move == move:
                break
        largest_drift = max(largest_drift, drift)
    return largest_move, mover, largest_drift
