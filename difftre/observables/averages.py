"""Weighted (reweighted) ensemble averages over stored states, memory-bounded.

DiffTRe estimates <O>_theta = sum_i w_i O(S_i, theta) over the N states S_i of
a reference trajectory (w_i = 1/N at the reference parameters). Observables
are functions of one state; ``weighted_average`` maps them over the stored
states in chunks: each chunk is vmapped, the chunks are traversed with
``jax.lax.map`` and every chunk is wrapped in ``jax.checkpoint``, so the
backward pass keeps only the chunk inputs (the stored states themselves) and
recomputes a chunk's intermediates when it needs them. Peak memory therefore
scales with ``chunk_size``, not with the number of states.
"""
import jax
import jax.numpy as jnp


def weighted_average(per_state_fn, states, weights=None, chunk_size=None):
    """sum_i w_i per_state_fn(S_i) over the states stacked along axis 0 of ``states``.

    Args:
      per_state_fn: function of one state (a pytree slice of ``states``)
        returning an array or a pytree of arrays; may close over parameters
        being differentiated.
      states: pytree of arrays with a leading axis of n_states, e.g.
        {"positions": (n, N, dim), "neighbors": (n, N, cap)}.
      weights: (n_states,) weights; None means uniform 1/n_states.
      chunk_size: states evaluated at once (vmapped); None evaluates all at once.

    Returns:
      The weighted sum with the structure and shapes of one per_state_fn output.
    """
    n = jax.tree.leaves(states)[0].shape[0]
    weights = jnp.full(n, 1.0 / n) if weights is None else jnp.asarray(weights)
    chunk = n if chunk_size is None else min(chunk_size, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n  # padded with copies of state 0 at weight 0

    def split(x, filler):
        x = jnp.concatenate([x, filler]) if pad else x
        return x.reshape((n_chunks, chunk) + x.shape[1:])

    @jax.checkpoint
    def chunk_sum(chunk_states, chunk_weights):
        values = jax.vmap(per_state_fn)(chunk_states)
        return jax.tree.map(lambda v: jnp.tensordot(chunk_weights, v, axes=1), values)

    chunked_states = jax.tree.map(lambda x: split(x, jnp.repeat(x[:1], pad, axis=0)), states)
    chunked_weights = split(weights, jnp.zeros(pad, weights.dtype))
    sums = jax.lax.map(lambda args: chunk_sum(*args), (chunked_states, chunked_weights))
    return jax.tree.map(lambda s: jnp.sum(s, axis=0), sums)
