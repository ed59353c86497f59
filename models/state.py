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


def n_particles(state):
    """N of a state (static under jit)."""
    return state.positions.shape[-2]


def identity_deformation(state):
    """The (dim, dim) identity in the state's precision."""
    dim = state.positions.shape[-1]
    return jnp.eye(dim, dtype=state.positions.dtype)
