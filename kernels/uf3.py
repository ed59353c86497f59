"""UF3 spline potential (Numba, 3-D): two-body plus three-body cubic B-splines.

    U = sum_{i<j} sum_n a_n B_n(r_ij) + sum_i sum_{j<k} sum_{lmn} c_lmn B_l(r_ij) B_m(r_ik) B_n(r_jk)

(kJ/mol, nm; the JAX twin is difftre.models.uf3, the knot convention that of UF3 and
LAMMPS pair_style uf3: an axis with n intervals on [r_min, cutoff] has the knots
r_min x4, r_min + k h (k = 1..n-1), cutoff x4, h = (cutoff - r_min) / n, and n + 3 basis
functions; below r_min the first interval's polynomial is extrapolated for the pair term,
triplets with a distance below its axis' r_min are left out.)

System-term signature: ``fn(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy``
with a full neighbour list covering max(pair cut-off, leg cut-off); the function adds its
forces and its virial W_ab = sum over bond vectors d of (-dU/dd_a) d_b (docs/DESIGN.md).

Packed parameters (one flat float array, ``pack_params``):
  [0] n_types (1), [1..3] pair r_min, cut-off, n intervals, [4..6] leg r_min, cut-off,
  n intervals, [7..9] r_jk r_min, cut-off, n intervals, [10] offset of a, [11] offset of c,
  [12..14] offsets of the pair, leg and r_jk power tables, then a (n_pair + 3,) and
  c (n_leg + 3, n_leg + 3, n_jk + 3) in C order, full (c[l, m, n] = c[m, l, n] stored twice,
  trailing coefficients stored as zeros): the kernel reads the 4 x 4 x 4 coefficients of a
  triplet's intervals without re-expanding any symmetry; then the three axes' power tables
  (`polynomial_table`, (n, 4, 4) each, C order), so that no kernel builds them per call. More
  particle types will append one a block per type pair and one c block per type triplet.

The physics is written once (`uf3_constants`, `uf3_basis`, `uf3_two_body`, `uf3_three_body`) and
evaluated two ways, as Stillinger-Weber's (difftre.kernels.manybody): `uf3`, the CPU kernel, scatters
over centre atoms; `uf3_on_atom` gathers the force on one atom, what a GPU thread computes (the CUDA
engine compiles it through `difftre.kernels.cuda.port`, with `SCALAR_TWINS` for the vector intrinsics).

The linear form U = theta . phi (the trajectory features of difftre.uf3), per full coefficient:
`uf3_basis_sums` (phi and its isotropic-strain derivative) and `uf3_strain_sums` (its strain gradient,
the virial features, and Hessian, the Born features), each with a kernel over the frames of a trajectory.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from difftre.kernels.jit import kernel
from difftre.kernels.manybody import (bond_buffers, FASTMATH, add_outer, add_strain_outer, add_virial, collect_bonds,
                                      full_neighbor_list, on_atom_chunks, scatter_bond_gradients, strain_geometry,
                                      voigt_products)
from difftre.kernels.space import displacement

# ---- 4-wide vector helpers (a triplet's coefficient block is 4 x 4 rows of 4 contiguous doubles along
# r_jk). Numba leaves LLVM's SLP vectoriser off, so these emit <4 x double> operations directly; a
# value is a 4-tuple of float64 between them (LLVM folds the tuple packing away).
_V4 = types.UniTuple(types.float64, 4)
_VT = ir.VectorType(ir.DoubleType(), 4)
_FLAGS = ("contract", "reassoc", "nsz", "arcp")   # as FASTMATH: never nnan / ninf


def _lane(n):
    return ir.Constant(ir.IntType(32), n)


def _vector(builder, value):
    v = ir.Constant(_VT, ir.Undefined)
    for n in range(4):
        v = builder.insert_element(v, builder.extract_value(value, n), _lane(n))
    return v


def _tuple(context, builder, v):
    value = cgutils.get_null_value(context.get_value_type(_V4))
    for n in range(4):
        value = builder.insert_value(value, builder.extract_element(v, _lane(n)), n)
    return value


def _splat(builder, s):
    v = builder.insert_element(ir.Constant(_VT, ir.Undefined), s, _lane(0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), 4), [0, 0, 0, 0]))


@intrinsic
def _load4(typingctx, array, offset):
    """(array[offset], .., array[offset + 3]) as float64 (a float32 array is widened)."""
    if not isinstance(array, types.Array) or array.dtype not in (types.float64, types.float32):
        return None

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        data = context.make_array(arrty)(context, builder, args[0]).data
        element = context.get_value_type(arrty.dtype)
        pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.VectorType(element, 4).as_pointer())
        v = builder.load(pointer, align=4 if arrty.dtype == types.float32 else 8)
        if arrty.dtype == types.float32:
            v = builder.fpext(v, _VT)
        return _tuple(context, builder, v)
    return _V4(array, types.intp), codegen


@intrinsic
def _axpy4(typingctx, acc, s, x):
    """acc + s x (4-tuples, s a float64)."""
    def codegen(context, builder, signature, args):
        acc, s, x = args
        product = builder.fmul(_splat(builder, s), _vector(builder, x), flags=_FLAGS)
        return _tuple(context, builder, builder.fadd(_vector(builder, acc), product, flags=_FLAGS))
    return _V4(_V4, types.float64, _V4), codegen


@intrinsic
def _scale4(typingctx, s, x):
    """s x (a 4-tuple times a float64)."""
    def codegen(context, builder, signature, args):
        return _tuple(context, builder, builder.fmul(_splat(builder, args[0]), _vector(builder, args[1]),
                                                     flags=_FLAGS))
    return _V4(types.float64, _V4), codegen


@kernel(inline="always")
def _dot4(x, y):
    """x . y of two 4-tuples."""
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3]


@kernel(inline="always")
def _load4_scalar(array, offset):
    """`_load4` in plain arithmetic, in the array's precision."""
    return array[offset], array[offset + 1], array[offset + 2], array[offset + 3]


