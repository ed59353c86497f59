"""Many-body potentials (Numba, 3-D): Stillinger-Weber.

System-term signature: ``fn(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy``
with a full neighbour list; the function adds its forces and its virial
W_ab = sum over bond vectors d of (-dU/dd_a) d_b (docs/DESIGN.md).
"""
import numpy as np
from numba import prange

from difftre.kernels import parallel
from difftre.kernels.jit import kernel
from difftre.kernels.parallel import ENABLED as _PARALLEL
from difftre.kernels.space import minimum_image

SW_SILICON = dict(A=7.049556277, B=0.6022245584, p=4.0, q=0.0, a=1.8, lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0)


def stillinger_weber_params(epsilon, sigma, A=7.049556277, B=0.6022245584, p=4.0, q=0.0, a=1.8,
                            lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0, dtype=np.float64):
    """Packed SW parameters (epsilon in kJ/mol, sigma in nm); the cut-off is a * sigma."""
    if epsilon <= 0 or sigma <= 0 or a <= 0:
        raise ValueError(f"Stillinger-Weber needs epsilon, sigma, a > 0, got {epsilon}, {sigma}, {a}")
    return np.array([epsilon, sigma, A, B, p, q, a, lam, gamma, cos_theta0], dtype=dtype)


# fast-math flags of the many-body loops; never 'nnan' / 'ninf' / 'fast' (non-finite values must survive)
FASTMATH = {"contract", "arcp", "reassoc", "nsz"}


@kernel(inline="always")
def _integer_exponent(exponent):
    """exponent as a small non-negative integer (0..64), or -1 when it is not one."""
    if exponent >= 0.0 and exponent <= 64.0 and exponent == np.floor(exponent):
        return int(exponent)
    return -1


@kernel(inline="always")
def _power(x, exponent, integer):
    """x ** exponent; by repeated squaring when integer = _integer_exponent(exponent) >= 0."""
    if integer < 0:
        return x ** exponent
    result = 1.0
    base = x
    k = integer
    while k > 0:
        if k & 1:
            result *= base
        base *= base
        k >>= 1
    return result


