"""Tabulated pair potential: a cubic spline in r with learnable knot values.

Knots r_k evenly spaced on [r_min, r_cut]. The value at r_cut is fixed to 0 and the
slope there is 0 (clamped end); the start r_min is a natural end (u'' = 0). So the
energy and the force go to zero continuously at the cut-off (u'' may jump there);
the n - 1 values at r_0 .. r_{n-2} are learned. Below r_min the first interval's
cubic is extrapolated (a prior should keep pairs out of that region); pairs with
r >= r_cut contribute nothing.
"""
from .geometry import pair_energy, state_arrays
from .precision import params_dtype
from .spline import SplineGrid, evaluate_spline, export_spline_table, init_spline


def pair_spline_grid(r_min, r_cut, n=50):
    """Grid of ``n`` knots on [r_min, r_cut] (nm) with the zero, zero-slope end at r_cut."""
    return SplineGrid(float(r_min), float(r_cut), int(n), zero_end=True)


def _check_grid(grid):
    if not grid.zero_end:
        raise ValueError("a pair spline needs a grid from pair_spline_grid (zero_end=True)")


def init_pair_spline(key, grid, dtype, scale=0.01):
    """Knot values (kJ/mol) ~ scale * N(0, 1), shape (n - 1,), in ``dtype``."""
    _check_grid(grid)
    return init_spline(key, grid, dtype, scale)


def pair_spline(grid):
    """The tabulated pair model on ``grid``: ``energy(params, state)``.

    energy = sum_{i<j, r_ij < r_cut} u(r_ij) (kJ/mol, the parameters' dtype) over the full
    dense list ``state.neighbors`` (covering r_cut), under ``state.deformation``.
    params: knot values (n - 1,) (kJ/mol); positions and box (nm) are cast to their dtype.
    grid: from ``pair_spline_grid``.
    """
    _check_grid(grid)

    def energy(params, state):
        positions, box, deformation = state_arrays(state, params_dtype(params))
        return pair_energy(lambda r: evaluate_spline(r, params, grid), positions, box, state.neighbors,
                           grid.x_max, deformation)
    return energy


def export_pair_table(params, grid):
    """SplineTable (r0, h, coefficients float64 (n - 1, 4)); the kernel cuts at the last knot."""
    _check_grid(grid)
    return export_spline_table(params, grid)