@kernel(inline="always")
def _axpy4_scalar(acc, s, x):
    """`_axpy4` in plain arithmetic."""
    return acc[0] + s * x[0], acc[1] + s * x[1], acc[2] + s * x[2], acc[3] + s * x[3]


@kernel(inline="always")
def _scale4_scalar(s, x):
    """`_scale4` in plain arithmetic."""
    return s * x[0], s * x[1], s * x[2], s * x[3]


SCALAR_TWINS = {"_load4": _load4_scalar, "_axpy4": _axpy4_scalar, "_scale4": _scale4_scalar}
"""The vector intrinsics in plain arithmetic: difftre.kernels.cuda.port substitutes them when it compiles
this module's functions for the GPU (an intrinsic runs neither in the CUDA simulator nor on the GPU)."""

HEADER_SIZE = 15


def pack_params(pair_axis, leg_axis, jk_axis, a, c, dtype=np.float64):
    """The flat parameter array of the kernel (layout in the module docstring).

    Args:
      pair_axis, leg_axis, jk_axis: (r_min, cutoff, n_intervals) of each spline axis (nm).
      a: (n_pair + 3,) two-body coefficients (kJ/mol), the last three zero.
      c: (n_leg + 3, n_leg + 3, n_jk + 3) three-body coefficients (kJ/mol), symmetric in the
        first two indices, the last three along each axis zero.
    """
    axes = [(float(r_min), float(cutoff), int(n)) for r_min, cutoff, n in (pair_axis, leg_axis, jk_axis)]
    for name, (r_min, cutoff, n) in zip(("pair", "leg", "jk"), axes):
        if n < 1 or not cutoff > r_min >= 0.0:
            raise ValueError(f"UF3 {name} axis needs n_intervals >= 1 and cutoff > r_min >= 0, "
                             f"got r_min={r_min}, cutoff={cutoff}, n_intervals={n}")
    (_, _, n_pair), (_, leg_cutoff, n_leg), (_, jk_cutoff, n_jk) = axes
    a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
    if a.shape != (n_pair + 3,) or c.shape != (n_leg + 3, n_leg + 3, n_jk + 3):
        raise ValueError(f"UF3 coefficients need shapes {(n_pair + 3,)} and {(n_leg + 3, n_leg + 3, n_jk + 3)}, "
                         f"got {a.shape} and {c.shape}")
    if np.any(a[-3:] != 0) or np.any(c[-3:] != 0) or np.any(c[:, -3:] != 0) or np.any(c[:, :, -3:] != 0):
        raise ValueError("UF3 coefficients: the last three along every axis must be zero (trailing trim 3)")
    if not np.array_equal(c, c.transpose(1, 0, 2)):
        raise ValueError("UF3 three-body coefficients must be symmetric in the two legs: c[l, m, n] == c[m, l, n]")
    if jk_cutoff != 2.0 * leg_cutoff:
        raise ValueError(f"UF3 r_jk cut-off {jk_cutoff} must be 2 x leg cut-off {leg_cutoff}")
    tables = [polynomial_table(*axis).ravel() for axis in axes]
    offsets = np.cumsum([HEADER_SIZE, a.size, c.size] + [t.size for t in tables[:-1]])
    header = [1.0] + [x for axis in axes for x in axis] + [float(o) for o in offsets]
    return np.concatenate([header, a, c.ravel(), *tables]).astype(dtype)


def neighbor_cutoff(params):
    """max(pair cut-off, leg cut-off) of packed parameters (nm)."""
    return float(max(params[2], params[5]))


@kernel(inline="always")
def _knot(m, r_min, h, n, cutoff):
    """Knot m of the vector r_min x4, r_min + q h (q = 1..n-1), cutoff x4."""
    q = m - 3
    if q <= 0:
        return r_min
    if q >= n:
        return cutoff
    return r_min + q * h


@kernel
def _basis_on(r, k, r_min, h, n, cutoff):
    """The four cubic B-splines B_k..B_{k+3} of interval k at r (Cox-de Boor on span k + 3)."""
    s = k + 3
    left1 = r - _knot(s, r_min, h, n, cutoff)
    left2 = r - _knot(s - 1, r_min, h, n, cutoff)
    left3 = r - _knot(s - 2, r_min, h, n, cutoff)
    right1 = _knot(s + 1, r_min, h, n, cutoff) - r
    right2 = _knot(s + 2, r_min, h, n, cutoff) - r
    right3 = _knot(s + 3, r_min, h, n, cutoff) - r
    temp = 1.0 / (right1 + left1)
    n0 = right1 * temp
    n1 = left1 * temp
    temp = n0 / (right1 + left2)
    m0 = right1 * temp
    saved = left2 * temp
    temp = n1 / (right2 + left1)
    m1 = saved + right2 * temp
    m2 = left1 * temp
    q0 = m0 / (right1 + left3)
    saved = left3 * q0
    q1 = m1 / (right2 + left2)
    p1 = saved + right2 * q1
    saved = left2 * q1
    q2 = m2 / (right3 + left1)
    return right1 * q0, p1, saved + right3 * q2, left1 * q2


