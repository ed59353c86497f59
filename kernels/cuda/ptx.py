"""Compile the CUDA kernels to PTX without a GPU (NVVM only), to check them where no device is lent.

Numba-cuda asks the current device for its compute capability when it compiles
a device function; `assume_compute_capability` answers for it when there is no
device, so that ``cuda.compile_ptx`` (which takes the target cc explicitly) can
compile kernels calling device functions. Verification tooling only: the
engine never needs it.
"""
import contextlib
import types

import numpy as np
from numba import cuda

from difftre.kernels.cuda.port import SIMULATOR, device_function


@contextlib.contextmanager
def assume_compute_capability(cc=(9, 0)):
    """Within the block, device-function compilation targets `cc` even without a GPU."""
    if SIMULATOR:
        raise RuntimeError("PTX needs the real CUDA target: unset NUMBA_ENABLE_CUDASIM")
    import numba.cuda.dispatcher as dispatcher
    original = dispatcher.get_current_device
    try:
        if cuda.is_available():
            yield
            return
    except Exception:
        pass
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=tuple(cc))
    try:
        yield
    finally:
        dispatcher.get_current_device = original


def device_function_ptx(fn, dtype, argument_types, cc=(9, 0)):
    """PTX of the CPU engine's Numba function `fn` ported to the GPU in dtype, called with argument_types."""
    device = device_function(fn, np.dtype(dtype).type)
    names = ", ".join(f"a{k}" for k in range(len(argument_types)))
    namespace = {"device": device}
    exec(f"def call({names}):\n    return device({names})\n", namespace)
    with assume_compute_capability(cc):
        return cuda.compile_ptx(namespace["call"], tuple(argument_types), device=True, cc=tuple(cc))[0]


def kernel_ptx(sampler, state, cc=(9, 0)):
    """PTX of a sampler's MD kernel (``sampler.kernel_ptx(state, cc)``, e.g. `difftre.md_cuda.CudaSampler`)
    for the argument types of `state`, compiled without a GPU."""
    with assume_compute_capability(cc):
        return sampler.kernel_ptx(state, cc)
