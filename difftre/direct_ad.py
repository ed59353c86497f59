"""The direct reverse-mode AD baseline: MD written in JAX and differentiated end to end.

Kept only for comparison with DiffTRe (``difftre bench grad``): the same BAOAB
Langevin integrator as ``difftre.kernels.integrators`` and the same potential,
as a ``lax.scan``; the loss of the time-averaged observable is differentiated
through every MD step. Its memory grows with the trajectory length and its
gradients with the trajectory's sensitivity to the parameters (exponentially
for chaotic dynamics), which is what the comparison shows.
"""
import jax
import jax.numpy as jnp

from difftre.models.state import State


def baoab_trajectory(energy_fn, params, positions, velocities, box, key, dt, kT, friction, mass,
                     n_states, stride):
    """Positions after every `stride` BAOAB steps, (n_states, N, dim); differentiable in params.
    energy_fn(params, state) -> U (kJ/mol) on the state contract (no neighbour list)."""
    force = jax.grad(lambda x: -energy_fn(params, State(x, box)))
    c1 = jnp.exp(-friction * dt)
    noise = jnp.sqrt((1.0 - c1 * c1) * kT / mass)

    def step(carry, step_key):
        x, v, f = carry
        v = v + 0.5 * dt * f / mass
        x = x + 0.5 * dt * v
        v = c1 * v + noise * jax.random.normal(step_key, v.shape, v.dtype)
        x = x + 0.5 * dt * v
        f = force(x)
        v = v + 0.5 * dt * f / mass
        return (x, v, f), None

    def block(carry, block_key):
        carry, _ = jax.lax.scan(step, carry, jax.random.split(block_key, stride))
        return carry, carry[0]

    carry = (positions, velocities, force(positions))
    _, states = jax.lax.scan(block, carry, jax.random.split(key, n_states))
    return states


def direct_ad_loss(energy_fn, observable, target, params, positions, velocities, box, key, dt, kT, friction,
                   mass, n_equilibration_states, n_states, stride):
    """MSE of the trajectory average of observable(state) (a ``State``) after n_equilibration_states, vs target."""
    states = baoab_trajectory(energy_fn, params, positions, velocities, box, key, dt, kT, friction, mass,
                              n_equilibration_states + n_states, stride)[n_equilibration_states:]
    prediction = jnp.mean(jax.vmap(lambda x: observable(State(x, box)))(states), axis=0)
    return jnp.mean((prediction - target) ** 2)