@kernel
def polynomial_table(r_min, cutoff, n):
    """(n, 4, 4) float64: row [k, j] holds the power coefficients in u = (r - r_min) / h - k of
    B_{k+j} on interval k (h = (cutoff - r_min) / n), from the Cox-de Boor values at u = 0, 1/3,
    2/3, 1 (a cubic is fixed by four values; Newton's forward differences)."""
    h = (cutoff - r_min) / n
    table = np.empty((n, 4, 4))
    for k in range(n):
        y = np.empty((4, 4))
        for p in range(4):
            y[p, 0], y[p, 1], y[p, 2], y[p, 3] = _basis_on(r_min + (k + p / 3.0) * h, k, r_min, h, n, cutoff)
        for j in range(4):
            y0, y1, y2, y3 = y[0, j], y[1, j], y[2, j], y[3, j]
            d1 = y1 - y0
            d2 = y2 - 2.0 * y1 + y0
            d3 = y3 - 3.0 * y2 + 3.0 * y1 - y0
            table[k, j, 0] = y0
            table[k, j, 1] = 3.0 * (d1 - 0.5 * d2 + d3 / 3.0)
            table[k, j, 2] = 9.0 * (0.5 * d2 - 0.5 * d3)
            table[k, j, 3] = 4.5 * d3
    return table


@kernel(inline="always")
def _leg_row(params, o, stride_m, b0, b1, b2, b3, d0, d1, d2, d3):
    """v_n = sum_m b_m c[o + m stride_m + n] and w_n = sum_m d_m c[...] for n = 0..3 (the second leg's
    basis values b and derivatives d contracted with one l-row of a triplet's 4 x 4 x 4 block)."""
    c = _load4(params, o)
    v = _scale4(b0, c)
    w = _scale4(d0, c)
    c = _load4(params, o + stride_m)
    v = _axpy4(v, b1, c)
    w = _axpy4(w, d1, c)
    c = _load4(params, o + 2 * stride_m)
    v = _axpy4(v, b2, c)
    w = _axpy4(w, d2, c)
    c = _load4(params, o + 3 * stride_m)
    v = _axpy4(v, b3, c)
    w = _axpy4(w, d3, c)
    return v, w


# ---------------------------------------------------------------------------- the physics, once
# The CPU kernel (`uf3`, a scatter over centre atoms) and the CUDA engine (`uf3_on_atom`, a gather per
# atom, ported by difftre.kernels.cuda.port) both evaluate UF3 through these four functions.

@kernel(inline="always")
def uf3_constants(params):
    """What the UF3 terms read, from packed params, once per call: per axis (pair, leg, r_jk) the tuple
    (r_min (nm), cut-off (nm), 1 / h (1/nm), n intervals, offset of its power table), then the
    offsets of a and c and the strides of c along l and m."""
    n_pair, n_leg, n_jk = int(params[3]), int(params[6]), int(params[9])
    pair = (params[1], params[2], params[3] / (params[2] - params[1]), n_pair, int(params[12]))
    leg = (params[4], params[5], params[6] / (params[5] - params[4]), n_leg, int(params[13]))
    jk = (params[7], params[8], params[9] / (params[8] - params[7]), n_jk, int(params[14]))
    return pair, leg, jk, int(params[10]), int(params[11]), (n_leg + 3) * (n_jk + 3), n_jk + 3


@kernel(inline="always")
def _interval(r, axis):
    """(k, u): the interval of distance r (nm) on `axis` (from uf3_constants), clipped to 0..n-1 (the end
    polynomials are extrapolated; NaN: 0), and u = (r - r_min) / h - k."""
    r_min, cutoff, inv_h, n, table = axis
    x = (r - r_min) * inv_h
    k = int(np.floor(x)) if x == x else 0
    if k < 0:
        k = 0
    if k > n - 1:
        k = n - 1
    return k, x - k


@kernel(inline="always")
def uf3_basis(r, params, axis):
    """(k, (B_k, .., B_{k+3}, B'_k, .., B'_{k+3})) at distance r (nm) on `axis` (from uf3_constants):
    interval k (clipped to 0..n-1: the end polynomials are extrapolated), the four non-zero
    B-splines and their r-derivatives (1/nm), by Horner from the axis' power table in params."""
    r_min, cutoff, inv_h, n, table = axis
    k, u = _interval(r, axis)
    t = table + 16 * k     # rows of B_k..B_{k+3}: power coefficients in u (4 contiguous numbers each)
    c0 = _load4(params, t)
    c1 = _load4(params, t + 4)
    c2 = _load4(params, t + 8)
    c3 = _load4(params, t + 12)
    p0 = c0[0] + u * (c0[1] + u * (c0[2] + u * c0[3]))
    p1 = c1[0] + u * (c1[1] + u * (c1[2] + u * c1[3]))
    p2 = c2[0] + u * (c2[1] + u * (c2[2] + u * c2[3]))
    p3 = c3[0] + u * (c3[1] + u * (c3[2] + u * c3[3]))
    d0 = (c0[1] + u * (2.0 * c0[2] + 3.0 * u * c0[3])) * inv_h
    d1 = (c1[1] + u * (2.0 * c1[2] + 3.0 * u * c1[3])) * inv_h
    d2 = (c2[1] + u * (2.0 * c2[2] + 3.0 * u * c2[3])) * inv_h
    d3 = (c3[1] + u * (2.0 * c3[2] + 3.0 * u * c3[3])) * inv_h
    return k, (p0, p1, p2, p3, d0, d1, d2, d3)


