"""Sparse edge/triplet graph for message-passing models, built from a dense neighbour list.

The Numba engine builds the neighbour lists; JAX only converts the dense list
(N, capacity) int32, padded with the sentinel N (docs/DESIGN.md), into a sparse
graph of fixed capacity:

- edge e is the directed pair j -> i with sender j = ``senders[e]`` and receiver
  i = ``receivers[e]``, for every neighbour pair with minimum-image distance
  r_ij < cutoff (nm). The list is full, so both j -> i and i -> j are edges.
  Edges are ordered by receiver.
- triplet t is the pair of edges (k -> j, j -> i) sharing atom j with k != i,
  stored as edge indices ``triplet_kj[t]`` and ``triplet_ji[t]`` (ordered by ji).

Padding: senders/receivers = N and triplet indices = edge capacity, masks False.
Capacities are static (jit); a build reports the *needed* counts so that overflow
is detected, never silently truncated: size the capacities on the host with
``graph_capacities`` (over a stack of states, regrowing by ``GROWTH``), inside jitted
code use ``graph_from_neighbors`` and test ``overflowed`` (``check_capacity`` raises
outside jit).
"""
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .geometry import minimum_image

GROWTH = 1.25  # capacity = ceil(GROWTH * needed) when (re)allocating


class SparseGraph(NamedTuple):
    """Fixed-capacity sparse graph (a pytree). E = edge capacity, T = triplet capacity."""
    senders: jnp.ndarray       # (E,) int32 atom j of edge j -> i, padded with N
    receivers: jnp.ndarray     # (E,) int32 atom i of edge j -> i, padded with N
    edge_mask: jnp.ndarray     # (E,) bool, True for real edges
    triplet_kj: jnp.ndarray    # (T,) int32 index of edge k -> j, padded with E
    triplet_ji: jnp.ndarray    # (T,) int32 index of edge j -> i, padded with E
    triplet_mask: jnp.ndarray  # (T,) bool, True for real triplets

    @property
    def edge_capacity(self):
        return self.senders.shape[0]

    @property
    def triplet_capacity(self):
        return self.triplet_kj.shape[0]


class GraphBuild(NamedTuple):
    """Result of ``graph_from_neighbors``; the counts are what the graph needs."""
    graph: SparseGraph
    needed_edges: jnp.ndarray     # int32 scalar: edges within the cut-off
    needed_triplets: jnp.ndarray  # int32 scalar: triplets among those edges
    overflowed: jnp.ndarray       # bool scalar: a needed count exceeds its capacity


class GraphCapacityError(RuntimeError):
    """A sparse graph capacity (edge or triplet) is smaller than needed."""


def _within_cutoff(neighbors, positions, box, cutoff):
    """(N, K) bool: neighbour slot is a real atom at minimum-image distance < cutoff (nm)."""
    n = positions.shape[0]
    real = neighbors < n
    dr = minimum_image(positions[:, None, :] - positions[jnp.where(real, neighbors, 0)], box)
    return real & (jnp.sum(dr * dr, axis=-1) < cutoff ** 2)


def _triplets_from_degrees(within):
    """sum_j deg(j) (deg(j) - 1): the triplet count of a symmetric (full) list."""
    deg = jnp.sum(within, axis=1, dtype=jnp.int32)
    return jnp.sum(deg * (deg - 1))


def _compact(flags, capacity):
    """Slot of each True entry of the flat bool ``flags`` in a compacted array.

    Returns (slots, count): slots equal ``capacity`` (out of range, dropped by
    ``.at[].set(mode='drop')``) for False entries and for entries beyond capacity.
    """
    rank = jnp.cumsum(flags, dtype=jnp.int32) - 1
    return jnp.where(flags & (rank < capacity), rank, capacity), jnp.sum(flags, dtype=jnp.int32)


def _scatter(slots, values, capacity, fill):
    return jnp.full((capacity,), fill, jnp.int32).at[slots].set(values.astype(jnp.int32), mode="drop")


@jax.jit
def graph_counts(neighbors, positions, box, cutoff):
    """Needed (edges, triplets) for a symmetric full neighbour list; cheap, jit-compatible."""
    within = _within_cutoff(jnp.asarray(neighbors), positions, box, cutoff)
    return jnp.sum(within, dtype=jnp.int32), _triplets_from_degrees(within)


