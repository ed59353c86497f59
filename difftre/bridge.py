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
pointer checks; `replica_forces` uses them to give the host-stepped CUDA
sampler (`difftre.md_cuda`, a force field whose only term is a
`jax_force_term`) the JAX forces of R replicas each step. Under numba's CUDA
simulator there is no device memory to share, so there (and only there) both
functions copy. The GPU path has not yet run on a GPU
(tests/test_bridge_gpu.py and the host-stepped checks, run by bench/gpu_checks.py).
"""
import itertools
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from numba import objmode

from difftre import md
from difftre.kernels.jit import kernel
from difftre.models.state import State


def as_jax(array):
    """A JAX array aliasing a NumPy buffer (raises if JAX would have to copy it)."""
    advice = "allocate it with difftre.kernels.buffers.aligned_empty (64-byte aligned, C-contiguous)"
    if not array.flags.c_contiguous:
        raise ValueError(f"JAX would have copied a buffer that is not C-contiguous: {advice}")
    view = jnp.from_dlpack(array)
    _check_same_dtype(array, view)
    if array.size and view.unsafe_buffer_pointer() != array.ctypes.data:
        raise ValueError(f"JAX copied the buffer instead of aliasing it: {advice}")
    return view


def _check_same_dtype(array, view):
    if np.dtype(view.dtype) != np.dtype(array.dtype):
        raise TypeError(f"JAX turned a {np.dtype(array.dtype).name} buffer into {np.dtype(view.dtype).name} (a copy): "
                        f"enable jax_enable_x64 for float64")


def as_numpy(array):
    """A read-only NumPy view of a JAX array's buffer (no copy)."""
    view = np.from_dlpack(array)
    if view.size and view.ctypes.data != array.unsafe_buffer_pointer():
        raise ValueError("NumPy copied the JAX buffer instead of viewing it")
    return view


_CALLBACKS = weakref.WeakValueDictionary()   # key -> callback, alive while its SystemTerm is
_KEYS = itertools.count()
_JITTED = weakref.WeakKeyDictionary()          # energy_fn -> jitted (energy, forces), compiled once
_REPLICA_JITTED = weakref.WeakKeyDictionary()  # energy_fn -> jitted replica forces (GPU), compiled once


def _call(key, positions, box, nbr_idx, nbr_count, forces):
    return _CALLBACKS[key](positions, box, nbr_idx, nbr_count, forces)


