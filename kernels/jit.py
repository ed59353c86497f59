"""The one Numba decorator the kernels use.

``error_model="numpy"``: a division by zero gives inf/nan instead of a Python
exception check on every division (which costs several times the arithmetic);
non-finite values are caught by the sampler (`difftre.kernels.sampler`).
User kernels may use it too: ``@kernel`` or ``@kernel(inline="always")``.
"""
from numba import njit


def kernel(function=None, **options):
    """numba.njit with cache=True and error_model='numpy' (plus any other njit options)."""
    options = {"cache": True, "error_model": "numpy", **options}
    if function is None:
        return njit(**options)
    return njit(**options)(function)
