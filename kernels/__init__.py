"""Numba MD engine: boxes, neighbour lists, force kernels, integrators, sampler. Never imports JAX."""