@kernel(cache=False)
def jax_forces(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """System term whose energy and forces come from a registered JAX function (params[0] = its key).

    The virial of a JAX term is not computed here (NaN): use difftre.observables.stress on stored states.
    """
    key = int(params[0])
    with objmode(energy="float64"):
        energy = _call(key, positions, box, nbr_idx, nbr_count, forces)
    virial[:] = np.nan
    return energy


def jax_force_term(energy_fn, params, cutoff=0.0):
    """md.SystemTerm running energy_fn(params, state) (JAX, kJ/mol) in the sampler.

    Forces are -grad energy_fn with respect to state.positions, jitted once per
    energy_fn (new params reuse it); positions and forces cross without copies.
    cutoff > 0 (nm): the state carries the sampler's full neighbour list (dense, padded
    with N; it holds every pair within cutoff + skin) as ``state.neighbors``.
    """
    if energy_fn not in _JITTED:
        def energy_and_forces(p, x, b, neighbors):
            value, gradient = jax.value_and_grad(lambda y: energy_fn(p, State(y, b, neighbors)))(x)
            return value, -gradient
        _JITTED[energy_fn] = jax.jit(energy_and_forces)
    key = next(_KEYS)
    callback = _JaxForceCallback(energy_fn, params, _JITTED[energy_fn], cutoff > 0)
    _CALLBACKS[key] = callback
    return md.SystemTerm(jax_forces, np.array([float(key)]), neighbor_cutoff=float(cutoff), keep_alive=callback)


class _JaxForceCallback:
    """Adds the JAX forces of energy_fn(params, ...) to the sampler's force buffer (CPU, once per step)."""

    def __init__(self, energy_fn, params, energy_and_forces, uses_neighbors):
        self.energy_fn, self.params, self._energy_and_forces = energy_fn, params, energy_and_forces
        self.uses_neighbors = uses_neighbors

    def __call__(self, positions, box, nbr_idx, nbr_count, forces):
        neighbors = md.dense_neighbor_list(nbr_idx, nbr_count) if self.uses_neighbors else None
        energy, jax_forces_out = self._energy_and_forces(self.params, as_jax(positions), as_jax(box), neighbors)
        forces += as_numpy(jax_forces_out)
        return float(energy)


def jax_term_model(term):
    """(energy_fn, params) of a jax_force_term, or None for any other term."""
    if term.function is not jax_forces:
        return None
    return term.keep_alive.energy_fn, term.keep_alive.params


def _negate_grad(value_and_grad):
    value, grad = value_and_grad
    return value, -grad


# ---------------------------------------------------------------- GPU (never run on a GPU yet)
# numba-cuda device arrays export only __cuda_array_interface__; CuPy wraps that without a copy
# and exports DLPack, which JAX imports; JAX GPU arrays export __cuda_array_interface__ back.

def _device_pointer(array):
    return array.__cuda_array_interface__["data"][0]


def _simulator():
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def device_as_jax(array):
    """A JAX GPU array aliasing a numba-cuda or CuPy device array (raises if JAX copied it).

    Under numba's CUDA simulator: a copy of the simulated device array (host memory).
    """
    if _simulator():
        return jnp.asarray(array.copy_to_host())
    import cupy
    buffer = array if isinstance(array, cupy.ndarray) else cupy.asarray(array)   # zero-copy (CAI)
    view = jnp.from_dlpack(buffer)
    _check_same_dtype(buffer, view)
    if buffer.size and view.unsafe_buffer_pointer() != _device_pointer(buffer):
        raise ValueError("JAX copied the device buffer instead of aliasing it (DLPack import)")
    return view


def device_as_numba(array):
    """A numba-cuda device array viewing a JAX GPU array's buffer (raises if it is a copy).

    Under numba's CUDA simulator: a simulated device array holding a copy.
    """
    from numba import cuda
    if _simulator():
        return cuda.to_device(np.asarray(array))
    view = cuda.as_cuda_array(array)
    if view.size and _device_pointer(view) != array.unsafe_buffer_pointer():
        raise ValueError("numba-cuda copied the JAX buffer instead of viewing it")
    return view


def replica_forces(energy_fn, params, dtype):
    """Per-step forces of R replicas for the host-stepped CUDA sampler.

    Returns forces(positions, box, step, failure) with positions a numba-cuda
    device array (R, N, dim) nm, box a JAX array (R, dim) nm, step the step
    counter and failure a JAX int32 array (R, 2), giving (energies (R,) kJ/mol as a
    JAX array, a numba-cuda view of the JAX forces (R, N, dim) kJ/mol/nm, failure
    updated: (step, first particle with a non-finite position or force) for a replica
    whose first failure this is, -1 where none). The forces stay valid while the
    view lives. JAX must compute in `dtype` (float64 needs jax_enable_x64): checked
    on the first call.
    """
    if energy_fn not in _REPLICA_JITTED:   # new params (each re-sampled trajectory) reuse it
        def one(p, x, b, step, failure):
            energy, gradient = jax.value_and_grad(lambda y: energy_fn(p, State(y, b)))(x)
            bad = ~jnp.all(jnp.isfinite(x) & jnp.isfinite(gradient), axis=-1)   # as the CPU engine reports:
            first = (failure[0] < 0) & (jnp.any(bad) | ~jnp.isfinite(energy))  # that particle, else particle 0
            failure = jnp.where(first, jnp.stack([step, jnp.argmax(bad).astype(jnp.int32)]), failure)
            return energy, -gradient, failure

        _REPLICA_JITTED[energy_fn] = jax.jit(jax.vmap(one, (None, 0, 0, None, 0)))
    batched = _REPLICA_JITTED[energy_fn]
    checked = []

    def forces(positions, box, step, failure):
        energies, forces_out, failure = batched(params, device_as_jax(positions), box, jnp.int32(step), failure)
        if not checked:
            computed = {np.dtype(energies.dtype), np.dtype(forces_out.dtype)}
            if computed != {np.dtype(dtype)}:
                raise TypeError(f"the JAX model computes in {', '.join(sorted(d.name for d in computed))}, the sampler in "
                                f"{np.dtype(dtype).name}: cast the parameters (and enable jax_enable_x64 "
                                f"for float64)")
            checked.append(True)
        jax.block_until_ready(forces_out)   # JAX's stream has finished before a kernel reads the view
        return energies, device_as_numba(forces_out), failure

    return forces
