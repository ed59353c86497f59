"""One source, two targets: the CPU engine's Numba functions as CUDA device functions.

The physics of the engine (pair functions, spline tables, minimum image,
Philox, the integrator steps, external potentials) is written once, as plain
``@kernel`` (``numba.njit``) functions in ``difftre.kernels``. Numba-cuda can
call such functions from a kernel, but they do not compile for the GPU as they
are: the CUDA target has no ``np.sqrt``, ``np.exp``, ``np.floor``, ``np.rint``
or ``np.isfinite`` ufuncs on scalars. ``device_function(fn, dtype)`` rebuilds a
function from its own Python code object so that:

1. ``np`` resolves to ``cuda_numpy``, a module of CUDA equivalents of those
   scalar ufuncs (``math.*``, libdevice ``rint``); the source keeps saying
   ``np.sqrt``. Under the CUDA simulator ``np`` is left alone.
2. every Numba function it calls through a global name is converted the same
   way, recursively (``lennard_jones_shifted`` -> ``lennard_jones``).
3. float32: a Python float literal is float64 to Numba and float64 * float32
   is float64, so ``4.0 * eps`` would silently run in double precision. For
   float32 the function's float constants (the code object's ``co_consts``)
   and float globals are re-typed as ``numpy.float32``: exactly what writing
   ``numba.float32(4.0)`` would do, without touching the source. Functions of
   ``difftre.kernels.random`` are exempt: the Philox/Box-Muller draws stay
   float64 so that CPU and GPU draw bit-identical numbers; callers cast them.
   So are those of ``difftre.kernels.barostat``: its proposal and acceptance
   test are float64 on the CPU in either precision, and must decide alike.
4. ``overrides`` replaces named globals for one use (e.g. the Langevin step's
   ``normal4`` by one that casts the float64 draws to the working precision).
5. an intrinsic (LLVM IR written for the CPU target, e.g. the 4-wide vector
   operations of ``difftre.kernels.uf3``) runs neither in the simulator nor on
   the GPU: a module lists plain-arithmetic versions of its intrinsics in a
   global dict ``SCALAR_TWINS`` (name -> function), which replace them.

The result is a ``cuda.jit(device=True)`` function (a plain Python function
under the simulator, which executes Python per thread anyway).
"""
import math
import types

import numpy as np
from numba import config, cuda
from numba.core.dispatcher import Dispatcher

SIMULATOR = bool(config.ENABLE_CUDASIM)

# modules whose arithmetic is defined in float64 on every target (see 3. above)
FLOAT64_MODULES = ("difftre.kernels.random", "difftre.kernels.barostat")


def _rint(x):
    """numpy.rint for one scalar (round half to even), CUDA implementation below."""
    return np.rint(x)


if not SIMULATOR:
    from numba import types as _nbtypes
    from numba.cuda import libdevice
    from numba.cuda.extending import overload

    @overload(_rint, target="cuda")
    def _rint_cuda(x):
        if x == _nbtypes.float32:
            return lambda x: libdevice.rintf(x)
        return lambda x: libdevice.rint(x)


def _make_cuda_numpy():
    module = types.ModuleType("difftre_cuda_numpy",
                              "numpy's scalar functions as the CUDA target knows them (see difftre.kernels.cuda.port)")
    for name in ("uint64", "uint32", "int64", "int32", "float64", "float32", "bool_", "pi", "inf", "nan"):
        setattr(module, name, getattr(np, name))
    module.sqrt = math.sqrt
    module.exp = math.exp
    module.log = math.log
    module.cos = math.cos
    module.sin = math.sin
    module.floor = math.floor    # float -> float of the same type on the CUDA target
    module.ceil = math.ceil
    module.isfinite = math.isfinite
    module.isnan = math.isnan
    module.fabs = math.fabs
    module.rint = _rint
    return module


cuda_numpy = _make_cuda_numpy()

_cache = {}


def _float32_constant(value):
    if type(value) is float or type(value) is np.float64:
        return np.float32(value)
    if type(value) is tuple and value and all(type(v) is float or type(v) is np.float64 for v in value):
        return tuple(np.float32(v) for v in value)
    return value


def _retype_code(code):
    """The code object with float constants (also in nested code objects and tuples) as numpy.float32."""
    def convert(const):
        if isinstance(const, types.CodeType):
            return _retype_code(const)
        if type(const) is tuple:
            return tuple(convert(c) for c in const)
        return _float32_constant(const)
    return code.replace(co_consts=tuple(convert(c) for c in code.co_consts))


def _global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def python_function(fn):
    """The Python function behind a Numba dispatcher (or the function itself)."""
    return fn.py_func if isinstance(fn, Dispatcher) else fn


def rebuild(fn, dtype, namespace=None, overrides=None, convert_calls=True):
    """The plain Python function ``fn`` recompiled from its code object for the GPU in ``dtype``.

    namespace: the globals dict to use (default: a copy of fn's module globals);
    overrides: names to replace in it. Numba functions it calls are converted
    with `device_function` (when convert_calls).
    """
    fn = python_function(fn)
    dtype = np.dtype(dtype).type
    keep_float64 = fn.__module__ in FLOAT64_MODULES
    if namespace is None:
        namespace = dict(fn.__globals__)
    code = fn.__code__
    twins = fn.__globals__.get("SCALAR_TWINS", {})
    for name in _global_names(code):
        if overrides and name in overrides:
            continue
        if name in twins:
            namespace[name] = device_function(twins[name], dtype)
            continue
        if name not in namespace:
            continue
        value = namespace[name]
        if value is np and not SIMULATOR:
            namespace[name] = cuda_numpy
        elif convert_calls and isinstance(value, Dispatcher):
            namespace[name] = device_function(value, dtype)
        elif dtype is np.float32 and not keep_float64:
            namespace[name] = _float32_constant(value)
    if overrides:
        namespace.update(overrides)
    if dtype is np.float32 and not keep_float64:
        code = _retype_code(code)
    new = types.FunctionType(code, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    return new


def device_function(fn, dtype, overrides=None):
    """A CUDA device function compiled from the same Python source as the Numba function ``fn``.

    Cached per (function, dtype, overrides); overrides is a dict of global
    names to replacement objects (device functions or constants).
    """
    py = python_function(fn)
    dtype = np.dtype(dtype).type
    key = (py, dtype, tuple(sorted((k, id(v)) for k, v in (overrides or {}).items())))
    if key not in _cache:
        new = rebuild(py, dtype, overrides=overrides)
        _cache[key] = (new if SIMULATOR else cuda.jit(device=True)(new), overrides)
    return _cache[key][0]
