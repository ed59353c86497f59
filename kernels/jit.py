"""The one Numba decorator the kernels use.

``error_model="numpy"``: a division by zero gives inf/nan instead of a Python
exception check on every division (which costs several times the arithmetic);
non-finite values are caught by the sampler (`difftre.kernels.sampler`).
User kernels may use it too: ``@kernel`` or ``@kernel(inline="always")``.

Kernels that take other kernels as arguments (the sampler loop, the pair loop)
use ``@kernel(cache=False)``: Numba keys compiled code on the identity of
function arguments, so such code can never be reused from disk and caching it
only fills the cache index. They compile once per process (a few seconds).
"""
from numba import njit


def kernel(function=None, **options):
    """numba.njit with cache=True and error_model='numpy' (plus any other njit options)."""
    options = {"cache": True, "error_model": "numpy", **options}
    if function is None:
        return njit(**options)
    return njit(**options)(function)
