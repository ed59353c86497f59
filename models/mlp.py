"""Multilayer perceptron potential (the paper's speed-up study: 2 hidden layers x 100 swish units).

Plain JAX, no neural-network library: parameters are a list of {"w", "b"} dicts (a
pytree optax can update) and the model is a pure function of (params, inputs).
"""
import jax
import jax.numpy as jnp
import optax

from .geometry import state_arrays, wrap
from .precision import check_dtype, params_dtype


def init_mlp(key, layer_sizes, dtype):
    """Parameters for ``layer_sizes`` = (n_in, hidden..., n_out), e.g. (1, 100, 100, 1).

    Weights LeCun-normal (jax.nn.initializers), biases zero, all in ``dtype``.
    """
    dtype = check_dtype(dtype)
    init_w = jax.nn.initializers.lecun_normal()
    keys = jax.random.split(key, len(layer_sizes) - 1)
    return [{"w": init_w(k, (n_in, n_out), dtype), "b": jnp.zeros((n_out,), dtype)}
            for k, n_in, n_out in zip(keys, layer_sizes[:-1], layer_sizes[1:])]


def mlp_apply(params, x, activation=jax.nn.swish):
    """Apply the MLP to x (..., n_in) -> (..., n_out); smooth activation, linear last layer."""
    for layer in params[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_external_energy(params, state):
    """External MLP potential: sum_i MLP(x_i wrapped into [0, L)) (energy units, kT for the toy).

    Input is the wrapped coordinate (N, dim) of ``state`` (dim = 1 for the double well) cast
    to the parameters' dtype; neighbours and deformation are ignored. The network's single
    output is the per-particle energy.
    """
    positions, box, _ = state_arrays(state, params_dtype(params))
    if params[0]["w"].shape[0] != positions.shape[1] or params[-1]["w"].shape[1] != 1:
        raise ValueError(f"need an MLP with {positions.shape[1]} inputs and 1 output")
    return jnp.sum(mlp_apply(params, wrap(positions, box)))


def fit_mlp(params, inputs, targets, steps=20000, learning_rate=1e-3):
    """params moved by Adam to minimise mean (MLP(inputs) - targets)^2; inputs (n, n_in), targets (n, n_out).

    For starting a model from a known function (e.g. the double well, to measure gradients where
    the model reproduces it). Returns (params, root-mean-square residual).
    """
    optimizer = optax.adam(learning_rate)
    loss = lambda p: jnp.mean((mlp_apply(p, inputs) - targets) ** 2)

    def step(carry, _):
        p, opt_state = carry
        value, grads = jax.value_and_grad(loss)(p)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(p, updates), opt_state), value

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=steps))(params)
    return params, float(jnp.sqrt(loss(params)))
