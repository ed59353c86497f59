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
  then a (n_pair + 3,) and c (n_leg + 3, n_leg + 3, n_jk + 3) in C order, full (c[l, m, n] =
  c[m, l, n] stored twice, trailing coefficients stored as zeros): the kernel reads the 4 x 4 x 4
  coefficients of a triplet's intervals without re-expanding any symmetry. More particle types
  will append one a block per type pair and one c block per type triplet.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from difftre.kernels import parallel
from difftre.kernels.jit import kernel
from difftre.kernels.manybody import FASTMATH
from difftre.kernels.parallel import ENABLED as _PARALLEL
from difftre.kernels.space import minimum_image

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
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3]


HEADER_SIZE = 12


def pack_params(pair_axis, leg_axis, jk_axis, a, c, dtype=np.float64):
    """The flat parameter array of the kernel.

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
    header = [1.0] + [x for axis in axes for x in axis] + [HEADER_SIZE, HEADER_SIZE + a.size]
    return np.concatenate([header, a, c.ravel()]).astype(dtype)


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


@kernel(inline="always")
def _cubic_basis(r, r_min, h, n, cutoff):
    """Interval k and the four non-zero cubic B-splines B_k..B_{k+3} at r with their r-derivatives.

    Cox-de Boor triangle on span s = k + 3 (k clipped to 0..n-1: outside the knot range the
    end interval's polynomial is extrapolated); B'_{j} = 3 (B2_j / (t_{j+3} - t_j) - B2_{j+1} / (t_{j+4} - t_{j+1})).
    """
    k = int(np.floor((r - r_min) / h)) if r == r else 0
    if k < 0:
        k = 0
    if k > n - 1:
        k = n - 1
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
    p0 = right1 * q0
    saved = left3 * q0
    q1 = m1 / (right2 + left2)
    p1 = saved + right2 * q1
    saved = left2 * q1
    q2 = m2 / (right3 + left1)
    p2 = saved + right3 * q2
    p3 = left1 * q2
    return k, p0, p1, p2, p3, -3.0 * q0, 3.0 * (q0 - q1), 3.0 * (q1 - q2), 3.0 * q2


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
def _poly_basis(r, table, r_min, inv_h, n):
    """Interval k (clipped to 0..n-1: the end polynomials are extrapolated) and the four non-zero
    B-splines B_k..B_{k+3} at r with their r-derivatives, from the power table of `polynomial_table`."""
    x = (r - r_min) * inv_h
    k = int(np.floor(x)) if x == x else 0
    if k < 0:
        k = 0
    if k > n - 1:
        k = n - 1
    u = x - k
    t = table[k]
    p0 = t[0, 0] + u * (t[0, 1] + u * (t[0, 2] + u * t[0, 3]))
    p1 = t[1, 0] + u * (t[1, 1] + u * (t[1, 2] + u * t[1, 3]))
    p2 = t[2, 0] + u * (t[2, 1] + u * (t[2, 2] + u * t[2, 3]))
    p3 = t[3, 0] + u * (t[3, 1] + u * (t[3, 2] + u * t[3, 3]))
    d0 = (t[0, 1] + u * (2.0 * t[0, 2] + 3.0 * u * t[0, 3])) * inv_h
    d1 = (t[1, 1] + u * (2.0 * t[1, 2] + 3.0 * u * t[1, 3])) * inv_h
    d2 = (t[2, 1] + u * (2.0 * t[2, 2] + 3.0 * u * t[2, 3])) * inv_h
    d3 = (t[3, 1] + u * (2.0 * t[3, 2] + 3.0 * u * t[3, 3])) * inv_h
    return k, p0, p1, p2, p3, d0, d1, d2, d3


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


@kernel(fastmath=FASTMATH)
def _uf3_atoms(params, positions, box, nbr_idx, nbr_count, first, last, forces, w):
    """The UF3 terms centred on atoms first..last-1: adds forces, w[c, d] += virial; returns the energy.

    Per centre atom i: its bonds d_b = r_j - r_i inside max(pair, leg cut-off); the pair term of
    the bonds with j > i (each pair once) and the triplet terms of every pair of legs j < k (each
    triplet once) accumulate G_b = dU/dd_b (r_jk = |d_k - d_j| enters both legs' gradients); then
    the force on j_b is -G_b, on i +sum_b G_b, and W -= G_b (x) d_b.

    Cost: the basis values and derivatives of a bond are computed once per bond (not per triplet),
    from per-interval power tables (Horner, no divisions); a triplet costs one r_jk basis and the
    4 x 4 x 4 coefficient block contracted row by row (contiguous in n, vectorisable); a triplet
    with r_jk outside [jk r_min, jk cut-off) is skipped before any basis is evaluated.
    """
    pair_r_min, pair_cut, n_pair = params[1], params[2], int(params[3])
    leg_r_min, leg_cut, n_leg = params[4], params[5], int(params[6])
    jk_r_min, jk_cut, n_jk = params[7], params[8], int(params[9])
    a_off, c_off = int(params[10]), int(params[11])
    pair_inv_h = n_pair / (pair_cut - pair_r_min)
    leg_inv_h = n_leg / (leg_cut - leg_r_min)
    jk_inv_h = n_jk / (jk_cut - jk_r_min)
    pair_table = polynomial_table(pair_r_min, pair_cut, n_pair)
    leg_table = polynomial_table(leg_r_min, leg_cut, n_leg)
    jk_table = polynomial_table(jk_r_min, jk_cut, n_jk)
    stride_l = (n_leg + 3) * (n_jk + 3)
    stride_m = n_jk + 3
    list_cut = max(pair_cut, leg_cut)
    list_cut2 = list_cut * list_cut
    jk_cut2 = jk_cut * jk_cut
    jk_min2 = jk_r_min * jk_r_min
    lx, ly, lz = box[0], box[1], box[2]
    ix, iy, iz = 1.0 / lx, 1.0 / ly, 1.0 / lz
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
    w_xx = w_xy = w_xz = w_yx = w_yy = w_yz = w_zx = w_zy = w_zz = zero
    for i in range(first, last):
        xi, yi, zi = positions[i, 0], positions[i, 1], positions[i, 2]
        nb = 0
        for jj in range(nbr_count[i]):
            j = nbr_idx[i, jj]
            dx = minimum_image(positions[j, 0] - xi, lx, ix)
            dy = minimum_image(positions[j, 1] - yi, ly, iy)
            dz = minimum_image(positions[j, 2] - zi, lz, iz)
            r2 = dx * dx + dy * dy + dz * dz
            bx[nb] = dx
            by[nb] = dy
            bz[nb] = dz
            b_r2[nb] = r2
            b_j[nb] = j
            nb += not r2 >= list_cut2      # a NaN distance stays in (and shows up in the energy)
        e_i = zero
        n_legs = 0
        for b in range(nb):
            r = np.sqrt(b_r2[b])
            inv_r = 1.0 / r
            g = zero
            if b_j[b] > i and not r >= pair_cut:
                k, p0, p1, p2, p3, d0, d1, d2, d3 = _poly_basis(r, pair_table, pair_r_min, pair_inv_h, n_pair)
                o = a_off + k
                c0, c1, c2, c3 = params[o], params[o + 1], params[o + 2], params[o + 3]
                e_i += c0 * p0 + c1 * p1 + c2 * p2 + c3 * p3
                g = (c0 * d0 + c1 * d1 + c2 * d2 + c3 * d3) * inv_r
            gx[b] = g * bx[b]
            gy[b] = g * by[b]
            gz[b] = g * bz[b]
            if not r >= leg_cut and not r < leg_r_min:
                k, p0, p1, p2, p3, d0, d1, d2, d3 = _poly_basis(r, leg_table, leg_r_min, leg_inv_h, n_leg)
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
            o1 = c_off + leg_k[x1] * stride_l
            a0, a1, a2, a3 = leg_basis[x1, 0], leg_basis[x1, 1], leg_basis[x1, 2], leg_basis[x1, 3]
            da0, da1, da2, da3 = leg_basis[x1, 4], leg_basis[x1, 5], leg_basis[x1, 6], leg_basis[x1, 7]
            inv_r1 = leg_inv_r[x1]
            g1x = g1y = g1z = zero
            for x2 in range(x1 + 1, n_legs):
                d2x, d2y, d2z = leg_vec[x2, 0], leg_vec[x2, 1], leg_vec[x2, 2]
                ux = d2x - d1x          # r_k - r_j
                uy = d2y - d1y
                uz = d2z - d1z
                r3sq = ux * ux + uy * uy + uz * uz
                if r3sq >= jk_cut2 or r3sq < jk_min2:
                    continue
                r3 = np.sqrt(r3sq)
                k3, q0, q1, q2, q3, dq0, dq1, dq2, dq3 = _poly_basis(r3, jk_table, jk_r_min, jk_inv_h, n_jk)
                b0, b1, b2, b3 = leg_basis[x2, 0], leg_basis[x2, 1], leg_basis[x2, 2], leg_basis[x2, 3]
                db0, db1, db2, db3 = leg_basis[x2, 4], leg_basis[x2, 5], leg_basis[x2, 6], leg_basis[x2, 7]
                o = o1 + leg_k[x2] * stride_m + k3
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
                e_i += _dot4(big_e, q)
                c1 = _dot4(big_d1, q) * inv_r1
                c2 = _dot4(big_d2, q) * leg_inv_r[x2]
                c3 = _dot4(big_e, (dq0, dq1, dq2, dq3)) / r3
                # dU/dd1 = c1 d1 - c3 u, dU/dd2 = c2 d2 + c3 u (u = d2 - d1)
                g1x += c1 * d1x - c3 * ux
                g1y += c1 * d1y - c3 * uy
                g1z += c1 * d1z - c3 * uz
                b = leg_bond[x2]
                gx[b] += c2 * d2x + c3 * ux
                gy[b] += c2 * d2y + c3 * uy
                gz[b] += c2 * d2z + c3 * uz
            b = leg_bond[x1]
            gx[b] += g1x
            gy[b] += g1y
            gz[b] += g1z
        fxi = fyi = fzi = zero
        for b in range(nb):
            j = b_j[b]
            g_x, g_y, g_z = gx[b], gy[b], gz[b]
            d_x, d_y, d_z = bx[b], by[b], bz[b]
            forces[j, 0] -= g_x
            forces[j, 1] -= g_y
            forces[j, 2] -= g_z
            fxi += g_x
            fyi += g_y
            fzi += g_z
            w_xx -= g_x * d_x
            w_xy -= g_x * d_y
            w_xz -= g_x * d_z
            w_yx -= g_y * d_x
            w_yy -= g_y * d_y
            w_yz -= g_y * d_z
            w_zx -= g_z * d_x
            w_zy -= g_z * d_y
            w_zz -= g_z * d_z
        forces[i, 0] += fxi
        forces[i, 1] += fyi
        forces[i, 2] += fzi
        energy += e_i
    w[0, 0] += w_xx
    w[0, 1] += w_xy
    w[0, 2] += w_xz
    w[1, 0] += w_yx
    w[1, 1] += w_yy
    w[1, 2] += w_yz
    w[2, 0] += w_zx
    w[2, 1] += w_zy
    w[2, 2] += w_zz
    return energy


@kernel(parallel=True)
def _uf3_chunks(params, positions, box, nbr_idx, nbr_count, bounds, forces, extra, energies, w):
    """Chunk c covers atoms bounds[c]..bounds[c+1]-1 and writes its forces to `forces` (c = 0) or
    extra[c-1] (zeroed here), its energy to energies[c] and its virial to w[c]; chunks run in parallel."""
    for c in prange(bounds.shape[0] - 1):
        if c == 0:
            energies[c] = _uf3_atoms(params, positions, box, nbr_idx, nbr_count, bounds[c], bounds[c + 1],
                                     forces, w[c])
        else:
            out = extra[c - 1]
            out[:] = 0.0
            energies[c] = _uf3_atoms(params, positions, box, nbr_idx, nbr_count, bounds[c], bounds[c + 1],
                                     out, w[c])


@kernel
def _uf3_parallel(params, positions, box, nbr_idx, nbr_count, chunks, forces, virial):
    """`uf3` in `chunks` chunks on Numba's threads (see difftre.kernels.parallel)."""
    bounds = parallel.balanced_bounds(nbr_count, chunks)
    extra = np.empty((chunks - 1, positions.shape[0], 3), positions.dtype)
    energies = np.zeros(chunks)
    w = np.zeros((chunks, 3, 3))
    _uf3_chunks(params, positions, box, nbr_idx, nbr_count, bounds, forces, extra, energies, w)
    parallel.add_chunk_forces(forces, extra)
    energy = 0.0
    for c in range(chunks):
        energy += energies[c]
    for c in range(1, chunks):
        w[0] += w[c]
    virial += w[0]
    return energy


@kernel(cache=False)
def uf3(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """UF3 energy (kJ/mol), adding forces (kJ/mol/nm) and virial (kJ/mol); params from `pack_params`.

    With DIFFTRE_PARALLEL=1 the atoms are split over Numba's threads (difftre.kernels.parallel).
    (cache=False: whether the parallel code exists is decided when it compiles, per process.)
    """
    n = positions.shape[0]
    if _PARALLEL:
        chunks = parallel.n_chunks(n)
        if chunks > 1:
            return _uf3_parallel(params, positions, box, nbr_idx, nbr_count, chunks, forces, virial)
    return _uf3_atoms(params, positions, box, nbr_idx, nbr_count, 0, n, forces, virial)