@functools.partial(jax.jit, static_argnames=("edge_capacity", "triplet_capacity"))
def graph_from_neighbors(neighbors, positions, box, cutoff, edge_capacity, triplet_capacity):
    """Sparse graph of static capacities from a dense neighbour list (jit-compatible).

    Args:
      neighbors: (N, K) int32 full dense neighbour list padded with N.
      positions: (N, dim) unwrapped positions (nm).
      box: (dim,) orthorhombic box edge lengths (nm).
      cutoff: graph cut-off (nm); only pairs with r < cutoff become edges.
      edge_capacity, triplet_capacity: static array sizes E and T.

    Returns:
      ``GraphBuild(graph, needed_edges, needed_triplets, overflowed)``. When
      ``overflowed`` the graph is truncated and must not be used. ``needed_triplets``
      is exact when the edges fit; when they overflow it is the degree-based count
      sum_j deg(j)(deg(j)-1), exact for a symmetric full list.
    """
    neighbors = jnp.asarray(neighbors, jnp.int32)
    n, k = neighbors.shape
    e_cap, t_cap = edge_capacity, triplet_capacity

    within = _within_cutoff(neighbors, positions, box, cutoff)
    slots, n_edges = _compact(within.ravel(), e_cap)
    senders = _scatter(slots, neighbors.ravel(), e_cap, n)
    receivers = _scatter(slots, jnp.repeat(jnp.arange(n), k), e_cap, n)
    edge_mask = jnp.arange(e_cap) < n_edges

    # edges into j are row j of the slot table; pair each edge j -> i with them
    incoming = slots.reshape(n, k)[jnp.where(edge_mask, senders, 0)]   # (E, K) edges k -> j
    k_atom = jnp.append(senders, n)[incoming]                           # sentinel slot -> N
    valid = edge_mask[:, None] & (incoming < e_cap) & (k_atom != receivers[:, None])
    t_slots, n_triplets = _compact(valid.ravel(), t_cap)
    triplet_kj = _scatter(t_slots, incoming.ravel(), t_cap, e_cap)
    triplet_ji = _scatter(t_slots, jnp.repeat(jnp.arange(e_cap), k), t_cap, e_cap)
    triplet_mask = jnp.arange(t_cap) < n_triplets

    edges_overflow = n_edges > e_cap
    n_triplets = jnp.where(edges_overflow, _triplets_from_degrees(within), n_triplets)
    graph = SparseGraph(senders, receivers, edge_mask, triplet_kj, triplet_ji, triplet_mask)
    return GraphBuild(graph, n_edges, n_triplets, edges_overflow | (n_triplets > t_cap))


def check_capacity(graph, needed_edges, needed_triplets):
    """Raise ``GraphCapacityError`` if ``graph`` is too small (call outside jit)."""
    needed_edges, needed_triplets = int(needed_edges), int(needed_triplets)
    problems = []
    if needed_edges > graph.edge_capacity:
        problems.append(f"edge capacity {graph.edge_capacity} < {needed_edges} edges needed")
    if needed_triplets > graph.triplet_capacity:
        problems.append(f"triplet capacity {graph.triplet_capacity} < {needed_triplets} triplets needed")
    if problems:
        raise GraphCapacityError("sparse graph overflow: " + "; ".join(problems)
                                 + f" (rebuild with capacity >= ceil({GROWTH} * needed))")


def grown_capacity(needed):
    """Capacity allocated for ``needed`` entries: ceil(1.25 needed), at least 1."""
    return max(1, math.ceil(GROWTH * int(needed)))


def graph_capacities(states, cutoff, capacities=None):
    """Host-side sizing: (edge_capacity, triplet_capacity) that fit every state of a stack.

    Call outside jit, before compiling an energy with fixed capacities (``dimenet.dimenet``).

    Args:
      states: a ``models.state.State`` with full dense neighbour lists, either one state or a
        stack (every leaf with a leading frame axis, as a stored trajectory).
      cutoff: graph cut-off (nm).
      capacities: the (edge, triplet) capacities in use, or None.

    Returns:
      ``capacities`` unchanged when both fit every state; otherwise each capacity that is too
      small (or all, when ``capacities`` is None) is regrown to ceil(GROWTH * needed) for the
      largest count over the states (``graph_counts``).
    """
    positions = jnp.asarray(states.positions)
    stacked = positions.ndim == 3
    counts = jax.vmap(graph_counts, (0, 0, 0, None)) if stacked else graph_counts
    needed = [int(jnp.max(c)) for c in counts(jnp.asarray(states.neighbors), positions, jnp.asarray(states.box),
                                                cutoff)]
    if capacities is None:
        return tuple(grown_capacity(n) for n in needed)
    return tuple(c if n <= c else grown_capacity(n) for c, n in zip(capacities, needed))
