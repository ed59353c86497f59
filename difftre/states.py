"""Stored states of a reference trajectory as ``State`` stacks, with their neighbour lists.

The sampler records positions (and velocities when asked); the JAX side needs
each state with a neighbour list for the cut-off of whoever reads it (the energy
model, an RDF, an ADF). Lists are built once per reference trajectory by the
Numba cell-list builder (O(N) per state), at one capacity for all states: the
largest count of any state, so nothing is ever truncated. ``narrowed`` shortens
a stored list to a smaller cut-off on the JAX side (jit-safe) and regrows its
capacity when a state needs more.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from difftre.kernels import neighbors as neighbor_kernels
from difftre.models.state import State, neighbors_within

CAPACITY_STEP = 8   # capacities are rounded up to a multiple of this, so shapes (and jit traces) repeat


def _rounded(count):
    return max(CAPACITY_STEP, -(-int(count) // CAPACITY_STEP) * CAPACITY_STEP)


def _checked_frames(frames, box, cutoff):
    """frames (n_frames, N, 3) and one box per frame (n_frames, 3), float64; ``box`` is one (3,) box for
    all frames or one per frame."""
    frames = np.ascontiguousarray(frames, np.float64)
    if frames.ndim != 3 or frames.shape[2] != 3:
        raise ValueError(f"neighbour lists need frames of 3-D positions (n_frames, N, 3), got {frames.shape}")
    box = np.asarray(box, np.float64)
    if box.shape not in ((3,), (frames.shape[0], 3)):
        raise ValueError(f"box must have shape (3,) or one box per frame ({frames.shape[0]}, 3), got {box.shape}")
    boxes = np.ascontiguousarray(np.broadcast_to(box, (frames.shape[0], 3)))
    if len(boxes):
        neighbor_kernels.check_box_for_cutoff(boxes[np.argmin(boxes.min(axis=1))], cutoff)
    return frames, boxes


def neighbor_capacity(frames, box, cutoff):
    """The largest number of neighbours closer than ``cutoff`` (nm) of any particle in any frame of
    ``frames`` (n_frames, N, 3) nm (box (3,) nm, or one per frame), rounded up to a multiple of
    CAPACITY_STEP."""
    frames, boxes = _checked_frames(frames, box, cutoff)
    counts = np.zeros(frames.shape[1], np.int32)
    empty = np.zeros((frames.shape[1], 0), np.int32)
    return _rounded(max(neighbor_kernels.fill_neighbor_list(frame, frame_box, cutoff, False, empty, counts)
                        for frame, frame_box in zip(frames, boxes)))


def neighbor_lists(frames, box, cutoff, capacity=None):
    """Dense full neighbour lists (n_frames, N, capacity) int32, padded with N, of every pair
    closer than ``cutoff`` (nm) in each frame of ``frames`` (n_frames, N, 3) nm (box (3,) nm, or one
    per frame (n_frames, 3)).

    capacity: None for ``neighbor_capacity`` of these frames; a given one (to keep one shape over
    several calls) must hold every frame's neighbours, or a ValueError says how many are needed.
    """
    needed = neighbor_capacity(frames, box, cutoff)
    if capacity is not None and capacity < needed:
        raise ValueError(f"neighbour capacity {capacity} is below the {needed} these frames need at {cutoff} nm")
    capacity = needed if capacity is None else int(capacity)
    frames, boxes = _checked_frames(frames, box, cutoff)
    n_frames, n, _ = frames.shape
    counts = np.zeros(n, np.int32)
    lists = np.empty((n_frames, n, capacity), np.int32)
    slots = np.arange(capacity)[None, :]
    for frame, frame_box, out in zip(frames, boxes, lists):
        neighbor_kernels.fill_neighbor_list(frame, frame_box, cutoff, False, out, counts)
        out[slots >= counts[:, None]] = n
    return lists


def stored_states(positions, box, cutoff=0.0, velocities=None, capacity=None):
    """A ``State`` stack of a trajectory: positions (n_frames, N, dim) nm, one box (dim,) nm for
    all (broadcast to (n_frames, dim)) or one per state (n_frames, dim) (NPT), neighbour lists for ``cutoff`` (nm; none when 0; capacity
    as ``neighbor_lists``) and the recorded velocities (n_frames, N, dim) or None. Arrays keep the
    positions' dtype."""
    positions = np.asarray(positions)
    n_frames = positions.shape[0]
    boxes = np.broadcast_to(np.asarray(box, positions.dtype), (n_frames, positions.shape[2]))
    lists = neighbor_lists(positions, box, cutoff, capacity) if cutoff > 0 else None
    return State(jnp.asarray(positions), jnp.asarray(boxes), None if lists is None else jnp.asarray(lists),
                 None if velocities is None or len(velocities) == 0 else jnp.asarray(velocities))


def narrowed(states, cutoff, capacity=None):
    """The stack ``states`` with lists holding only pairs closer than ``cutoff`` (nm), on the JAX side.

    The capacity starts at ``capacity`` (default: that of the stored lists) and is regrown to the
    largest count found whenever a state overflows, so no pair is dropped. Returns (states, capacity).
    """
    if capacity is None:
        capacity = states.positions.shape[1] if states.neighbors is None else states.neighbors.shape[2]
    while True:
        lists, needed = _narrow(states, cutoff=float(cutoff), capacity=int(capacity))
        needed = int(jnp.max(needed))
        if needed <= capacity:
            return states._replace(neighbors=lists), capacity
        capacity = _rounded(needed)


@functools.partial(jax.jit, static_argnames=("cutoff", "capacity"))
def _narrow(states, cutoff, capacity):
    return jax.vmap(lambda state: neighbors_within(state, cutoff, capacity))(states)
