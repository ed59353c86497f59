"""Reweighting: weights of stored states at new parameters, effective sample size.

w_i = softmax_i(-beta [U_theta(S_i) - U_ref(S_i)]) (canonical ensemble: the
kinetic energy cancels). The same weights hold in the isothermal-isobaric ensemble
(states sampled with a barostat at pressure P, each with its own volume V_i): the
states' probabilities there are exp(-beta [U(S_i) + P V_i]) / Z, and P V_i is the
same for both potentials at the same state, so it cancels from the ratio; U_theta(S_i)
is evaluated in state i's own box (``State.box``). ``jax.nn.softmax`` subtracts the
maximum before exponentiating (log-sum-exp), so no overflow for large energy differences.
"""
import jax
import jax.numpy as jnp


def reweighting_weights(energies, reference_energies, kT):
    """Weights (n_states,) of states sampled with U_ref, for energy U; energies in kJ/mol, kT in kJ/mol."""
    return jax.nn.softmax(-(energies - reference_energies) / kT)


def effective_sample_size(weights):
    """N_eff = exp(-sum_i w_i ln w_i); w clipped at 1e-10 inside the log only."""
    return jnp.exp(-jnp.sum(weights * jnp.log(jnp.maximum(weights, 1e-10))))


def map_states(per_state_fn, states, chunk_size=None):
    """per_state_fn over the states stacked on axis 0: chunks vmapped, chunks traversed with
    lax.map under jax.checkpoint, so backward-pass memory scales with chunk_size."""
    n = jax.tree.leaves(states)[0].shape[0]
    chunk = n if chunk_size is None else min(chunk_size, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def split(x):
        x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x
        return x.reshape((n_chunks, chunk) + x.shape[1:])

    values = jax.lax.map(jax.checkpoint(jax.vmap(per_state_fn)), jax.tree.map(split, states))
    return jax.tree.map(lambda v: v.reshape((n_chunks * chunk,) + v.shape[2:])[:n], values)
