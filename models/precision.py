"""Precision checks shared by all JAX models: the dtype asked for is the dtype that runs."""
import jax
import jax.numpy as jnp
import numpy as np

_X64_ERROR = ("float64 requested but jax_enable_x64 is off; call "
              "jax.config.update('jax_enable_x64', True) before creating arrays")


def check_dtype(dtype):
    """Return ``dtype`` as a numpy dtype, accepting only float32 and float64.

    ``dtype`` may be ``numpy.float32``/``numpy.float64``, their jnp aliases or the
    strings ``"float32"``/``"float64"``. Raises ``ValueError`` for any other dtype
    and for float64 while ``jax_enable_x64`` is off (JAX would silently run float32).
    """
    if dtype is None:
        raise ValueError("dtype is required: float32 or float64")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"unsupported dtype {dtype!r}; use float32 or float64") from err
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"unsupported dtype {dtype}; use float32 or float64")
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(_X64_ERROR)
    return dtype


def params_dtype(params):
    """The one floating dtype shared by all leaves of the parameter pytree ``params``."""
    dtypes = {jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(params)}
    if len(dtypes) != 1:
        raise ValueError(f"parameters mix dtypes {sorted(map(str, dtypes))}")
    return check_dtype(dtypes.pop())