@kernel(inline="always")
def uf3_basis_curvature(r, params, axis):
    """(B''_k, .., B''_{k+3}) (1/nm^2) at distance r (nm) on `axis`, k as in `uf3_basis`."""
    inv_h = axis[2]
    k, u = _interval(r, axis)
    t = axis[4] + 16 * k
    c0 = _load4(params, t)
    c1 = _load4(params, t + 4)
    c2 = _load4(params, t + 8)
    c3 = _load4(params, t + 12)
    scale = 2.0 * inv_h * inv_h
    return ((c0[2] + 3.0 * u * c0[3]) * scale, (c1[2] + 3.0 * u * c1[3]) * scale,
            (c2[2] + 3.0 * u * c2[3]) * scale, (c3[2] + 3.0 * u * c3[3]) * scale)


@kernel(inline="always")
def uf3_two_body(r, inv_r, params, constants):
    """(u (kJ/mol), (du/dr) / r (kJ/mol/nm^2)) of the pair term at distance r < pair cut-off (nm)."""
    k, (p0, p1, p2, p3, d0, d1, d2, d3) = uf3_basis(r, params, constants[0])
    c0, c1, c2, c3 = _load4(params, constants[3] + k)
    return c0 * p0 + c1 * p1 + c2 * p2 + c3 * p3, (c0 * d0 + c1 * d1 + c2 * d2 + c3 * d3) * inv_r


@kernel(inline="always")
def uf3_three_body(params, constants, d1x, d1y, d1z, inv_r1, leg1, d2x, d2y, d2z, inv_r2, leg2):
    """u = sum_lmn c_lmn B_l(r1) B_m(r2) B_n(r_jk) of the legs d1, d2 (vectors from the centre atom,
    nm, each with 1/r and its leg basis `uf3_basis(r, params, constants[1])`), r_jk = |d2 - d1|, and
    its gradients: (u (kJ/mol), dU/dd1 (3 components), dU/dd2 (3 components), kJ/mol/nm); all zero
    when r_jk lies outside [r_jk r_min, r_jk cut-off).

    The 4 x 4 x 4 coefficient block of the three intervals is contracted l-row by l-row
    (contiguous in n, 4-wide vector operations on the CPU).
    """
    jk = constants[2]
    ux = d2x - d1x          # r_k - r_j
    uy = d2y - d1y
    uz = d2z - d1z
    r3sq = ux * ux + uy * uy + uz * uz
    if r3sq >= jk[1] * jk[1] or r3sq < jk[0] * jk[0]:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    r3 = np.sqrt(r3sq)
    k3, (q0, q1, q2, q3, dq0, dq1, dq2, dq3) = uf3_basis(r3, params, jk)
    k1, (a0, a1, a2, a3, da0, da1, da2, da3) = leg1
    k2, (b0, b1, b2, b3, db0, db1, db2, db3) = leg2
    stride_l, stride_m = constants[5], constants[6]
    o = constants[4] + k1 * stride_l + k2 * stride_m + k3
    # E_n = sum_lm a_l b_m c_lmn, D1_n = sum da_l b_m c, D2_n = sum a_l db_m c (l-row by l-row)
    v, vd = _leg_row(params, o, stride_m, b0, b1, b2, b3, db0, db1, db2, db3)
    big_e = _scale4(a0, v)
    big_d1 = _scale4(da0, v)
    big_d2 = _scale4(a0, vd)
    v, vd = _leg_row(params, o + stride_l, stride_m, b0, b1, b2, b3, db0, db1, db2, db3)
    big_e = _axpy4(big_e, a1, v)
    big_d1 = _axpy4(big_d1, da1, v)
    big_d2 = _axpy4(big_d2, a1, vd)
    v, vd = _leg_row(params, o + 2 * stride_l, stride_m, b0, b1, b2, b3, db0, db1, db2, db3)
    big_e = _axpy4(big_e, a2, v)
    big_d1 = _axpy4(big_d1, da2, v)
    big_d2 = _axpy4(big_d2, a2, vd)
    v, vd = _leg_row(params, o + 3 * stride_l, stride_m, b0, b1, b2, b3, db0, db1, db2, db3)
    big_e = _axpy4(big_e, a3, v)
    big_d1 = _axpy4(big_d1, da3, v)
    big_d2 = _axpy4(big_d2, a3, vd)
    q = (q0, q1, q2, q3)
    c1 = _dot4(big_d1, q) * inv_r1
    c2 = _dot4(big_d2, q) * inv_r2
    c3 = _dot4(big_e, (dq0, dq1, dq2, dq3)) / r3
    # dU/dd1 = c1 d1 - c3 u, dU/dd2 = c2 d2 + c3 u (u = d2 - d1)
    return (_dot4(big_e, q), c1 * d1x - c3 * ux, c1 * d1y - c3 * uy, c1 * d1z - c3 * uz,
            c2 * d2x + c3 * ux, c2 * d2y + c3 * uy, c2 * d2z + c3 * uz)


# ---------------------------------------------------------------------------- CPU: scatter over centre atoms

