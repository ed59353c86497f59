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
from numba import prange

from difftre.kernels import parallel
from difftre.kernels.jit import kernel
from difftre.kernels.manybody import FASTMATH
from difftre.kernels.parallel import ENABLED as _PARALLEL
from difftre.kernels.space import minimum_image

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


@kernel(fastmath=FASTMATH)
def _uf3_atoms(params, positions, box, nbr_idx, nbr_count, first, last, forces, w):
    """The UF3 terms centred on atoms first..last-1: adds forces, w[c, d] += virial; returns the energy.

    Per centre atom i: its bonds d_b = r_j - r_i inside max(pair, leg cut-off); the pair term of
    the bonds with j > i (each pair once) and the triplet terms of every pair of legs accumulate
    G_b = dU/dd_b (r_jk = |d_k - d_j| enters both legs' gradients); then the force on j_b is
    -G_b, on i +sum_b G_b, and W -= G_b (x) d_b. The legs' basis values are computed once per bond.
    """
    pair_r_min, pair_cut, n_pair = params[1], params[2], int(params[3])
    leg_r_min, leg_cut, n_leg = params[4], params[5], int(params[6])
    jk_r_min, jk_cut, n_jk = params[7], params[8], int(params[9])
    a_off, c_off = int(params[10]), int(params[11])
    pair_h = (pair_cut - pair_r_min) / n_pair
    leg_h = (leg_cut - leg_r_min) / n_leg
    jk_h = (jk_cut - jk_r_min) / n_jk
    stride_l = (n_leg + 3) * (n_jk + 3)
    stride_m = n_jk + 3
    list_cut = max(pair_cut, leg_cut)
    list_cut2 = list_cut * list_cut
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
    leg_bond = np.empty(cap, np.int64)      # per leg: its bond, 1/r, interval, 4 basis values and derivatives
    leg_inv_r = np.empty(cap, dtype)
    leg_k = np.empty(cap, np.int64)
    leg_basis = np.empty((cap, 4), dtype)
    leg_deriv = np.empty((cap, 4), dtype)
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
                k, p0, p1, p2, p3, d0, d1, d2, d3 = _cubic_basis(r, pair_r_min, pair_h, n_pair, pair_cut)
                o = a_off + k
                c0, c1, c2, c3 = params[o], params[o + 1], params[o + 2], params[o + 3]
                e_i += c0 * p0 + c1 * p1 + c2 * p2 + c3 * p3
                g = (c0 * d0 + c1 * d1 + c2 * d2 + c3 * d3) * inv_r
            gx[b] = g * bx[b]
            gy[b] = g * by[b]
            gz[b] = g * bz[b]
            if not r >= leg_cut and not r < leg_r_min:
                k, p0, p1, p2, p3, d0, d1, d2, d3 = _cubic_basis(r, leg_r_min, leg_h, n_leg, leg_cut)
                leg_bond[n_legs] = b
                leg_inv_r[n_legs] = inv_r
                leg_k[n_legs] = k
                leg_basis[n_legs, 0] = p0
                leg_basis[n_legs, 1] = p1
                leg_basis[n_legs, 2] = p2
                leg_basis[n_legs, 3] = p3
                leg_deriv[n_legs, 0] = d0
                leg_deriv[n_legs, 1] = d1
                leg_deriv[n_legs, 2] = d2
                leg_deriv[n_legs, 3] = d3
                n_legs += 1
        for x1 in range(n_legs):
            b1 = leg_bond[x1]
            d1x, d1y, d1z = bx[b1], by[b1], bz[b1]
            k1 = leg_k[x1]
            g1x = g1y = g1z = zero
            for x2 in range(x1 + 1, n_legs):
                b2 = leg_bond[x2]
                ux = bx[b2] - d1x          # r_k - r_j
                uy = by[b2] - d1y
                uz = bz[b2] - d1z
                r3 = np.sqrt(ux * ux + uy * uy + uz * uz)
                if r3 >= jk_cut or r3 < jk_r_min:
                    continue
                k3, q0, q1, q2, q3, dq0, dq1, dq2, dq3 = _cubic_basis(r3, jk_r_min, jk_h, n_jk, jk_cut)
                k2 = leg_k[x2]
                e = zero
                de1 = zero
                de2 = zero
                de3 = zero
                for l in range(4):
                    bl = leg_basis[x1, l]
                    dbl = leg_deriv[x1, l]
                    row = c_off + (k1 + l) * stride_l + k2 * stride_m + k3
                    for m in range(4):
                        o = row + m * stride_m
                        c0, c1, c2, c3 = params[o], params[o + 1], params[o + 2], params[o + 3]
                        s = c0 * q0 + c1 * q1 + c2 * q2 + c3 * q3
                        sd = c0 * dq0 + c1 * dq1 + c2 * dq2 + c3 * dq3
                        bm = leg_basis[x2, m]
                        blm = bl * bm
                        e += blm * s
                        de1 += dbl * bm * s
                        de2 += bl * leg_deriv[x2, m] * s
                        de3 += blm * sd
                e_i += e
                a1 = de1 * leg_inv_r[x1]
                a2 = de2 * leg_inv_r[x2]
                a3 = de3 / r3
                # dU/dd1 = a1 d1 - a3 u, dU/dd2 = a2 d2 + a3 u (u = d2 - d1)
                g1x += a1 * d1x - a3 * ux
                g1y += a1 * d1y - a3 * uy
                g1z += a1 * d1z - a3 * uz
                gx[b2] += a2 * bx[b2] + a3 * ux
                gy[b2] += a2 * by[b2] + a3 * uy
                gz[b2] += a2 * bz[b2] + a3 * uz
            gx[b1] += g1x
            gy[b1] += g1y
            gz[b1] += g1z
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
