"""CUDA (numba-cuda) versions of the engine kernels."""
