"""Cubic-spline potentials with learnable values at evenly spaced knots.

The spline through values theta_k at knots x_k = x_min + k h is linear in theta, so
the map theta -> per-interval coefficients is a constant matrix, built once in numpy
float64 and applied with one einsum (differentiable, any precision). Coefficients
follow the SplineTable convention of docs/DESIGN.md: on interval k,
u(x) = c0 + c1 t + c2 t^2 + c3 t^3 with t = x - x_k (absolute units); outside
[x_min, x_max] the first/last interval's polynomial is extrapolated.

Two boundary conditions (``SplineGrid.zero_end``):
  * natural (default): u'' = 0 at both ends; n learnable values; C2 everywhere.
  * zero end: natural at x_min, and at x_max the value is fixed to 0 with zero slope
    (clamped end); n - 1 learnable values (knots 0 .. n-2). Used by the tabulated
    pair potential, which thus goes to zero at the cut-off with continuous force.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .geometry import state_arrays, wrap
from .precision import check_dtype, params_dtype


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class SplineGrid:
    """Evenly spaced knots on [x_min, x_max] (static: safe to pass through jax.jit).

    basis "natural": the natural cubic spline interpolating the knot values (C2, but
    every value moves the whole curve). basis "bspline": the uniform cubic B-spline with
    the knot values as control points (C2 and local: a value moves only the four
    intervals around its knot, so values no particle ever visits get exactly zero
    gradient); linear ghost points make it interpolate the end values with zero curvature.
    """
    x_min: float = 0.0
    x_max: float = 1.0
    n: int = 50
    zero_end: bool = False
    basis: str = "natural"

    def __post_init__(self):
        if self.n < 3 or not self.x_max > self.x_min:
            raise ValueError(f"need n >= 3 knots and x_max > x_min, got {self}")
        if self.basis not in ("natural", "bspline") or (self.basis == "bspline" and self.zero_end):
            raise ValueError(f"basis must be 'natural' or 'bspline' (bspline without zero_end), got {self}")

    @property
    def h(self):
        """Knot spacing (x_max - x_min) / (n - 1)."""
        return (self.x_max - self.x_min) / (self.n - 1)

    @property
    def n_params(self):
        """Number of learnable knot values."""
        return self.n - self.zero_end


@functools.lru_cache(maxsize=None)
def _coefficient_matrix(grid):
    """Read-only float64 array (n - 1, 4, n_params) mapping knot values to coefficients."""
    if grid.basis == "bspline":
        return _bspline_coefficient_matrix(grid)
    n, h = grid.n, grid.h
    # Second derivatives M solve A M = B y (interior rows: continuity of u').
    a, b = np.zeros((n, n)), np.zeros((n, n))
    for k in range(1, n - 1):
        a[k, k - 1:k + 2] = 1.0, 4.0, 1.0
        b[k, k - 1:k + 2] = np.array([1.0, -2.0, 1.0]) * 6.0 / h ** 2
    a[0, 0] = 1.0                       # natural start: M_0 = 0
    if grid.zero_end:                   # u'(x_max) = 0: M_{n-2} + 2 M_{n-1} = -6 (y_{n-1} - y_{n-2}) / h^2
        a[-1, -2:] = 1.0, 2.0
        b[-1, -2:] = np.array([6.0, -6.0]) / h ** 2
    else:                               # natural end: M_{n-1} = 0
        a[-1, -1] = 1.0
    m = np.linalg.solve(a, b)
    y = np.eye(n)
    c = np.stack([y[:-1],
                  (y[1:] - y[:-1]) / h - h * (2.0 * m[:-1] + m[1:]) / 6.0,
                  m[:-1] / 2.0,
                  (m[1:] - m[:-1]) / (6.0 * h)], axis=1)
    c = np.ascontiguousarray(c[:, :, :grid.n_params])  # zero_end: the last value is 0
    c.setflags(write=False)
    return c


def _bspline_coefficient_matrix(grid):
    """Uniform cubic B-spline: interval k uses control points k-1..k+2 (ghosts 2 c_0 - c_1 and
    2 c_{n-1} - c_{n-2}); in t = u / h its cubic is [(1-t)^3, 3t^3-6t^2+4, -3t^3+3t^2+3t+1, t^3] / 6."""
    n, h = grid.n, grid.h
    extended = np.zeros((n + 2, n))
    extended[1:-1] = np.eye(n)
    extended[0, :2] = 2.0, -1.0
    extended[-1, -2:] = -1.0, 2.0
    powers = np.array([[1.0, 4.0, 1.0, 0.0],       # t^0 .. t^3 weights of P_{k-1}, P_k, P_{k+1}, P_{k+2}
                       [-3.0, 0.0, 3.0, 0.0],
                       [3.0, -6.0, 3.0, 0.0],
                       [-1.0, 3.0, -3.0, 1.0]]) / 6.0 / (h ** np.arange(4))[:, None]
    c = np.stack([powers @ extended[k:k + 4] for k in range(n - 1)])
    c.setflags(write=False)
    return c


def _check_theta(theta, grid):
    if jnp.shape(theta) != (grid.n_params,):
        raise ValueError(f"expected {grid.n_params} knot values for {grid}, got shape {jnp.shape(theta)}")


def init_spline(key, grid, dtype, scale=0.01):
    """Knot values ~ scale * N(0, 1), shape (grid.n_params,), in ``dtype``."""
    return scale * jax.random.normal(key, (grid.n_params,), check_dtype(dtype))


def roughness(theta):
    """sum_k (theta[k+1] - 2 theta[k] + theta[k-1])^2 (energy^2): the P-spline penalty of a uniform
    spline's parameters (Eilers & Marx, Stat. Sci. 11, 89 (1996)).

    Its gradient is the fourth difference of theta, about h^4 d4U/dx4 for a smooth U: it barely
    biases a well-sampled spline, but ties knots that few states reach to their neighbours.
    """
    return jnp.sum((theta[2:] - 2.0 * theta[1:-1] + theta[:-2]) ** 2)


def spline_coefficients(theta, grid):
    """Per-interval coefficients (n - 1, 4) (SplineTable convention), differentiable in theta."""
    _check_theta(theta, grid)
    return jnp.einsum("ijk,k->ij", jnp.asarray(_coefficient_matrix(grid), theta.dtype), theta)


def evaluate_table(x, x0, h, coefficients):
    """Evaluate a SplineTable (x0, h, coefficients (n_intervals, 4)) at x (any shape).

    Outside the knot range the first/last interval's polynomial is extrapolated.
    """
    k = jnp.clip(jnp.floor((x - x0) / h), 0, coefficients.shape[0] - 1)   # float, x's dtype
    t = x - (x0 + k * h)
    c = coefficients[k.astype(jnp.int32)]
    return c[..., 0] + t * (c[..., 1] + t * (c[..., 2] + t * c[..., 3]))


def evaluate_spline(x, theta, grid):
    """Spline value u(x) (energy units of theta) at points x of any shape (no wrapping)."""
    x = jnp.asarray(x, theta.dtype)
    return evaluate_table(x, grid.x_min, grid.h, spline_coefficients(theta, grid))


def external_spline(grid=SplineGrid()):
    """External spline model of a 1-D system on ``grid``: ``energy(params, state)``.

    energy = sum_i u(x_i wrapped into [0, L)) in the units of the knot values (kT for the
    double well), the parameters' dtype. params: knot values theta (grid.n_params,);
    state: positions (N, 1) and box (1,) (cast to the parameters' dtype), neighbours and
    deformation ignored. Default grid: 50 knots on [0, 1] (the double-well model).
    """
    def energy(params, state):
        positions, box, _ = state_arrays(state, params_dtype(params))
        if positions.ndim != 2 or positions.shape[1] != 1:
            raise ValueError(f"external spline needs positions of shape (N, 1), got {positions.shape}")
        return jnp.sum(evaluate_spline(wrap(positions, box)[:, 0], params, grid))
    return energy


def export_spline_table(params, grid):
    """SplineTable (x0, h, coefficients float64 (n - 1, 4)) for the Numba kernels."""
    theta = np.asarray(params, np.float64)
    _check_theta(theta, grid)
    return float(grid.x_min), float(grid.h), _coefficient_matrix(grid) @ theta
