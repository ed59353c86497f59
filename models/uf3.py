"""Learnable many-body spline potential of the UF3 form (Xie, Rupp & Hennig, npj Comput. Mater. 9, 162 (2023)).

    U = sum_{i<j} sum_n a_n B_n(r_ij) + sum_i sum_{j<k} sum_{lmn} c_lmn B_l(r_ij) B_m(r_ik) B_n(r_jk)

(kJ/mol, nm; one particle type; the prior is added separately by the caller).

Basis: cubic B-splines on uniform knots with the end knots repeated four times, as
UF3 and LAMMPS ``pair_style uf3`` use them: an axis with ``n`` intervals on
[r_min, r_cut] has the knot vector [r_min]*4 + [r_min + k h for k = 1..n-1] + [r_cut]*4
(h = (r_cut - r_min) / n, n + 7 knots) and n + 3 basis functions. The last three
coefficients of every axis are fixed to zero ("trailing trim 3"), so energy and force
vanish smoothly (C2) at every cut-off; below r_min the polynomial of the first interval
is extrapolated for the pair term, while a triplet with a distance below its axis' r_min
is left out (as LAMMPS does; r_min = 0 by default, where neither happens).

Three-body coefficients are symmetric under l <-> m (the two legs i-j and i-k at the
centre atom i); only the free ones are learned: l <= m < n_leg, n < n_jk. The free
parameters theta are [a_0 .. a_{n_pair-1}, c_free...] (``UF3Spec.n_free`` of them) and U is
linear in theta: U = theta . Phi(state), Phi = ``UF3Model.features``.

Triplets: for each centre i the pairs (j, k) of its neighbours with both legs shorter than
the leg cut-off and r_jk shorter than the r_jk cut-off. LAMMPS requires the r_jk cut-off
to be twice the leg cut-off (then no triplet is lost to it).

State contract (models/state.py): ``state.neighbors`` a full dense list covering
max(pair cut-off, leg cut-off); ``state.deformation`` F applied to the minimum-image
displacements.
"""
import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .geometry import neighbor_distances
from .precision import params_dtype
from .state import deformed, strain_deformation