@kernel(fastmath=FASTMATH)
def _uf3_atoms(params, positions, box, nbr_idx, nbr_count, first, last, forces, w):
    """The UF3 terms centred on atoms first..last-1: adds forces, w[c, d] += virial; returns the energy.

    Per centre atom i: its bonds d_b = r_j - r_i inside max(pair, leg cut-off); the pair term of
    the bonds with j > i (each pair once) and the triplet terms of every pair of legs j < k (each
    triplet once) accumulate G_b = dU/dd_b (r_jk = |d_k - d_j| enters both legs' gradients); then
    `scatter_bond_gradients`: the force on j_b is -G_b, on i +sum_b G_b, and W -= G_b (x) d_b.

    Cost: the basis values and derivatives of a bond are computed once per bond (not per triplet),
    from per-interval power tables (Horner, no divisions); a triplet costs one r_jk basis and the
    4 x 4 x 4 coefficient block contracted row by row (contiguous in n, vectorised).
    """
    constants = uf3_constants(params)
    pair_cut = constants[0][1]
    leg_r_min, leg_cut = constants[1][0], constants[1][1]
    list_cut = max(pair_cut, leg_cut)
    list_cut2 = list_cut * list_cut
    lengths = (box[0], box[1], box[2])
    inverse_lengths = (1.0 / box[0], 1.0 / box[1], 1.0 / box[2])
    cap = nbr_idx.shape[1]
    dtype = np.float64   # per-bond terms and sums in double precision also for float32 positions
    bx = np.empty(cap, dtype)
    by = np.empty(cap, dtype)
    bz = np.empty(cap, dtype)
    b_r2 = np.empty(cap, dtype)
    b_j = np.empty(cap, np.int64)
    gx = np.empty(cap, dtype)
    gy = np.empty(cap, dtype)
    gz = np.empty(cap, dtype)
    leg_bond = np.empty(cap, np.int64)      # per leg: its bond, vector, 1/r, interval, 4 basis values and derivatives
    leg_vec = np.empty((cap, 3), dtype)
    leg_inv_r = np.empty(cap, dtype)
    leg_k = np.empty(cap, np.int64)
    leg_basis = np.empty((cap, 8), dtype)
    zero = 0.0
    energy = zero
    virial_sum = (zero, zero, zero, zero, zero, zero, zero, zero, zero)
    for i in range(first, last):
        nb = collect_bonds(i, positions, lengths, inverse_lengths, nbr_idx, nbr_count, list_cut2, bx, by, bz, b_r2,
                           b_j)
        e_i = zero
        n_legs = 0
        for b in range(nb):
            r = np.sqrt(b_r2[b])
            inv_r = 1.0 / r
            g = zero
            if b_j[b] > i and not r >= pair_cut:
                u2, g = uf3_two_body(r, inv_r, params, constants)
                e_i += u2
            gx[b] = g * bx[b]
            gy[b] = g * by[b]
            gz[b] = g * bz[b]
            if not r >= leg_cut and not r < leg_r_min:
                k, (p0, p1, p2, p3, d0, d1, d2, d3) = uf3_basis(r, params, constants[1])
                leg_bond[n_legs] = b
                leg_vec[n_legs, 0] = bx[b]
                leg_vec[n_legs, 1] = by[b]
                leg_vec[n_legs, 2] = bz[b]
                leg_inv_r[n_legs] = inv_r
                leg_k[n_legs] = k
                leg_basis[n_legs, 0] = p0
                leg_basis[n_legs, 1] = p1
                leg_basis[n_legs, 2] = p2
                leg_basis[n_legs, 3] = p3
                leg_basis[n_legs, 4] = d0
                leg_basis[n_legs, 5] = d1
                leg_basis[n_legs, 6] = d2
                leg_basis[n_legs, 7] = d3
                n_legs += 1
        for x1 in range(n_legs - 1):
            d1x, d1y, d1z = leg_vec[x1, 0], leg_vec[x1, 1], leg_vec[x1, 2]
            leg1 = (leg_k[x1], (leg_basis[x1, 0], leg_basis[x1, 1], leg_basis[x1, 2], leg_basis[x1, 3],
                                leg_basis[x1, 4], leg_basis[x1, 5], leg_basis[x1, 6], leg_basis[x1, 7]))
            inv_r1 = leg_inv_r[x1]
            g1x = g1y = g1z = zero
            for x2 in range(x1 + 1, n_legs):
                leg2 = (leg_k[x2], (leg_basis[x2, 0], leg_basis[x2, 1], leg_basis[x2, 2], leg_basis[x2, 3],
                                    leg_basis[x2, 4], leg_basis[x2, 5], leg_basis[x2, 6], leg_basis[x2, 7]))
                u3, h1x, h1y, h1z, h2x, h2y, h2z = uf3_three_body(params, constants, d1x, d1y, d1z, inv_r1, leg1,
                                                                  leg_vec[x2, 0], leg_vec[x2, 1], leg_vec[x2, 2],
                                                                  leg_inv_r[x2], leg2)
                e_i += u3
                g1x += h1x
                g1y += h1y
                g1z += h1z
                b = leg_bond[x2]
                gx[b] += h2x
                gy[b] += h2y
                gz[b] += h2z
            b = leg_bond[x1]
            gx[b] += g1x
            gy[b] += g1y
            gz[b] += g1z
        virial_sum = scatter_bond_gradients(i, nb, b_j, bx, by, bz, gx, gy, gz, forces, virial_sum)
        energy += e_i
    add_virial(w, virial_sum)
    return energy


