"""The one module where arrays cross between the Numba kernels and JAX, without copies.

On the CPU, JAX aliases a NumPy buffer through DLPack when the buffer is
64-byte aligned (the sampler allocates its state that way,
`difftre.kernels.buffers`), and NumPy views a JAX result through DLPack in
place. `as_jax` / `as_numpy` check the data pointers, so "zero-copy" is a
checked property rather than a hope.

`jax_force_term` lets a potential that only JAX can evaluate (a neural network)
drive the compiled sampler: its Numba system term calls back into Python
(`numba.objmode`) once per step, hands the position buffer to a jitted JAX
force function and adds the JAX output buffer into the force array.

On the GPU, `device_as_jax` / `device_as_numba` pass numba-cuda or CuPy device
arrays to JAX and back through DLPack / the CUDA array interface, with the same
pointer checks. They are written but have not yet run on a GPU
(tests/test_bridge_gpu.py, run by bench/gpu_checks.py), and no GPU sampler uses
them yet: GPU sampling with JAX forces is still to be built.
"""
import itertools
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from numba import objmode

from difftre import md
from difftre.kernels.jit import kernel


def as_jax(array):
    """A JAX array aliasing a NumPy buffer (raises if JAX would have to copy it)."""
    advice = "allocate it with difftre.kernels.buffers.aligned_empty (64-byte aligned, C-contiguous)"
    if not array.flags.c_contiguous:
        raise ValueError(f"JAX would have copied a buffer that is not C-contiguous: {advice}")
    view = jnp.from_dlpack(array)
    if array.size and view.unsafe_buffer_pointer() != array.ctypes.data:
        raise ValueError(f"JAX copied the buffer instead of aliasing it: {advice}")
    return view


def as_numpy(array):
    """A read-only NumPy view of a JAX array's buffer (no copy)."""
    view = np.from_dlpack(array)
    if view.size and view.ctypes.data != array.unsafe_buffer_pointer():
        raise ValueError("NumPy copied the JAX buffer instead of viewing it")
    return view


_CALLBACKS = weakref.WeakValueDictionary()   # key -> callback, alive while its SystemTerm is
_KEYS = itertools.count()
_JITTED = weakref.WeakKeyDictionary()          # energy_fn -> jitted (energy, forces), compiled once


def _call(key, positions, box, forces):
    return _CALLBACKS[key](positions, box, forces)


@kernel(cache=False)
def jax_forces(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """System term whose energy and forces come from a registered JAX function (params[0] = its key).

    The virial of a JAX term is not computed here (NaN): use difftre.observables.stress on stored states.
    """
    key = int(params[0])
    with objmode(energy="float64"):
        energy = _call(key, positions, box, forces)
    virial[:] = np.nan
    return energy


def jax_force_term(energy_fn, params):
    """md.SystemTerm running energy_fn(params, positions, box) (JAX, kJ/mol) in the sampler.

    Forces are -grad energy_fn, jitted once per energy_fn (new params reuse it);
    positions and forces cross without copies.
    """
    if energy_fn not in _JITTED:
        _JITTED[energy_fn] = jax.jit(lambda p, x, b: _negate_grad(jax.value_and_grad(energy_fn, argnums=1)(p, x, b)))
    energy_and_forces = _JITTED[energy_fn]
    key = next(_KEYS)

    def callback(positions, box, forces):
        energy, jax_forces_out = energy_and_forces(params, as_jax(positions), as_jax(box))
        forces += as_numpy(jax_forces_out)
        return float(energy)

    _CALLBACKS[key] = callback
    return md.SystemTerm(jax_forces, np.array([float(key)]), keep_alive=callback)


def _negate_grad(value_and_grad):
    value, grad = value_and_grad
    return value, -grad


# ---------------------------------------------------------------- GPU (never run on a GPU yet)
# numba-cuda device arrays export only __cuda_array_interface__; CuPy wraps that without a copy
# and exports DLPack, which JAX imports; JAX GPU arrays export __cuda_array_interface__ back.

def _device_pointer(array):
    return array.__cuda_array_interface__["data"][0]


def device_as_jax(array):
    """A JAX GPU array aliasing a numba-cuda or CuPy device array (raises if JAX copied it)."""
    import cupy
    buffer = array if isinstance(array, cupy.ndarray) else cupy.asarray(array)   # zero-copy (CAI)
    view = jnp.from_dlpack(buffer)
    if buffer.size and view.unsafe_buffer_pointer() != _device_pointer(buffer):
        raise ValueError("JAX copied the device buffer instead of aliasing it (DLPack import)")
    return view


def device_as_numba(array):
    """A numba-cuda device array viewing a JAX GPU array's buffer (raises if it is a copy)."""
    from numba import cuda
    view = cuda.as_cuda_array(array)
    if view.size and _device_pointer(view) != array.unsafe_buffer_pointer():
        raise ValueError("numba-cuda copied the JAX buffer instead of viewing it")
    return view