@kernel(fastmath=FASTMATH)
def _stillinger_weber_atoms(params, positions, box, nbr_idx, nbr_count, first, last, forces, w):
    """The SW terms centred on atoms first..last-1: adds forces, w[c, d] += virial; returns the energy.

    Per centre atom i: its bonds d_b = r_j - r_i inside the cut-off, the two-body terms of the
    bonds with j > i and the three-body terms of every bond pair accumulate the gradient
    G_b = dU/dd_b per bond; then the force on j_b is -G_b, on i +sum_b G_b, and W -= G_b (x) d_b.
    """
    eps, sig, A, B, p, q, a, lam, gam, cos0 = (params[0], params[1], params[2], params[3], params[4],
                                               params[5], params[6], params[7], params[8], params[9])
    rc = a * sig
    rc2 = rc * rc
    p_int = _integer_exponent(p)
    q_int = _integer_exponent(q)
    lx, ly, lz = box[0], box[1], box[2]
    ix, iy, iz = 1.0 / lx, 1.0 / ly, 1.0 / lz
    cap = nbr_idx.shape[1]
    dtype = np.float64   # per-bond terms and sums in double precision also for float32 positions: the
    #                      forces are small differences of large terms (float32 sums lose ~1e-3 of them)
    # per bond of the current atom: vector, 1/r, exp(gamma s / (r - a s)), its r-derivative / r,
    # neighbour index and the accumulated gradient
    bx = np.empty(cap, dtype)
    by = np.empty(cap, dtype)
    bz = np.empty(cap, dtype)
    b_r2 = np.empty(cap, dtype)
    b_inv_r = np.empty(cap, dtype)
    b_exp = np.empty(cap, dtype)
    b_dexp = np.empty(cap, dtype)
    b_j = np.empty(cap, np.int64)
    gx = np.empty(cap, dtype)
    gy = np.empty(cap, dtype)
    gz = np.empty(cap, dtype)
    zero = 0.0
    lam_eps = lam * eps
    a_eps = A * eps
    gam_sig = gam * sig
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
            nb += not r2 >= rc2          # a NaN distance stays in (and shows up in the energy)
        e_i = zero
        for b in range(nb):
            r = np.sqrt(b_r2[b])
            inv_r = 1.0 / r
            inv_gap = 1.0 / (r - rc)
            e = np.exp(gam_sig * inv_gap)
            b_inv_r[b] = inv_r
            b_exp[b] = e
            b_dexp[b] = -gam_sig * inv_gap * inv_gap * e * inv_r
            g = zero
            if b_j[b] > i:   # two-body term, once per pair
                sr = sig * inv_r
                srp = _power(sr, p, p_int)
                srq = _power(sr, q, q_int)
                e2 = np.exp(sig * inv_gap)
                radial = B * srp - srq
                e_i += a_eps * radial * e2
                du_dr = a_eps * e2 * ((q * srq - p * B * srp) * inv_r - radial * sig * inv_gap * inv_gap)
                g = du_dr * inv_r
            gx[b] = g * bx[b]
            gy[b] = g * by[b]
            gz[b] = g * bz[b]
        for b1 in range(nb):
            d1x, d1y, d1z = bx[b1], by[b1], bz[b1]
            inv_r1 = b_inv_r[b1]
            e1 = b_exp[b1]
            de1 = b_dexp[b1]
            inv_r1_sq = inv_r1 * inv_r1
            g1x = g1y = g1z = zero
            for b2 in range(b1 + 1, nb):
                d2x, d2y, d2z = bx[b2], by[b2], bz[b2]
                inv_r2 = b_inv_r[b2]
                e2 = b_exp[b2]
                inv_r1r2 = inv_r1 * inv_r2
                cos_t = (d1x * d2x + d1y * d2y + d1z * d2z) * inv_r1r2
                delta = cos_t - cos0
                radial = e1 * e2
                lam_delta = lam_eps * delta
                e_i += lam_delta * delta * radial
                ang = 2.0 * lam_delta * radial            # dU/dcos
                rad1 = lam_delta * delta * de1 * e2
                rad2 = lam_delta * delta * e1 * b_dexp[b2]
                c1 = ang * cos_t * inv_r1_sq - rad1
                c2 = ang * cos_t * inv_r2 * inv_r2 - rad2
                a12 = ang * inv_r1r2
                # dU/dd1 = a12 d2 - c1 d1, dU/dd2 = a12 d1 - c2 d2
                g1x += a12 * d2x - c1 * d1x
                g1y += a12 * d2y - c1 * d1y
                g1z += a12 * d2z - c1 * d1z
                gx[b2] += a12 * d1x - c2 * d2x
                gy[b2] += a12 * d1y - c2 * d2y
                gz[b2] += a12 * d1z - c2 * d2z
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
def _stillinger_weber_chunks(params, positions, box, nbr_idx, nbr_count, bounds, forces, extra, energies, w):
    """Chunk c covers atoms bounds[c]..bounds[c+1]-1 and writes its forces to `forces` (c = 0) or
    extra[c-1] (zeroed here), its energy to energies[c] and its virial to w[c]; chunks run in parallel."""
    for c in prange(bounds.shape[0] - 1):
        if c == 0:
            energies[c] = _stillinger_weber_atoms(params, positions, box, nbr_idx, nbr_count, bounds[c],
                                                  bounds[c + 1], forces, w[c])
        else:
            out = extra[c - 1]
            out[:] = 0.0
            energies[c] = _stillinger_weber_atoms(params, positions, box, nbr_idx, nbr_count, bounds[c],
                                                  bounds[c + 1], out, w[c])


@kernel
def _stillinger_weber_parallel(params, positions, box, nbr_idx, nbr_count, chunks, forces, virial):
    """`stillinger_weber` in `chunks` chunks on Numba's threads (see difftre.kernels.parallel)."""
    bounds = parallel.balanced_bounds(nbr_count, chunks)
    extra = np.empty((chunks - 1, positions.shape[0], 3), positions.dtype)
    energies = np.zeros(chunks)
    w = np.zeros((chunks, 3, 3))
    _stillinger_weber_chunks(params, positions, box, nbr_idx, nbr_count, bounds, forces, extra, energies, w)
    parallel.add_chunk_forces(forces, extra)
    energy = 0.0
    for c in range(chunks):
        energy += energies[c]
    for c in range(1, chunks):
        w[0] += w[c]
    virial += w[0]
    return energy


@kernel(cache=False)
def stillinger_weber(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """Stillinger-Weber energy: sum_{i<j} phi2(r_ij) + sum_i sum_{j<k} phi3(r_ij, r_ik, theta_jik).

    phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s));
    phi3 = lam eps (cos theta - cos0)^2 exp(gamma s / (r_ij - a s)) exp(gamma s / (r_ik - a s)).
    With DIFFTRE_PARALLEL=1 the atoms are split over Numba's threads (difftre.kernels.parallel).
    (cache=False: whether the parallel code exists is decided when it compiles, per process.)
    """
    n = positions.shape[0]
    if _PARALLEL:
        chunks = parallel.n_chunks(n)
        if chunks > 1:
            return _stillinger_weber_parallel(params, positions, box, nbr_idx, nbr_count, chunks, forces, virial)
    return _stillinger_weber_atoms(params, positions, box, nbr_idx, nbr_count, 0, n, forces, virial)
