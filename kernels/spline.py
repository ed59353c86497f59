"""Evaluation of cubic spline tables (the format models export, see docs/DESIGN.md).

params = [x0, h, c_00, c_01, c_02, c_03, c_10, ...]: uniform knots x_k = x0 + k h,
on interval k u(x) = c0 + c1 t + c2 t^2 + c3 t^3 with t = x - x_k. Outside the
knots the first / last interval's cubic is extrapolated.
"""
import numpy as np
from difftre.kernels.jit import kernel


@kernel(inline="always")
def spline_value_and_slope(x, params):
    """(u(x), du/dx) of a packed cubic spline table."""
    x0 = params[0]
    h = params[1]
    n_intervals = (params.shape[0] - 2) // 4
    k = int(np.floor((x - x0) / h))
    k = min(max(k, 0), n_intervals - 1)
    t = x - (x0 + np.float32(k) * h)   # float32 k keeps a float32 table in float32 (exact for k < 2^24)
    c = 2 + 4 * k
    c0 = params[c]
    c1 = params[c + 1]
    c2 = params[c + 2]
    c3 = params[c + 3]
    return c0 + t * (c1 + t * (c2 + t * c3)), c1 + t * (2.0 * c2 + 3.0 * t * c3)


def pack_spline_table(x0, h, coefficients, dtype=np.float64):
    """Flatten (x0, h, coefficients (n_intervals, 4)) into the kernels' params array."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if coefficients.ndim != 2 or coefficients.shape[1] != 4 or coefficients.shape[0] < 1:
        raise ValueError(f"spline coefficients must have shape (n_intervals, 4), got {coefficients.shape}")
    if not (np.isfinite(x0) and np.isfinite(h) and h > 0):
        raise ValueError(f"spline grid needs finite x0 and h > 0, got x0={x0}, h={h}")
    if not np.all(np.isfinite(coefficients)):
        bad = np.argwhere(~np.isfinite(coefficients))[0]
        raise ValueError(f"spline coefficient [{bad[0]}, {bad[1]}] is not finite")
    return np.concatenate([[x0, h], coefficients.ravel()]).astype(dtype)
