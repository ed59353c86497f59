"""The state contract: what every energy model, prior and observable takes.

One signature everywhere: ``energy(params, state)`` and ``observable(state)`` (or
``observable(params, state)`` when it depends on the parameters). A ``State`` is a
pytree (a NamedTuple), so it vmaps over stored trajectories (every leaf gets a
leading frame axis) and passes through ``jax.jit`` unchanged.

Conventions (docs/DESIGN.md):
- ``positions`` (N, dim) nm, unwrapped; every distance uses the minimum image.
- ``box`` (dim,) nm, orthorhombic edge lengths.
- ``neighbors`` (N, capacity) int32 dense *full* list (i -> j and j -> i), padded
  with the sentinel N; it holds every pair closer than the cut-off it was built
  for (``State.cutoff`` is not stored: the builder guarantees it, see
  ``difftre.states``). None where a model needs no list (external potentials) or
  an observable falls back to all pairs.
- ``velocities`` (N, dim) nm/ps where the sampler recorded them, else None.
- ``deformation`` (dim, dim) affine deformation F applied to every minimum-image
  displacement (dr -> F dr, fixed fractional coordinates), None for the identity.
  An energy of a state with ``deformation = I + eps`` is the energy of the
  affinely strained configuration: its eps-derivatives give the virial stress
  and the Born terms (``difftre.observables.stress``, ``elastic``).
"""
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class State(NamedTuple):
    """One configuration (a pytree; stacked along axis 0 for a trajectory)."""
    positions: jax.Array
    box: jax.Array
    neighbors: Optional[jax.Array] = None
    velocities: Optional[jax.Array] = None
    deformation: Optional[jax.Array] = None


def deformed(state, deformation):
    """``state`` under the affine deformation F (composed with any it already has)."""
    if state.deformation is not None:
        deformation = deformation @ state.deformation
    return state._replace(deformation=deformation)


def strain_deformation(eps):
    """Deformation I + eta - eta^2/2 of the symmetrised strain eta = (eps + eps^T)/2, (dim, dim): its
    metric F^T F is I + 2 eta + O(eta^3), so first eps-derivatives at 0 are those of the linear strain
    (the virial) and second ones those of the Green-Lagrange strain (the Born terms)."""
    eta = 0.5 * (eps + eps.T)
    return jnp.eye(eps.shape[0], dtype=eps.dtype) + eta - 0.5 * eta @ eta


def n_particles(state):
    """N of a state (static under jit)."""
    return state.positions.shape[-2]


def identity_deformation(state):
    """The (dim, dim) identity in the state's precision."""
    dim = state.positions.shape[-1]
    return jnp.eye(dim, dtype=state.positions.dtype)


def neighbors_within(state, cutoff, capacity):
    """Narrow ``state.neighbors`` (or all pairs when it is None) to the pairs closer than ``cutoff``.

    Jit-safe: the output has the static shape (N, capacity), the kept neighbours
    first in their original order, padded with N. Distances are minimum-image
    (and deformed when the state has a deformation).

    Returns:
      (neighbors (N, capacity) int32, needed) with ``needed`` the largest number of
      neighbours within ``cutoff`` of any particle: the list overflowed, and must be
      rebuilt with ``capacity >= needed`` (``difftre.states.narrowed`` does), when
      needed > capacity.
    """
    positions, box = state.positions, state.box
    n = positions.shape[0]
    candidates = (jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (n, n)) if state.neighbors is None
                  else state.neighbors)
    real = (candidates < n) & (candidates != jnp.arange(n)[:, None])
    dr = positions[:, None, :] - positions[jnp.where(real, candidates, 0)]
    dr = dr - box * jnp.round(dr / box)
    if state.deformation is not None:
        dr = dr @ state.deformation.T
    within = real & (jnp.sum(dr * dr, axis=-1) < cutoff * cutoff)
    slots = jnp.arange(candidates.shape[1])
    order = jnp.argsort(jnp.where(within, slots, candidates.shape[1] + slots), axis=1)[:, :capacity]
    kept = jnp.take_along_axis(jnp.where(within, candidates, n), order, axis=1)
    if kept.shape[1] < capacity:
        kept = jnp.pad(kept, ((0, 0), (0, capacity - kept.shape[1])), constant_values=n)
    return kept.astype(jnp.int32), jnp.max(jnp.sum(within, axis=1))