@kernel(cache=False)
def uf3(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """UF3 energy (kJ/mol), adding forces (kJ/mol/nm) and virial (kJ/mol); params from `pack_params`.

    With DIFFTRE_PARALLEL=1 the atoms are split over Numba's threads (manybody.on_atom_chunks;
    cache=False as there).
    """
    return on_atom_chunks(_uf3_atoms, params, positions, box, nbr_idx, nbr_count, forces, virial)


# ---------------------------------------------------------------------------- GPU: gather per atom

@kernel
def uf3_on_atom(i, positions, box, inv_box, nbr_idx, nbr_count, params, force, virial):
    """UF3 force on atom i alone, added to force (3,) kJ/mol/nm, from the terms it belongs to (full list);
    adds its share of the virial (kJ/mol) and returns its share of the energy (kJ/mol): a triplet's
    to its centre atom, half a pair's to each atom. Summed over all atoms: `uf3`."""
    constants = uf3_constants(params)
    pair_cut = constants[0][1]
    leg_axis = constants[1]
    leg_r_min, leg_cut = leg_axis[0], leg_axis[1]
    e = fx = fy = fz = 0.0
    for jj in range(nbr_count[i]):
        j = nbr_idx[i, jj]
        dx, dy, dz, r2 = displacement(positions, i, j, box, inv_box)   # bond i -> j
        r = np.sqrt(r2)
        inv_r = 1.0 / r
        if not r >= pair_cut:
            u2, g = uf3_two_body(r, inv_r, params, constants)
            e += 0.5 * u2
            fx += g * dx
            fy += g * dy
            fz += g * dz
            add_outer(virial, -0.5 * g, dx, dy, dz, dx, dy, dz)
        if r >= leg_cut or r < leg_r_min:
            continue
        leg1 = uf3_basis(r, params, leg_axis)
        # triplets centred on i: legs (j, k), k after j in i's row
        for kk in range(jj + 1, nbr_count[i]):
            ex, ey, ez, rk2 = displacement(positions, i, nbr_idx[i, kk], box, inv_box)
            rk = np.sqrt(rk2)
            if rk >= leg_cut or rk < leg_r_min:
                continue
            u3, g1x, g1y, g1z, g2x, g2y, g2z = uf3_three_body(params, constants, dx, dy, dz, inv_r, leg1, ex, ey, ez,
                                                              1.0 / rk, uf3_basis(rk, params, leg_axis))
            e += u3
            fx += g1x + g2x
            fy += g1y + g2y
            fz += g1z + g2z
            add_outer(virial, -1.0, g1x, g1y, g1z, dx, dy, dz)
            add_outer(virial, -1.0, g2x, g2y, g2z, ex, ey, ez)
        # triplets centred on j with i as one leg (j -> i is -d): i moves leg 1
        for kk in range(nbr_count[j]):
            k = nbr_idx[j, kk]
            if k == i:
                continue
            ex, ey, ez, rk2 = displacement(positions, j, k, box, inv_box)
            rk = np.sqrt(rk2)
            if rk >= leg_cut or rk < leg_r_min:
                continue
            u3, g1x, g1y, g1z, g2x, g2y, g2z = uf3_three_body(params, constants, -dx, -dy, -dz, inv_r, leg1, ex, ey,
                                                              ez, 1.0 / rk, uf3_basis(rk, params, leg_axis))
            fx -= g1x
            fy -= g1y
            fz -= g1z
    force[0] += fx
    force[1] += fy
    force[2] += fz
    return e


# ---------------------------------------------------------------------------- the linear form: basis sums

@kernel(inline="always")
def uf3_cutoffs(constants):
    """(pair cut-off, leg r_min, leg cut-off, r_jk r_min, r_jk cut-off, neighbour-list cut-off) in nm of
    `uf3_constants`."""
    pair, leg, jk = constants[0], constants[1], constants[2]
    return pair[1], leg[0], leg[1], jk[0], jk[1], max(pair[1], leg[1])


@kernel(inline="always")
def _add_outer3(phi, strain, k1, k2, k3, a, b, c, ra, rb, rc):
    """phi[k1 + p, k2 + q, k3 + s] += a_p b_q c_s and strain[...] += ra_p b_q c_s + a_p rb_q c_s +
    a_p b_q rc_s for p, q, s = 0..3 (a, b, c the three distances' basis values, ra, rb, rc their
    r dB/dr)."""
    for p in range(4):
        for q in range(4):
            ab = a[p] * b[q]
            rab = ra[p] * b[q] + a[p] * rb[q]
            for s in range(4):
                phi[k1 + p, k2 + q, k3 + s] += ab * c[s]
                strain[k1 + p, k2 + q, k3 + s] += rab * c[s] + ab * rc[s]


@kernel(fastmath=FASTMATH)
def uf3_basis_sums(params, positions, box, nbr_idx, nbr_count, phi2, phi3, strain2, strain3):
    """Adds one state's UF3 basis sums, the features of the energy's linear form
    U = a . phi2 + sum_lmn c_lmn phi3_lmn (symmetric c folded by the caller):

      phi2[n]      += sum_{i<j} B_n(r_ij)                              (pair, r_ij < pair cut-off)
      phi3[l, m, n] += sum_i sum_{j<k} B_l(r_ij) B_m(r_ik) B_n(r_jk)    (legs j before k in i's list)

    and their derivatives under the isotropic strain x -> (1 + s) x at s = 0 (each distance
    contributes r dB/dr) into strain2 and strain3 (so tr W = -(a . strain2 + c : strain3), kJ/mol).
    Same selection of pairs and triplets as `_uf3_atoms` (the energy); params from `pack_params` (its
    coefficients are not read); a full neighbour list covering max(pair, leg cut-off)."""
    constants = uf3_constants(params)
    pair_cut, leg_r_min, leg_cut, jk_r_min, jk_cut, list_cut = uf3_cutoffs(constants)
    cap = nbr_idx.shape[1]
    lengths, inverse_lengths, bx, by, bz, b_r2, b_j = bond_buffers(box, cap)
    leg_vec = np.empty((cap, 3))
    leg_r = np.empty(cap)
    leg_k = np.empty(cap, np.int64)
    leg_basis = np.empty((cap, 4))
    leg_strain = np.empty((cap, 4))
    c = np.empty(4)
    rc = np.empty(4)
    for i in range(positions.shape[0]):
        nb = collect_bonds(i, positions, lengths, inverse_lengths, nbr_idx, nbr_count, list_cut * list_cut,
                           bx, by, bz, b_r2, b_j)
        n_legs = 0
        for b in range(nb):
            r = np.sqrt(b_r2[b])
            if b_j[b] > i and r < pair_cut:
                k, basis = uf3_basis(r, params, constants[0])
                for p in range(4):
                    phi2[k + p] += basis[p]
                    strain2[k + p] += r * basis[4 + p]
            if r < leg_cut and r >= leg_r_min:
                k, basis = uf3_basis(r, params, constants[1])
                leg_vec[n_legs, 0] = bx[b]
                leg_vec[n_legs, 1] = by[b]
                leg_vec[n_legs, 2] = bz[b]
                leg_r[n_legs] = r
                leg_k[n_legs] = k
                for p in range(4):
                    leg_basis[n_legs, p] = basis[p]
                    leg_strain[n_legs, p] = r * basis[4 + p]
                n_legs += 1
        for x1 in range(n_legs - 1):
            for x2 in range(x1 + 1, n_legs):
                ux = leg_vec[x2, 0] - leg_vec[x1, 0]
                uy = leg_vec[x2, 1] - leg_vec[x1, 1]
                uz = leg_vec[x2, 2] - leg_vec[x1, 2]
                r3 = np.sqrt(ux * ux + uy * uy + uz * uz)
                if r3 >= jk_cut or r3 < jk_r_min:
                    continue
                k3, basis = uf3_basis(r3, params, constants[2])
                for s in range(4):
                    c[s] = basis[s]
                    rc[s] = r3 * basis[4 + s]
                _add_outer3(phi3, strain3, leg_k[x1], leg_k[x2], k3, leg_basis[x1], leg_basis[x2], c,
                            leg_strain[x1], leg_strain[x2], rc)


@kernel(parallel=True)
def uf3_trajectory_basis_sums(params, frames, box, capacity, phi2, phi3, strain2, strain3):
    """`uf3_basis_sums` of every frame (S, N, 3) nm into phi2 (S, n_pair + 3), phi3 (S, ...) etc.
    (zeroed here), the frames spread over Numba's threads; each frame builds its own full neighbour
    list (`full_neighbor_list`, starting at `capacity` slots, so no pair is dropped)."""
    list_cut = max(params[2], params[5])
    for f in prange(frames.shape[0]):
        positions = np.ascontiguousarray(frames[f])
        nbr_idx, nbr_count = full_neighbor_list(positions, box, list_cut, capacity)
        phi2[f] = 0.0
        phi3[f] = 0.0
        strain2[f] = 0.0
        strain3[f] = 0.0
        uf3_basis_sums(params, positions, box, nbr_idx, nbr_count, phi2[f], phi3[f], strain2[f], strain3[f])


# ---------------------------------------------------------------------------- the linear form: strain derivatives
# The basis sums' derivatives under the strain of models.state.strain_deformation, per full coefficient:
# each distance enters through sigma = r^2 / 2, linear in the strain (difftre.kernels.manybody, "Born
# terms"), with dB/d sigma = B' / r and d^2 B / d sigma^2 = (B'' - B' / r) / r^2.

@kernel(inline="always")
def _sigma_derivatives(r, params, axis, terms):
    """terms (3, 4) = the four non-zero B-splines of `axis` at r (nm), their sigma-derivatives (1/nm^2) and
    second sigma-derivatives (1/nm^4); returns the interval k."""
    k, basis = uf3_basis(r, params, axis)
    curvature = uf3_basis_curvature(r, params, axis)
    inv_r = 1.0 / r
    for p in range(4):
        terms[0, p] = basis[p]
        terms[1, p] = basis[4 + p] * inv_r
        terms[2, p] = (curvature[p] - terms[1, p]) * inv_r * inv_r
    return k


@kernel(inline="always")
def _add_pair_strain(gradient, hessian, born, k, terms, q):
    """The strain derivatives of the pair sums B_{k+p}(r), p = 0..3: gradient[k + p] (6,) += dB/d sigma q
    and, with born, hessian[k + p] (21,) += d^2 B / d sigma^2 q q^T."""
    for p in range(4):
        for v in range(6):
            gradient[k + p, v] += terms[1, p] * q[v]
        if born:
            add_strain_outer(hessian[k + p], terms[2, p], q)


@kernel(inline="always")
def _add_triplet_strain(gradient, hessian, born, k1, k2, k3, leg1, leg2, jk, q1, q2, q3, geometry, along):
    """The strain derivatives of the triplet sums B_{k1+p}(r1) B_{k2+q}(r2) B_{k3+s}(r3), p, q, s = 0..3
    (leg1, leg2, jk: `_sigma_derivatives` of the three distances, q1, q2, q3 their Voigt products,
    geometry their `strain_geometry`): gradient[...] (6,) += sum_x d/d sigma_x q_x and, with born,
    hessian[...] (21,) += sum_xy d^2 / d sigma_x d sigma_y q_x q_y^T. Per leg pair (p, q) the rows of
    along (5, 21) first collect what multiplies B_{k3+s}, its first and its second sigma-derivative."""
    for p in range(4):
        a, ga, ha = leg1[0, p], leg1[1, p], leg1[2, p]
        for q in range(4):
            b, gb, hb = leg2[0, q], leg2[1, q], leg2[2, q]
            ab = a * b
            for v in range(6):
                along[0, v] = ga * b * q1[v] + a * gb * q2[v]
                along[1, v] = ab * q3[v]
            block = gradient[k1 + p, k2 + q]
            for s in range(4):
                c, gc = jk[0, s], jk[1, s]
                for v in range(6):
                    block[k3 + s, v] += c * along[0, v] + gc * along[1, v]
            if born:
                for k in range(21):
                    along[2, k] = ha * b * geometry[0, k] + a * hb * geometry[1, k] + ga * gb * geometry[3, k]
                    along[3, k] = ga * b * geometry[4, k] + a * gb * geometry[5, k]
                    along[4, k] = ab * geometry[2, k]
                block = hessian[k1 + p, k2 + q]
                for s in range(4):
                    c, gc, hc = jk[0, s], jk[1, s], jk[2, s]
                    for k in range(21):
                        block[k3 + s, k] += c * along[2, k] + gc * along[3, k] + hc * along[4, k]


@kernel(fastmath=FASTMATH)
def uf3_strain_sums(params, positions, box, nbr_idx, nbr_count, born, gradient2, gradient3, hessian2, hessian3):
    """Adds one state's strain derivatives of the UF3 basis sums (those of `uf3_basis_sums`, the same pairs
    and triplets) under x -> F(eps) x (models.state.strain_deformation) at eps = 0, per full coefficient:

      gradient2 (n_pair + 3, 6), gradient3 (n_leg + 3, n_leg + 3, n_jk + 3, 6): d phi / d eps over
        VOIGT_PAIRS (dimensionless, as phi; the virial features are their negatives, W = -dU/deps);
      with born, hessian2 (n_pair + 3, 21), hessian3 (..., 21): d^2 phi / d eps d eps in the upper Voigt
        order of difftre.kernels.manybody (the Born features; untouched without born).

    params from `pack_params` (its coefficients are not read); a full neighbour list covering
    max(pair, leg cut-off)."""
    constants = uf3_constants(params)
    pair_cut, leg_r_min, leg_cut, jk_r_min, jk_cut, list_cut = uf3_cutoffs(constants)
    cap = nbr_idx.shape[1]
    lengths, inverse_lengths, bx, by, bz, b_r2, b_j = bond_buffers(box, cap)
    q = np.empty(6)
    pair_terms = np.empty((3, 4))
    leg_vec = np.empty((cap, 3))
    leg_k = np.empty(cap, np.int64)
    leg_terms = np.empty((cap, 3, 4))
    leg_q = np.empty((cap, 6))
    jk = np.empty((3, 4))
    q3 = np.empty(6)
    geometry = np.empty((6, 21))
    along = np.empty((5, 21))
    for i in range(positions.shape[0]):
        nb = collect_bonds(i, positions, lengths, inverse_lengths, nbr_idx, nbr_count, list_cut * list_cut,
                           bx, by, bz, b_r2, b_j)
        n_legs = 0
        for b in range(nb):
            r = np.sqrt(b_r2[b])
            voigt_products(bx[b], by[b], bz[b], bx[b], by[b], bz[b], q)
            if b_j[b] > i and r < pair_cut:
                k = _sigma_derivatives(r, params, constants[0], pair_terms)
                _add_pair_strain(gradient2, hessian2, born, k, pair_terms, q)
            if r < leg_cut and r >= leg_r_min:
                leg_k[n_legs] = _sigma_derivatives(r, params, constants[1], leg_terms[n_legs])
                leg_vec[n_legs, 0] = bx[b]
                leg_vec[n_legs, 1] = by[b]
                leg_vec[n_legs, 2] = bz[b]
                leg_q[n_legs] = q
                n_legs += 1
        for x1 in range(n_legs - 1):
            for x2 in range(x1 + 1, n_legs):
                ux = leg_vec[x2, 0] - leg_vec[x1, 0]
                uy = leg_vec[x2, 1] - leg_vec[x1, 1]
                uz = leg_vec[x2, 2] - leg_vec[x1, 2]
                r3 = np.sqrt(ux * ux + uy * uy + uz * uz)
                if r3 >= jk_cut or r3 < jk_r_min:
                    continue
                k3 = _sigma_derivatives(r3, params, constants[2], jk)
                voigt_products(ux, uy, uz, ux, uy, uz, q3)
                if born:
                    strain_geometry(leg_q[x1], leg_q[x2], q3, geometry)
                _add_triplet_strain(gradient3, hessian3, born, leg_k[x1], leg_k[x2], k3, leg_terms[x1],
                                    leg_terms[x2], jk, leg_q[x1], leg_q[x2], q3, geometry, along)


@kernel(parallel=True)
def uf3_trajectory_strain_sums(params, frames, box, capacity, born, gradient2, gradient3, hessian2, hessian3):
    """`uf3_strain_sums` of every frame (S, N, 3) nm into gradient2 (S, n_pair + 3, 6), gradient3 (S, ..., 6)
    and, with born, hessian2 (S, n_pair + 3, 21), hessian3 (S, ..., 21) (zeroed here; without born they may
    have a last axis of 0), the frames spread over Numba's threads, each with its own full list
    (`full_neighbor_list`, `capacity` slots to start)."""
    list_cut = max(params[2], params[5])
    for f in prange(frames.shape[0]):
        positions = np.ascontiguousarray(frames[f])
        nbr_idx, nbr_count = full_neighbor_list(positions, box, list_cut, capacity)
        gradient2[f] = 0.0
        gradient3[f] = 0.0
        hessian2[f] = 0.0
        hessian3[f] = 0.0
        uf3_strain_sums(params, positions, box, nbr_idx, nbr_count, born, gradient2[f], gradient3[f], hessian2[f],
                        hessian3[f])