@dataclasses.dataclass(frozen=True)
class SplineAxis:
    """One B-spline axis: n_intervals uniform intervals on [r_min, cutoff] (nm), 4-fold end knots."""
    r_min: float
    cutoff: float
    n_intervals: int

    @property
    def spacing(self):
        """Knot spacing h (nm)."""
        return (self.cutoff - self.r_min) / self.n_intervals

    @property
    def n_basis(self):
        """Number of basis functions, n_intervals + 3 (the last 3 have zero coefficients)."""
        return self.n_intervals + 3

    @property
    def knots(self):
        """Knot vector (n_intervals + 7,) float64 (nm): r_min x4, interior knots, cutoff x4."""
        interior = [self.r_min + k * self.spacing for k in range(1, self.n_intervals)]
        return np.array([self.r_min] * 4 + interior + [self.cutoff] * 4, dtype=np.float64)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class UF3Spec:
    """Cut-offs (nm) and knot interval counts of a one-type UF3 potential (static under jax.jit).

    pair_cutoff, n_pair: the two-body spline. leg_cutoff, n_leg: the two legs i-j and i-k of a
    triplet centred on i. jk_cutoff, n_jk: the third side j-k; jk_cutoff defaults to
    2 leg_cutoff and must equal it (LAMMPS pair_style uf3 requires it). *_r_min: the first knot
    of each axis (nm). n_types: particle types (only 1 is supported now; the parameter layout of
    the kernels and the LAMMPS file carry it).
    """
    pair_cutoff: float
    leg_cutoff: float
    n_pair: int
    n_leg: int
    n_jk: int
    pair_r_min: float = 0.0
    leg_r_min: float = 0.0
    jk_r_min: float = 0.0
    jk_cutoff: Optional[float] = None
    n_types: int = 1

    def __post_init__(self):
        if self.jk_cutoff is None:
            object.__setattr__(self, "jk_cutoff", 2.0 * self.leg_cutoff)
        for name in ("n_pair", "n_leg", "n_jk", "n_types"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"UF3Spec.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.n_types != 1:
            raise ValueError(f"UF3Spec.n_types: only one particle type is supported now, got {self.n_types}")
        for name in ("pair_cutoff", "leg_cutoff", "jk_cutoff", "pair_r_min", "leg_r_min", "jk_r_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value):
                raise ValueError(f"UF3Spec.{name} must be a finite number (nm), got {value!r}")
            object.__setattr__(self, name, float(value))
        for axis in ("pair", "leg", "jk"):
            r_min, cutoff = getattr(self, f"{axis}_r_min"), getattr(self, f"{axis}_cutoff")
            if r_min < 0.0:
                raise ValueError(f"UF3Spec.{axis}_r_min must be >= 0 nm, got {r_min}")
            if not cutoff > r_min:
                raise ValueError(f"UF3Spec.{axis}_cutoff={cutoff} must exceed {axis}_r_min={r_min} "
                                 f"(the knots must increase)")
            spacing = getattr(self, f"{axis}_axis").spacing
            if not spacing > 0.0 or not r_min + spacing > r_min:
                raise ValueError(f"UF3Spec.n_{axis}={getattr(self, f'n_{axis}')} gives non-increasing knots "
                                 f"on [{r_min}, {cutoff}] nm")
        if abs(self.jk_cutoff - 2.0 * self.leg_cutoff) > 1e-12 * self.leg_cutoff:
            raise ValueError(f"UF3Spec.jk_cutoff={self.jk_cutoff} must be 2 x leg_cutoff = {2.0 * self.leg_cutoff} "
                             f"(LAMMPS pair_style uf3 requires r_jk cut-off = 2 x leg cut-off)")
        object.__setattr__(self, "jk_cutoff", 2.0 * self.leg_cutoff)

    @property
    def pair_axis(self):
        return SplineAxis(self.pair_r_min, self.pair_cutoff, self.n_pair)

    @property
    def leg_axis(self):
        return SplineAxis(self.leg_r_min, self.leg_cutoff, self.n_leg)

    @property
    def jk_axis(self):
        return SplineAxis(self.jk_r_min, self.jk_cutoff, self.n_jk)

    @property
    def neighbor_cutoff(self):
        """The cut-off a neighbour list must cover: max(pair_cutoff, leg_cutoff) (nm)."""
        return max(self.pair_cutoff, self.leg_cutoff)

    @property
    def n_pair_free(self):
        """Free two-body coefficients: n_pair (the trailing three are zero)."""
        return self.n_pair

    @property
    def n_triplet_free(self):
        """Free three-body coefficients: n_leg (n_leg + 1) / 2 * n_jk (l <= m, trailing zeros removed)."""
        return self.n_leg * (self.n_leg + 1) // 2 * self.n_jk

    @property
    def n_free(self):
        """Length of theta."""
        return self.n_pair_free + self.n_triplet_free

    def triplet_free_index(self):
        """(l, m, n) int arrays (n_triplet_free,) of the free three-body coefficients, l <= m, in theta order."""
        return _triplet_free_index(self.n_leg, self.n_jk)

    def unpack(self, theta):
        """theta (n_free,) -> (a (n_pair + 3,), c (n_leg + 3, n_leg + 3, n_jk + 3)) in kJ/mol.

        c[l, m, n] = c[m, l, n]; the last three coefficients of every axis are zero.
        Works on numpy and JAX arrays (differentiable in theta).
        """
        xp = jnp if isinstance(theta, jax.Array) else np
        if theta.shape != (self.n_free,):
            raise ValueError(f"theta must have shape ({self.n_free},) for {self}, got {theta.shape}")
        a = xp.concatenate([theta[:self.n_pair], xp.zeros(3, theta.dtype)])
        l, m, n = self.triplet_free_index()
        values = theta[self.n_pair:]
        shape = (self.n_leg + 3, self.n_leg + 3, self.n_jk + 3)
        if xp is jnp:
            c = jnp.zeros(shape, theta.dtype).at[l, m, n].set(values).at[m, l, n].set(values)
        else:
            c = np.zeros(shape, theta.dtype)
            c[l, m, n] = values
            c[m, l, n] = values
        return a, c


@functools.lru_cache(maxsize=None)
def _triplet_free_index(n_leg, n_jk):
    l, m = np.triu_indices(n_leg)
    index = tuple(np.ascontiguousarray(np.repeat(x, n_jk)) for x in (l, m)) + (np.tile(np.arange(n_jk), len(l)),)
    for x in index:
        x.setflags(write=False)
    return index


WATER_SPEC = UF3Spec(pair_cutoff=0.6, leg_cutoff=0.37, n_pair=6, n_leg=6, n_jk=12)
"""The coarse-grained water start: pair cut-off 0.6 nm, legs 0.37 nm, r_jk 0.74 nm, 6/6/12 intervals."""


def local_basis(r, axis):
    """The four non-zero cubic B-splines of ``axis`` at distances r (any shape, nm).

    Returns (k, values): k the interval index (int32, r's shape, clipped to 0..n-1; outside
    [r_min, cutoff] the end interval's polynomial is extrapolated) and values a tuple of four
    arrays, B_{k}(r) .. B_{k+3}(r) (Cox-de Boor triangle on the knot vector).
    """
    n = axis.n_intervals
    t = jnp.asarray(axis.knots, r.dtype)
    k = jnp.clip(jnp.floor((r - axis.r_min) / axis.spacing), 0, n - 1).astype(jnp.int32)
    span = k + 3
    left1, left2, left3 = r - t[span], r - t[span - 1], r - t[span - 2]
    right1, right2, right3 = t[span + 1] - r, t[span + 2] - r, t[span + 3] - r
    temp = 1.0 / (right1 + left1)                       # degree 1
    n0, n1 = right1 * temp, left1 * temp
    temp = n0 / (right1 + left2)                        # degree 2
    m0, saved = right1 * temp, left2 * temp
    temp = n1 / (right2 + left1)
    m1, m2 = saved + right2 * temp, left1 * temp
    temp = m0 / (right1 + left3)                        # degree 3
    p0, saved = right1 * temp, left3 * temp
    temp = m1 / (right2 + left2)
    p1, saved = saved + right2 * temp, left2 * temp
    temp = m2 / (right3 + left1)
    p2, p3 = saved + right3 * temp, left1 * temp
    return k, (p0, p1, p2, p3)


def dense_basis(r, axis):
    """All n_basis B-splines of ``axis`` at r: array r.shape + (n_basis,) (mostly zeros)."""
    k, values = local_basis(r, axis)
    return sum(v[..., None] * jax.nn.one_hot(k + j, axis.n_basis, dtype=r.dtype) for j, v in enumerate(values))


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class UF3Model:
    """The UF3 energy of a spec and its linear form (static under jax.jit).

    leg_capacity: how many legs (neighbours closer than the leg cut-off) per centre atom the
    triplet arrays hold (the O(N leg_capacity^2) part); None uses the whole neighbour row.
    A state with more legs at some atom gives NaN (energy and features), never a silent loss.
    """
    spec: UF3Spec
    leg_capacity: Optional[int] = None

    def __post_init__(self):
        if self.leg_capacity is not None and (not isinstance(self.leg_capacity, (int, np.integer))
                                              or self.leg_capacity < 2):
            raise ValueError(f"UF3Model.leg_capacity must be an integer >= 2 or None, got {self.leg_capacity!r}")

    def _geometry(self, state, dtype):
        """Per-centre pair distances and triplet distances with their masks (safe values where masked)."""
        spec = self.spec
        if state.neighbors is None:
            raise ValueError("UF3Model needs state.neighbors (full dense list covering "
                             f"{spec.neighbor_cutoff} nm)")
        positions = jnp.asarray(state.positions, dtype)
        box = jnp.asarray(state.box, dtype)
        deformation = None if state.deformation is None else jnp.asarray(state.deformation, dtype)
        dr, r, mask = neighbor_distances(positions, box, state.neighbors, spec.neighbor_cutoff, deformation)
        pair_mask = mask & (r < spec.pair_cutoff)
        r_pair = jnp.where(pair_mask, r, 0.5 * (spec.pair_r_min + spec.pair_cutoff))
        leg_mask = mask & (r < spec.leg_cutoff) & (r >= spec.leg_r_min)
        overflow = jnp.asarray(False)
        capacity = dr.shape[1]
        if self.leg_capacity is not None and self.leg_capacity < capacity:
            order = jnp.argsort(~leg_mask, axis=1, stable=True)[:, :self.leg_capacity]
            overflow = jnp.any(jnp.sum(leg_mask, axis=1) > self.leg_capacity)
            dr = jnp.take_along_axis(dr, order[..., None], axis=1)
            r = jnp.take_along_axis(r, order, axis=1)
            leg_mask = jnp.take_along_axis(leg_mask, order, axis=1)
            capacity = self.leg_capacity
        r_leg = jnp.where(leg_mask, r, 0.5 * (spec.leg_r_min + spec.leg_cutoff))
        distinct = ~jnp.eye(capacity, dtype=bool)
        triplet_mask = leg_mask[:, :, None] & leg_mask[:, None, :] & distinct
        d_jk = dr[:, :, None, :] - dr[:, None, :, :]                  # r_k - r_j for legs j = a, k = b
        r_jk = jnp.sqrt(jnp.where(triplet_mask, jnp.sum(d_jk * d_jk, axis=-1), 1.0))
        triplet_mask = triplet_mask & (r_jk < spec.jk_cutoff) & (r_jk >= spec.jk_r_min)
        r_jk = jnp.where(triplet_mask, r_jk, 0.5 * (spec.jk_r_min + spec.jk_cutoff))
        return r_pair, pair_mask, r_leg, leg_mask, r_jk, triplet_mask, overflow

    def _basis_sums(self, state, dtype):
        """Phi2 (n_pair + 3,) and Phi3 (n_leg + 3, n_leg + 3, n_jk + 3): U = a . Phi2 + c : Phi3 for
        symmetric c (Phi3 = 1/2 sum_i sum_{j != k} B_l(r_ij) B_m(r_ik) B_n(r_jk)); NaN on leg overflow."""
        spec = self.spec
        r_pair, pair_mask, r_leg, leg_mask, r_jk, triplet_mask, overflow = self._geometry(state, dtype)
        b_pair = dense_basis(r_pair, spec.pair_axis) * pair_mask[..., None]
        phi2 = 0.5 * jnp.sum(b_pair, axis=(0, 1))
        b_leg = dense_basis(r_leg, spec.leg_axis) * leg_mask[..., None]
        b_jk = dense_basis(r_jk, spec.jk_axis) * triplet_mask[..., None]
        phi3 = 0.5 * jnp.einsum("ial,ibm,iabn->lmn", b_leg, b_leg, b_jk)
        nan_if_overflow = jnp.where(overflow, jnp.nan, 0.0).astype(dtype)
        return phi2 + nan_if_overflow, phi3 + nan_if_overflow

    def energy(self, theta, state):
        """U(theta, state) in kJ/mol (the model contract energy(params, state)); theta (n_free,)."""
        dtype = params_dtype(theta)
        spec = self.spec
        a, c = spec.unpack(jnp.asarray(theta))
        r_pair, pair_mask, r_leg, leg_mask, r_jk, triplet_mask, overflow = self._geometry(state, dtype)
        pair_energy = 0.5 * jnp.sum(jnp.where(pair_mask, dense_basis(r_pair, spec.pair_axis) @ a, 0.0))
        b_leg = dense_basis(r_leg, spec.leg_axis) * leg_mask[..., None]
        b_jk = dense_basis(r_jk, spec.jk_axis) * triplet_mask[..., None]
        triplet_energy = 0.5 * jnp.einsum("ial,ibm,iabn,lmn->", b_leg, b_leg, b_jk, c)
        return jnp.where(overflow, jnp.nan, pair_energy + triplet_energy)

    def features(self, state, dtype=None):
        """Phi (n_free,) with U = theta . Phi (kJ/mol per unit coefficient); dtype defaults to the positions'."""
        dtype = jnp.result_type(state.positions) if dtype is None else dtype
        spec = self.spec
        phi2, phi3 = self._basis_sums(state, dtype)
        l, m, n = spec.triplet_free_index()
        folded = phi3[l, m, n] + jnp.where(jnp.asarray(l != m), phi3[m, l, n], 0.0)
        return jnp.concatenate([phi2[:spec.n_pair], folded])

    def virial_features(self, state, dtype=None):
        """(n_free, 3, 3): W_ab = theta . V[:, a, b] = -dU/d eps_ab under x -> (I + eps) x (kJ/mol)."""
        dim = state.positions.shape[-1]
        dtype = jnp.result_type(state.positions) if dtype is None else dtype
        strained = lambda eps: self.features(deformed(state, jnp.eye(dim, dtype=dtype) + eps), dtype)
        return -jax.jacfwd(strained)(jnp.zeros((dim, dim), dtype))

    def born_features(self, state, dtype=None):
        """(n_free, 3, 3, 3, 3): theta . B = d^2U / d eta_ab d eta_cd at eta = 0, eta the symmetric
        Green-Lagrange strain (kJ/mol; divide by the volume for the Born stiffness)."""
        dim = state.positions.shape[-1]
        dtype = jnp.result_type(state.positions) if dtype is None else dtype
        strained = lambda eps: self.features(deformed(state, strain_deformation(eps)), dtype)
        return jax.jacfwd(jax.jacfwd(strained))(jnp.zeros((dim, dim), dtype))


def smoothness_penalty(spec, pair=1.0, leg=1.0, jk=1.0):
    """A roughness penalty of theta for ``difftre.optim.add_penalty_gradient``: weighted sums of squared
    second differences of the coefficients along each axis (the P-spline penalty of
    ``models.spline.roughness``, per axis of the UF3 form):

        pair * sum_n (D2 a)_n^2 + leg * [sum (D2_l c)^2 + sum (D2_m c)^2] + jk * sum (D2_n c)^2

    on the full arrays of ``UF3Spec.unpack`` (kJ^2/mol^2): a (n_pair + 3,) and c
    (n_leg + 3, n_leg + 3, n_jk + 3), both symmetric halves of c and the fixed trailing zeros
    included (so the last free coefficients are tied to the zeros at the cut-off). The l and m axes
    share the weight ``leg`` (c is symmetric, their sums are equal). Coefficients the data barely
    touch are pulled towards their neighbours; a weight of 0 switches an axis off.
    """
    for name, value in (("pair", pair), ("leg", leg), ("jk", jk)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not value >= 0 or not math.isfinite(value):
            raise ValueError(f"smoothness_penalty: weight {name} must be a finite number >= 0, got {value!r}")

    def second(x, axis):
        n = x.shape[axis]
        take = lambda a, b: jax.lax.slice_in_dim(x, a, b, axis=axis)
        return take(2, n) - 2.0 * take(1, n - 1) + take(0, n - 2)

    def penalty(theta):
        a, c = spec.unpack(jnp.asarray(theta))
        total = pair * jnp.sum(second(a, 0) ** 2)
        total += leg * (jnp.sum(second(c, 0) ** 2) + jnp.sum(second(c, 1) ** 2))
        return total + jk * jnp.sum(second(c, 2) ** 2)
    return penalty
