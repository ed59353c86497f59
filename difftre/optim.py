"""Optimiser pieces beyond optax's own, as optax gradient transformations.

`add_penalty_gradient(penalty, weight)` adds weight * grad penalty(params) to the
loss gradient, before the optimiser proper (as optax.add_decayed_weights does for
|params|^2 / 2). The observables' loss that is logged stays the paper's loss; the
penalty only shapes the steps:

    optax.chain(add_penalty_gradient(spline.roughness, 1e-4), optax.adam(schedule, b1=0.1, b2=0.4))
"""
import jax
import optax


def add_penalty_gradient(penalty, weight):
    """Gradient transformation: g <- g + weight * grad penalty(params) (needs params in update)."""
    if not weight >= 0:
        raise ValueError(f"penalty weight must be >= 0, got {weight}")
    penalty_grad = jax.grad(penalty)

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("add_penalty_gradient needs params: call update(grads, state, params)")
        return jax.tree.map(lambda g, p: g + weight * p, grads, penalty_grad(params)), state

    return optax.GradientTransformation(init, update)
