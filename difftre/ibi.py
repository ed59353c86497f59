"""Iterative Boltzmann inversion (IBI) with the simple pressure correction, as in VOTCA-CSG.

A tabulated pair potential U(r) on a uniform grid r (nm; kJ/mol) is refined
against a target radial distribution function g_target(r):

  start   U_0(r)     = -kT ln g_target(r)                   (potential of mean force)
  update  U_{n+1}(r) = U_n(r) + lam kT ln(g_n(r) / g_target(r))
  pressure dU(r)     = A (1 - r / r_c),  A = -sign(dP) max_A kT min(1, f |dP|)

with dP = P - P_target in bar and f in 1/bar (3e-4 in VOTCA's SPC/E tutorial);
potential and pressure updates alternate. ``pair_table_from_values`` turns the
grid values into the engine's SplineTable, ``difftre.md.tabulated_pair(*table)``.
Everything here is NumPy float64.
"""
import jax.numpy as jnp
import numpy as np
import optax
from scipy.interpolate import CubicSpline

from difftre.md import BAR
from difftre.trainer import Trainer



def _grid_arrays(**arrays):
    """float64 1-D arrays of equal length, finite."""
    out = [np.asarray(a, dtype=np.float64) for a in arrays.values()]
    n = out[0].shape
    for name, a in zip(arrays, out):
        if a.ndim != 1 or a.shape != n:
            raise ValueError(f"{name} must be a 1-D array of the grid's length {n}, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has non-finite entries at indices {np.flatnonzero(~np.isfinite(a))[:5]}")
    return out


def _check_rdf(name, g):
    if np.any(g < 0):
        raise ValueError(f"{name} has negative entries at indices {np.flatnonzero(g < 0)[:5]}")


def potential_of_mean_force(r, g_target, kT):
    """U(r) = -kT ln g_target(r) (kJ/mol), the usual IBI start, with a linear repulsive core.

    The inversion is used on the contiguous tail of the grid where g_target > 0
    (from the first r beyond the last zero of g_target to the end). Below it,
    in the core where g_target = 0 (or is zero in places, as a sampled RDF at its
    onset), -kT ln g is infinite; there U continues the straight line through the
    first two points of the tail, with its slope capped at 0 so the core is
    repulsive (U grows, or stays flat, towards r = 0): a finite, constant force
    that keeps particles out.

    Args:
      r: (n,) increasing grid (nm).
      g_target: (n,) target RDF (dimensionless, >= 0), positive at the last point.
      kT: thermal energy (kJ/mol).

    Returns:
      (n,) float64 U (kJ/mol).
    """
    r, g = _grid_arrays(r=r, g_target=g_target)
    _check_rdf("g_target", g)
    zeros = np.flatnonzero(g == 0)
    first = zeros[-1] + 1 if zeros.size else 0
    if first > r.size - 2:
        raise ValueError("g_target must be positive on at least the last two grid points")
    u = np.empty_like(r)
    u[first:] = -kT * np.log(g[first:])
    slope = min((u[first + 1] - u[first]) / (r[first + 1] - r[first]), 0.0)
    u[:first] = u[first] + slope * (r[:first] - r[first])
    return u


def ibi_update(U, g, g_target, kT, lam=1.0):
    """One IBI step: U + lam kT ln(g / g_target) (kJ/mol) on the grid of U.

    The correction is defined where both g (the RDF sampled with U) and g_target
    are positive. Elsewhere (the core where either is zero: the ratio is 0/0,
    or ln of 0 or of infinity) it is taken from the nearest grid points where it
    is defined: constant continuation of the first (last) defined correction
    below (above) them, linear interpolation in the grid index across gaps
    between them. So the core keeps the shape it had and moves with its
    neighbourhood, and U stays finite and continuous.

    Args:
      U: (n,) current potential (kJ/mol) on a grid.
      g: (n,) RDF sampled with U (>= 0).
      g_target: (n,) target RDF (>= 0).
      kT: thermal energy (kJ/mol).
      lam: step scaling, 1 in VOTCA by default.

    Returns:
      (n,) float64 updated potential (kJ/mol).
    """
    U, g, g_target = _grid_arrays(U=U, g=g, g_target=g_target)
    _check_rdf("g", g)
    _check_rdf("g_target", g_target)
    defined = (g > 0) & (g_target > 0)
    if not defined.any():
        raise ValueError("g and g_target are nowhere both positive: the IBI correction is undefined")
    index = np.arange(U.size)
    correction = np.zeros_like(U)
    correction[defined] = lam * kT * np.log(g[defined] / g_target[defined])
    return U + np.interp(index, index[defined], correction[defined])


def pressure_correction(r, r_cut, dP_bar, kT, f=3e-4, max_A=0.1):
    """VOTCA's simple pressure correction dU(r) = A (1 - r / r_cut) (kJ/mol), zero beyond r_cut.

    A = -sign(dP) max_A kT min(1, f |dP|): a linear ramp that is attractive
    (A < 0) when the pressure is too high and repulsive when too low, at most
    max_A kT at r = 0.

    Args:
      r: (n,) grid (nm).
      r_cut: cut-off (nm) where the correction vanishes.
      dP_bar: P - P_target (bar).
      kT: thermal energy (kJ/mol).
      f: scaling per bar (1/bar).
      max_A: largest |A| in units of kT.

    Returns:
      (n,) float64 dU (kJ/mol), to be added to U.
    """
    r = np.asarray(r, dtype=np.float64)
    amplitude = -np.sign(dP_bar) * max_A * kT * min(1.0, f * abs(dP_bar))
    return amplitude * np.clip(1.0 - r / r_cut, 0.0, None)


