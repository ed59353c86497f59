"""Aligned array allocation (NumPy only): buffers that JAX can view without copying."""
import numpy as np

ALIGNMENT = 64  # bytes; what XLA's CPU client needs to alias an external buffer


def aligned_empty(shape, dtype, alignment=ALIGNMENT):
    """An uninitialised C-contiguous array whose data pointer is a multiple of `alignment` bytes."""
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n_bytes + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset:offset + n_bytes].view(dtype).reshape(shape)


def aligned_copy(array, dtype):
    """`array` converted to dtype in a fresh aligned buffer."""
    out = aligned_empty(np.shape(array), dtype)
    out[...] = array
    return out
