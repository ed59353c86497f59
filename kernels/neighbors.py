"""Verlet neighbour lists built from cell lists (Numba, 3-D).

The list holds every pair closer than cutoff + skin (list_cutoff) as
``nbr_idx[i, :nbr_count[i]]`` (int32). A half list stores each pair once, under
one of its two atoms (not necessarily the lower index), a full list twice. It is
rebuilt when any particle has moved more than skin/2 since the last build
(`check_motion`). Capacity overflow is never silent: the builder returns the
largest count it found, and `build` regrows the array and builds again when that
exceeds the capacity.

Cell search (`_fill_from_cells`): particles are counting-sorted into a grid of
cells, z fastest, their wrapped coordinates copied into contiguous arrays in cell
order. The grid has cells of at least list_cutoff / 2 and visits the 5 x 5 x 5
cells around a particle's cell, or cells of at least list_cutoff and the 3 x 3 x 3
around (`_choose_grid` picks the cheaper: the fine grid for dense liquids, the
coarse one for sparse solids). Each stencil row along z is a contiguous run of the
sorted arrays, scanned branch-free, with the periodic image of a wrapped row or
column added as a shift instead of a minimum image per pair. A half list visits
the forward half of the stencil ((ox, oy, oz) > 0 lexicographically) plus the
particles after i in its own cell; a full list the whole stencil. Every stencil
offset names a different cell (at least 2 * reach + 1 cells per edge), so no pair
is found twice. Rows come out in cell order.

A box with fewer than 3 list cut-offs along some edge has no such grid: then all
pairs are checked (O(N) per particle, correct for any box that satisfies the
minimum-image condition L > 2 * list_cutoff, checked by `check_box_for_cutoff`).

`_cell_index` and `_try_add` are also compiled for the GPU by the CUDA engine
(`difftre.kernels.cuda.engine`); keep their signatures.
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


# cells are at least (list_cutoff / reach) wide, with this relative margin against rounding
_CELL_MARGIN = 1e-6


# relative cost of starting the scan of one z row of cells, in units of one distance check
_ROW_COST = 14.0


@kernel
def _choose_grid(box, list_cutoff, n, n_cells, reach):
    """Cells per edge (n_cells) and stencil reach in cells (reach) for the cell search.

    Two grids: cells of at least list_cutoff / 2 with a reach of 2 cells (needs 5 cells per edge),
    and cells of at least list_cutoff with a reach of 1 (needs 3 per edge). With at least 2 reach + 1
    cells, each offset -reach..reach names a different cell, so no pair is found twice. The finer
    grid checks fewer distances but starts more rows of cells; the cheaper one by a simple cost model
    is used (the fine grid for dense liquids, the coarse one for sparse solids). Returns False when
    neither fits (an edge shorter than 3 list cut-offs; the caller checks all pairs). The grid is
    coarsened (larger cells, still valid) when it would hold more than 8 N + 1000 cells.
    """
    cut = float(list_cutoff) * (1.0 + _CELL_MARGIN)
    fine_ok = True
    coarse_ok = True
    fine_cells = 1.0
    coarse_cells = 1.0
    for a in range(3):
        edges = float(box[a]) / cut     # (float products: no integer overflow for huge boxes)
        fine_ok = fine_ok and np.floor(2.0 * edges) >= 5.0
        coarse_ok = coarse_ok and np.floor(edges) >= 3.0
        fine_cells *= np.floor(2.0 * edges)
        coarse_cells *= np.floor(edges)
    if not (fine_ok or coarse_ok):
        return False
    use_fine = fine_ok
    if fine_ok and coarse_ok:
        fine_cost = 25.0 * _ROW_COST + 125.0 * n / fine_cells
        coarse_cost = 9.0 * _ROW_COST + 27.0 * n / coarse_cells
        use_fine = fine_cost < coarse_cost
    r = 2 if use_fine else 1
    total = fine_cells if use_fine else coarse_cells
    limit = 8.0 * n + 1000.0
    shrink = (total / limit) ** (1.0 / 3.0) if total > limit else 1.0
    for a in range(3):
        reach[a] = r
        n_cells[a] = max(2 * r + 1, int(np.floor(r * float(box[a]) / cut / shrink)))
    for _ in range(3):   # edges held at 2 r + 1 cells left too many: coarsen the longest
        total = float(n_cells[0]) * float(n_cells[1]) * float(n_cells[2])
        if total <= limit:
            break
        a = np.argmax(n_cells)
        n_cells[a] = max(2 * r + 1, int(n_cells[a] * limit / total))
    return True


@kernel(inline="always")
def _scan(lo, hi, px, py, pz, xs, ys, zs, order, exclude, cut2, buffer, count):
    """Append order[s] for s in [lo, hi) closer than the cut-off to (px, py, pz) (branch-free: every
    candidate is written, the count only advances for hits); s == exclude is skipped.
    Indices are unsigned so that no negative-index wrap-around code is generated."""
    n_hits = np.uint64(count)
    for s in range(np.uint64(lo), np.uint64(hi)):
        dx = px - xs[s]
        dy = py - ys[s]
        dz = pz - zs[s]
        buffer[n_hits] = order[s]
        n_hits += np.uint64((dx * dx + dy * dy + dz * dz < cut2) & (s != exclude))
    return np.int64(n_hits)


@kernel(inline="always")
def _scan_row(row, lo_z, hi_z, first, nz, lz, px, py, pz, xs, ys, zs, order, exclude, cut2, cell_start,
              buffer, count):
    """Scan the cells lo_z..hi_z (may run past either end of the z axis, periodic) of one z row of
    the grid, starting at sorted index `first` if that is larger than the row's start; the sorted
    index `exclude` (unsigned) is skipped."""
    zero = lz - lz
    if lo_z < 0:
        count = _scan(max(cell_start[row + lo_z + nz], first), cell_start[row + nz], px, py, pz + lz,
                      xs, ys, zs, order, exclude, cut2, buffer, count)
        lo_z = 0
    if hi_z >= nz:
        count = _scan(max(cell_start[row + lo_z], first), cell_start[row + nz], px, py, pz + zero,
                      xs, ys, zs, order, exclude, cut2, buffer, count)
        count = _scan(cell_start[row], cell_start[row + hi_z - nz + 1], px, py, pz - lz,
                      xs, ys, zs, order, exclude, cut2, buffer, count)
    else:
        count = _scan(max(cell_start[row + lo_z], first), cell_start[row + hi_z + 1], px, py, pz + zero,
                      xs, ys, zs, order, exclude, cut2, buffer, count)
    return count


@kernel
def _fill_from_cells(positions, box, list_cutoff, half_list, nbr_idx, nbr_count, n_cells, reach):
    """`fill_neighbor_list` on the grid chosen by `_choose_grid` (see the module doc)."""
    n = positions.shape[0]
    capacity = nbr_idx.shape[1]
    cut2 = list_cutoff * list_cutoff
    nx, ny, nz = n_cells[0], n_cells[1], n_cells[2]
    rx, ry, rz = reach[0], reach[1], reach[2]
    lx, ly, lz = box[0], box[1], box[2]
    total = nx * ny * nz
    # wrapped coordinates and their cells; a coordinate that rounds onto the far face (or to just
    # below 0) stays in the last (first) cell: it lies on that cell's boundary, the geometry holds
    wrapped = np.empty((n, 3), positions.dtype)
    cell_of = np.empty(n, np.int64)
    cell_start = np.zeros(total + 1, np.int64)
    for i in range(n):
        c = 0
        for a in range(3):
            length = box[a]
            m = n_cells[a]
            x = positions[i, a]
            x = x - length * np.floor(x / length)
            f = x * (m / length)
            if not f >= 0.0:      # rounding below 0, or NaN (a blown-up state; it lists no pairs)
                f = 0.0
            k = min(int(f), m - 1)
            wrapped[i, a] = x
            c = c * m + k
        cell_of[i] = c
        cell_start[c + 1] += 1
    for c in range(total):
        cell_start[c + 1] += cell_start[c]
    # particles sorted by cell (z fastest), coordinates as contiguous arrays
    fill = cell_start[:-1].copy()
    order = np.empty(n, np.int32)
    xs = np.empty(n, positions.dtype)
    ys = np.empty(n, positions.dtype)
    zs = np.empty(n, positions.dtype)
    for i in range(n):
        s = fill[cell_of[i]]
        fill[cell_of[i]] += 1
        order[s] = i
        xs[s] = wrapped[i, 0]
        ys[s] = wrapped[i, 1]
        zs[s] = wrapped[i, 2]
    buffer = np.empty(n, np.int32)   # a particle's candidates; each j appears at most once
    no_exclusion = np.uint64(n)      # (no sorted index equals n)
    largest = 0
    for cx in range(nx):
        for cy in range(ny):
            for cz in range(nz):
                c = (cx * ny + cy) * nz + cz
                for si in range(cell_start[c], cell_start[c + 1]):
                    xi, yi, zi = xs[si], ys[si], zs[si]
                    count = 0
                    # half list: the forward half of the stencil, (ox, oy, oz) > 0 lexicographically,
                    # and the particles after si in its own cell; full list: the whole stencil
                    for ox in range(0 if half_list else -rx, rx + 1):
                        tx, px = _periodic_cell(cx + ox, nx, xi, lx)
                        for oy in range(0 if half_list and ox == 0 else -ry, ry + 1):
                            ty, py = _periodic_cell(cy + oy, ny, yi, ly)
                            row = (tx * ny + ty) * nz
                            if half_list and ox == 0 and oy == 0:
                                count = _scan_row(row, cz, cz + rz, si + 1, nz, lz, px, py, zi, xs, ys, zs,
                                                  order, no_exclusion, cut2, cell_start, buffer, count)
                            else:
                                count = _scan_row(row, cz - rz, cz + rz, 0, nz, lz, px, py, zi, xs, ys, zs,
                                                  order, no_exclusion if half_list else np.uint64(si), cut2,
                                                  cell_start, buffer, count)
                    i = order[si]
                    kept = min(count, capacity)
                    for k in range(kept):
                        nbr_idx[i, k] = buffer[k]
                    nbr_count[i] = kept
                    largest = max(largest, count)
    return largest


@kernel(inline="always")
def _periodic_cell(t, n_cells, x, length):
    """Cell index t folded into [0, n_cells) and the coordinate x shifted by the same period."""
    if t < 0:
        return t + n_cells, x + length
    if t >= n_cells:
        return t - n_cells, x - length
    return t, x + (length - length)


@kernel
def fill_neighbor_list(positions, box, list_cutoff, half_list, nbr_idx, nbr_count):
    """Fill nbr_idx / nbr_count (counts clipped to capacity); return the largest true count."""
    n = positions.shape[0]
    n_cells = np.empty(3, np.int64)
    reach = np.empty(3, np.int64)
    if _choose_grid(box, list_cutoff, n, n_cells, reach):
        return _fill_from_cells(positions, box, list_cutoff, half_list, nbr_idx, nbr_count, n_cells, reach)
    cut2 = list_cutoff * list_cutoff
    inv_box = 1.0 / box
    largest = 0
    for i in range(n):
        count = 0
        for j in range(i + 1 if half_list else 0, n):
            if j != i:
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
