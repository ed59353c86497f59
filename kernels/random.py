"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11) and normal deviates.

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


# Wichura, Algorithm AS 241 (PPND16), Appl. Statist. 37, 477 (1988): the inverse normal CDF,
# accurate to about 1e-16; a rational function in the central 85% (no transcendental calls).
_A = (3.3871328727963666080e0, 1.3314166789178437745e+2, 1.9715909503065514427e+3, 1.3731693765509461125e+4,
      4.5921953931549871457e+4, 6.7265770927008700853e+4, 3.3430575583588128105e+4, 2.5090809287301226727e+3)
_B = (1.0, 4.2313330701600911252e+1, 6.8718700749205790830e+2, 5.3941960214247511077e+3,
      2.1213794301586595867e+4, 3.9307895800092710610e+4, 2.8729085735721942674e+4, 5.2264952788528545610e+3)
_C = (1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0, 3.64784832476320460504e0,
      1.27045825245236838258e0, 2.41780725177450611770e-1, 2.27238449892691845833e-2, 7.74545014278341407640e-4)
_D = (1.0, 2.05319162663775882187e0, 1.67638483018380384940e0, 6.89767334985100004550e-1,
      1.48103976427480074590e-1, 1.51986665636164571966e-2, 5.47593808499534494600e-4, 1.05075007164441684324e-9)
_E = (6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0, 2.96560571828504891230e-1,
      2.65321895265761230930e-2, 1.24266094738807843860e-3, 2.71155556874348757815e-5, 2.01033439929228813265e-7)
_F = (1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
      7.86869131145613259100e-4, 1.84631831751005468180e-5, 1.42151175831644588870e-7, 2.04426310338993978564e-15)


@kernel(inline="always")
def _polynomial(c, x):
    return c[0] + x * (c[1] + x * (c[2] + x * (c[3] + x * (c[4] + x * (c[5] + x * (c[6] + x * c[7]))))))


@kernel(inline="always")
def inverse_normal_cdf(p):
    """x with Phi(x) = p for p in (0, 1) (AS 241)."""
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _polynomial(_A, r) / _polynomial(_B, r)
    r = np.sqrt(-np.log(p if q < 0.0 else 1.0 - p))
    if r <= 5.0:
        x = _polynomial(_C, r - 1.6) / _polynomial(_D, r - 1.6)
    else:
        x = _polynomial(_E, r - 5.0) / _polynomial(_F, r - 5.0)
    return -x if q < 0.0 else x


@kernel(inline="always")
def uniform4(seed, step, counter, stream):
    """Four independent uniform numbers in (0, 1) for (seed, step, counter, stream).

    Streams: 0 the Langevin noise (counter: a group of particles), 1 the Monte Carlo barostat
    (counter 0); a new consumer takes a new stream so that no two draw the same numbers.
    """
    s = np.uint64(seed)
    t = np.uint64(step)
    r0, r1, r2, r3 = philox4x32(t & _MASK32, t >> _SHIFT, np.uint64(counter) & _MASK32,
                                np.uint64(stream) & _MASK32, s & _MASK32, s >> _SHIFT)
    return _unit_open(r0), _unit_open(r1), _unit_open(r2), _unit_open(r3)


@kernel(inline="always")
def normal4(seed, step, counter, stream):
    """Four independent standard normal numbers for (seed, step, counter, stream), by inversion."""
    u0, u1, u2, u3 = uniform4(seed, step, counter, stream)
    return inverse_normal_cdf(u0), inverse_normal_cdf(u1), inverse_normal_cdf(u2), inverse_normal_cdf(u3)
