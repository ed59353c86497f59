"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11).

Each draw is a pure function of (seed, step, particle, stream), so the random
state of a trajectory is only its seed and step counter: it continues across
trajectories, is trivially checkpointed, and the CPU and CUDA kernels draw
identical numbers (the functions are plain `njit` and callable from CUDA).
"""
import numpy as np
from difftre.kernels.jit import kernel

_MASK32 = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_SHIFT = np.uint64(32)


@kernel(inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on counter (c0..c3) with key (k0, k1); all uint64 holding 32-bit words."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0 = p0 >> _SHIFT
        lo0 = p0 & _MASK32
        hi1 = p1 >> _SHIFT
        lo1 = p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


@kernel(inline="always")
def _unit_open(word):
    """uint32 word -> uniform float in the open interval (0, 1)."""
    return (np.float64(word) + 0.5) * 2.3283064365386963e-10


@kernel(inline="always")
def normal4(seed, step, particle, stream):
    """Four independent standard normal numbers for (seed, step, particle, stream) by Box-Muller."""
    s = np.uint64(seed)
    t = np.uint64(step)
    r0, r1, r2, r3 = philox4x32(t & _MASK32, t >> _SHIFT, np.uint64(particle) & _MASK32,
                                np.uint64(stream) & _MASK32, s & _MASK32, s >> _SHIFT)
    rad_a = np.sqrt(-2.0 * np.log(_unit_open(r0)))
    rad_b = np.sqrt(-2.0 * np.log(_unit_open(r2)))
    ang_a = 6.283185307179586 * _unit_open(r1)
    ang_b = 6.283185307179586 * _unit_open(r3)
    return rad_a * np.cos(ang_a), rad_a * np.sin(ang_a), rad_b * np.cos(ang_b), rad_b * np.sin(ang_b)