def pair_table_from_values(r, U):
    """SplineTable (x0, h, coefficients (n - 1, 4)) of a pair potential given on a uniform grid.

    U is first shifted by -U[-1] so that it vanishes at the last knot r[-1],
    which becomes the cut-off. The table is the cubic spline through the shifted
    values, C2 on [r[0], r[-1]], natural (U'' = 0) at r[0] and clamped at r[-1]
    (U' = 0), the same ends as ``models.pair_spline``: energy and force both go
    to zero continuously at the cut-off (U'' may jump there). A potential whose
    slope at r[-1] is not small bends in the last interval to meet U' = 0.
    Below r[0] the first interval's cubic is extrapolated.

    Use: ``difftre.md.tabulated_pair(*pair_table_from_values(r, U))``.

    Args:
      r: (n,) uniform grid (nm), n >= 3, increasing.
      U: (n,) potential values (kJ/mol).

    Returns:
      (x0 = r[0], h, coefficients float64 (n - 1, 4)); on interval k,
      u = c0 + c1 t + c2 t^2 + c3 t^3 with t = r - r_k (docs/DESIGN.md).
    """
    r, U = _grid_arrays(r=r, U=U)
    if r.size < 3:
        raise ValueError(f"a pair table needs at least 3 grid points, got {r.size}")
    steps = np.diff(r)
    h = (r[-1] - r[0]) / (r.size - 1)
    if not (h > 0 and np.allclose(steps, h, rtol=1e-9, atol=0.0)):
        raise ValueError(f"r must be a uniform increasing grid; spacings range from {steps.min()} to {steps.max()}")
    spline = CubicSpline(r[0] + h * np.arange(r.size), U - U[-1], bc_type=((2, 0.0), (1, 0.0)))
    return float(r[0]), float(h), np.ascontiguousarray(spline.c[::-1].T)


class IBITrainer(Trainer):
    """IBI in the trainer's frame: the same sampler, stored states, targets, checkpoints and runner.

    The parameters are the values of a pair spline (``models.pair_spline``, zero with zero slope
    at the cut-off) at its knots ``r`` (nm); each update samples a new trajectory with the
    current potential (every update but the first), then alternates an IBI step on the target
    named ``rdf`` (interpolated from its bins to the knots) and a pressure step on the target
    named ``pressure`` (kJ mol^-1 nm^-3). The loss of the DiffTRe targets is logged for
    comparison, never differentiated into the parameters. Training stops when the RDF MSE has
    not improved for ``patience`` IBI steps.
    """

    def __init__(self, potential, targets, sampling, box, masses, kT, knots, rdf_centers, lam=1.0,
                 pressure_factor=3e-4, max_amplitude=0.1, patience=5, chunk_size=None):
        super().__init__(potential, targets, optax.identity(), sampling, box, masses, kT, chunk_size=chunk_size,
                         resample_threshold=1.0)
        self.knots, self.rdf_centers = np.asarray(knots, np.float64), np.asarray(rdf_centers, np.float64)
        targets = {t.name: t for t in self.targets}
        self.g_target = np.interp(self.knots, self.rdf_centers, np.asarray(targets["rdf"].target))
        self.pressure_target = float(targets["pressure"].target)
        self.lam, self.pressure_factor, self.max_amplitude, self.patience = lam, pressure_factor, max_amplitude, patience

    def initial_params(self, dtype=np.float64):
        """The potential of mean force -kT ln g_target at the knots, shifted to 0 at the cut-off."""
        values = potential_of_mean_force(self.knots, self.g_target, self.kT)
        return np.asarray(values[:-1] - values[-1], dtype)

    def _next_params(self, state, grads, predictions):
        values = np.append(np.asarray(state.params, np.float64), 0.0)
        g = np.interp(self.knots, self.rdf_centers, np.asarray(predictions["rdf"], np.float64))
        rdf_mse = float(np.mean((g - self.g_target) ** 2))
        best = state.notes.get("best_rdf_mse", np.inf)
        state.notes.update(best_rdf_mse=min(best, rdf_mse),
                           steps_without_improvement=0 if rdf_mse < best else
                           state.notes.get("steps_without_improvement", 0) + 1)
        if state.update % 2 == 0:
            values = ibi_update(values, g, self.g_target, self.kT, self.lam)
        else:
            dP_bar = (float(predictions["pressure"]) - self.pressure_target) / BAR
            values = values + pressure_correction(self.knots, self.knots[-1], dP_bar, self.kT,
                                                  self.pressure_factor, self.max_amplitude)
        return jnp.asarray(values[:-1] - values[-1], np.asarray(state.params).dtype), state.opt_state

    def converged(self, state):
        return state.notes.get("steps_without_improvement", 0) >= self.patience
