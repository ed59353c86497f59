"""JAX energy models and JAX versions of the prior potentials. Never imports Numba."""
