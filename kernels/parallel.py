"""Multi-threaded force loops (opt-in): splitting the centre atoms into chunks (Numba).

Off unless the environment variable ``DIFFTRE_PARALLEL=1`` is set when difftre is
imported; then the pair-force and Stillinger-Weber loops run on Numba's threads
(``prange``; ``numba.set_num_threads`` / NUMBA_NUM_THREADS sets how many,
NUMBA_THREADING_LAYER which layer). Off, the parallel code is not even compiled
(it would add seconds to every process's first compile).

Why opt-in: on a shared machine whose cores are busy a parallel region waits for
the slowest thread; measured on the 2-core benchmark machine under the usual load,
two threads gave no gain at all and the 'omp' layer was up to 2x slower, while on
idle cores the 'workqueue' layer halved the force time of a 32k-atom LJ system.

A kernel with Newton's third law (half pair list, many-body terms) scatters forces
onto any atom, so each chunk of centre atoms writes into its own force buffer
(chunk 0 straight into the output) and the buffers are added afterwards, element by
element in chunk order. Chunk c of k covers the atoms whose cumulative neighbour
count falls in the c-th k-th of the total (`balanced_bounds`).

Determinism: k = min(number of threads, N // ATOMS_PER_CHUNK) (k = 1 is the serial
code), the bounds depend only on the neighbour counts and every sum runs in a fixed
order; so for a given thread count the results are bitwise identical run to run. A
different thread count changes the summation order (last-bit differences).
"""
import os

import numpy as np
from numba import get_num_threads

from difftre.kernels.jit import kernel

ENABLED = os.environ.get("DIFFTRE_PARALLEL", "").strip().lower() in ("1", "true", "yes", "on")
ATOMS_PER_CHUNK = 256


@kernel
def n_chunks(n_atoms):
    """How many chunks a loop over n_atoms centre atoms is split into (1: run serially)."""
    return max(1, min(get_num_threads(), n_atoms // ATOMS_PER_CHUNK))


@kernel
def balanced_bounds(weights, chunks):
    """Chunk bounds (int64[chunks + 1], 0 .. len(weights)) with about equal sums of the
    (non-negative) per-atom weights in each chunk."""
    n = weights.shape[0]
    total = 0
    for i in range(n):
        total += weights[i]
    bounds = np.empty(chunks + 1, np.int64)
    bounds[0] = 0
    i = 0
    running = 0
    for c in range(1, chunks):
        target = total * c // chunks
        while i < n and running < target:
            running += weights[i]
            i += 1
        bounds[c] = i
    bounds[chunks] = n
    return bounds


@kernel
def add_chunk_forces(forces, extra):
    """forces += extra[0] + extra[1] + ... (in that order, element by element)."""
    for i in range(forces.shape[0]):
        for a in range(forces.shape[1]):
            total = forces[i, a]
            for c in range(extra.shape[0]):
                total += extra[c, i, a]
            forces[i, a] = total
