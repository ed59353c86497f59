"""Zero-copy between numba-cuda / CuPy device arrays and JAX on a GPU (difftre.bridge.device_*).

Runs only on a machine with a GPU, CuPy and JAX's CUDA backend, when
DIFFTRE_CUDA_DEVICE_TESTS=1 (bench/gpu_checks.py sets it); skipped elsewhere, CI included.
"""
import os

import numpy as np
import pytest

if os.environ.get("DIFFTRE_CUDA_DEVICE_TESTS") != "1" or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("GPU-only (DIFFTRE_CUDA_DEVICE_TESTS=1 on a machine with a GPU)", allow_module_level=True)

cupy = pytest.importorskip("cupy")
import jax  # noqa: E402
from numba import cuda  # noqa: E402

from difftre import bridge  # noqa: E402

jax.config.update("jax_enable_x64", True)
try:
    jax.devices("gpu")
except RuntimeError:
    pytest.skip("JAX has no GPU backend (install the gpu extra: jax[cuda12])", allow_module_level=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_device_array_is_aliased_by_jax(dtype):
    host = np.arange(3000, dtype=dtype).reshape(1000, 3)
    device = cuda.to_device(host)
    view = bridge.device_as_jax(device)
    assert view.dtype == dtype and view.shape == host.shape
    assert view.unsafe_buffer_pointer() == device.__cuda_array_interface__["data"][0]
    device.copy_to_device(2 * host)              # written through numba: JAX sees it (same memory)
    np.testing.assert_array_equal(np.asarray(view), 2 * host)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_gpu_array_is_viewed_by_numba_and_cupy_by_jax(dtype):
    array = jax.device_put(np.linspace(0.0, 1.0, 3000, dtype=dtype).reshape(1000, 3), jax.devices("gpu")[0])
    view = bridge.device_as_numba(array)
    assert view.__cuda_array_interface__["data"][0] == array.unsafe_buffer_pointer()
    np.testing.assert_array_equal(view.copy_to_host(), np.asarray(array))
    buffer = cupy.arange(12, dtype=dtype)
    assert bridge.device_as_jax(buffer).unsafe_buffer_pointer() == buffer.data.ptr
