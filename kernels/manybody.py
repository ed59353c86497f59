"""Many-body potentials (Numba, 3-D): Stillinger-Weber.

System-term signature: ``fn(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy``
with a full neighbour list; the function adds its forces and its virial
W_ab = sum over bond vectors d of (-dU/dd_a) d_b (docs/DESIGN.md).

Stillinger-Weber's physics is written once (`sw_bond`, `sw_two_body`, `sw_three_body`) and
evaluated two ways: `stillinger_weber`, the CPU kernel, scatters over centre atoms;
`stillinger_weber_on_atom` gathers the force on one atom, which is what a GPU thread computes
(the CUDA engine compiles it through `difftre.kernels.cuda.port`; keep its signature).

Shared by every many-body kernel (also difftre.kernels.uf3): `scatter_bond_gradients` (forces and
virial of a centre atom's bonds from their energy gradients), `on_atom_chunks` (the loop over centre
atoms, serial or split over Numba's threads) and `add_outer` (a gather's virial share); for the strain
derivatives of the linear forms' features and the Born terms, `voigt_products`, `add_strain_outer`,
`strain_geometry` and `full_neighbor_list` (a trajectory kernel's per-frame list).

`stillinger_weber_born` (and `stillinger_weber_trajectory_born`, over frames) gives SW's Born term
d^2U / deps deps, from the second derivatives `sw_bond_curvature`, `sw_two_body_curvature` and
`sw_three_body_hessian`.
"""
import numpy as np
from numba import prange

from difftre.kernels import parallel
from difftre.kernels.jit import kernel
from difftre.kernels.neighbors import build
from difftre.kernels.parallel import ENABLED as _PARALLEL
from difftre.kernels.space import displacement, minimum_image

SW_SILICON = dict(A=7.049556277, B=0.6022245584, p=4.0, q=0.0, a=1.8, lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0)


def stillinger_weber_params(epsilon, sigma, A, B, p, q, a, lam, gamma, cos_theta0, dtype=np.float64):
    """SW parameters packed in this order (epsilon in kJ/mol, sigma in nm, the rest dimensionless)."""
    if epsilon <= 0 or sigma <= 0 or a <= 0:
        raise ValueError(f"Stillinger-Weber needs epsilon, sigma, a > 0, got {epsilon}, {sigma}, {a}")
    return np.array([epsilon, sigma, A, B, p, q, a, lam, gamma, cos_theta0], dtype=dtype)


@kernel(inline="always")
def stillinger_weber_cutoff(params):
    """The cut-off a * sigma (nm) of packed SW parameters."""
    return params[6] * params[1]


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


# ---------------------------------------------------------------------------- the physics, once
# The CPU kernel (a scatter over centre atoms) and the CUDA engine (a gather per atom,
# `stillinger_weber_on_atom`, ported by difftre.kernels.cuda.port) both evaluate SW through
# these three functions.

@kernel(inline="always")
def sw_constants(params):
    """What the SW terms use, from packed params, computed once per call:
    (sigma, cut-off a sigma, A epsilon, B, p, q, p and q as integer exponents (-1: not integer),
    lam epsilon, gamma sigma, cos_theta0)."""
    eps, sig = params[0], params[1]
    p, q = params[4], params[5]
    return (sig, stillinger_weber_cutoff(params), params[2] * eps, params[3], p, q, _integer_exponent(p),
            _integer_exponent(q), params[7] * eps, params[8] * sig, params[9])


@kernel(inline="always")
def sw_bond(r2, constants):
    """One bond of squared length r2 < cut-off^2 (nm^2): (1/r, 1/(r - a sigma), exp(gamma sigma / (r - a sigma)),
    the r-derivative of that exponential divided by r)."""
    sig, rc, a_eps, B, p, q, p_int, q_int, lam_eps, gam_sig, cos0 = constants
    r = np.sqrt(r2)
    inv_r = 1.0 / r
    inv_gap = 1.0 / (r - rc)
    e = np.exp(gam_sig * inv_gap)
    return inv_r, inv_gap, e, -gam_sig * inv_gap * inv_gap * e * inv_r


@kernel(inline="always")
def _sw_pair_factors(inv_r, inv_gap, constants):
    """((s/r)^p, (s/r)^q, exp(s / (r - a s))) of a bond (from sw_bond), the factors of phi2."""
    sig, rc, a_eps, B, p, q, p_int, q_int, lam_eps, gam_sig, cos0 = constants
    sr = sig * inv_r
    return _power(sr, p, p_int), _power(sr, q, q_int), np.exp(sig * inv_gap)


@kernel(inline="always")
def sw_two_body(inv_r, inv_gap, constants):
    """(phi2, (dphi2/dr) / r) of a bond (from sw_bond): phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s))."""
    sig, rc, a_eps, B, p, q, p_int, q_int, lam_eps, gam_sig, cos0 = constants
    srp, srq, e2 = _sw_pair_factors(inv_r, inv_gap, constants)
    radial = B * srp - srq
    du_dr = a_eps * e2 * ((q * srq - p * B * srp) * inv_r - radial * sig * inv_gap * inv_gap)
    return a_eps * radial * e2, du_dr * inv_r


@kernel(inline="always")
def sw_three_body(d1x, d1y, d1z, inv_r1, e1, de1, d2x, d2y, d2z, inv_r2, e2, de2, constants):
    """phi3 = lam eps (cos theta - cos0)^2 e1 e2 of the bonds d1, d2 (vectors from the centre atom, with
    their sw_bond values) and its gradients: (u, dU/dd1 (3 components), dU/dd2 (3 components))."""
    sig, rc, a_eps, B, p, q, p_int, q_int, lam_eps, gam_sig, cos0 = constants
    inv_r1r2 = inv_r1 * inv_r2
    cos_t = (d1x * d2x + d1y * d2y + d1z * d2z) * inv_r1r2
    delta = cos_t - cos0
    radial = e1 * e2
    lam_delta = lam_eps * delta
    ang = 2.0 * lam_delta * radial            # dU/dcos
    c1 = ang * cos_t * inv_r1 * inv_r1 - lam_delta * delta * de1 * e2
    c2 = ang * cos_t * inv_r2 * inv_r2 - lam_delta * delta * e1 * de2
    a12 = ang * inv_r1r2
    # dU/dd1 = a12 d2 - c1 d1, dU/dd2 = a12 d1 - c2 d2
    return (lam_delta * delta * radial, a12 * d2x - c1 * d1x, a12 * d2y - c1 * d1y, a12 * d2z - c1 * d1z,
            a12 * d1x - c2 * d2x, a12 * d1y - c2 * d2y, a12 * d1z - c2 * d2z)


@kernel(inline="always")
def sw_bond_curvature(inv_r, inv_gap, de, constants):
    """d^2/d sigma^2 of a bond's exp(gamma s / (r - a s)) in sigma = r^2 / 2 (1/nm^4), from its sw_bond
    values (de, the r-derivative divided by r, is d/d sigma)."""
    gam_sig = constants[9]
    return -de * (2.0 * inv_gap + gam_sig * inv_gap * inv_gap + inv_r) * inv_r


@kernel(inline="always")
def sw_two_body_curvature(inv_r, inv_gap, constants):
    """d^2 phi2 / d sigma^2 of a bond (from sw_bond) in sigma = r^2 / 2: (phi2'' - phi2' / r) / r^2 (kJ/mol/nm^4)."""
    sig, rc, a_eps, B, p, q, p_int, q_int, lam_eps, gam_sig, cos0 = constants
    srp, srq, e2 = _sw_pair_factors(inv_r, inv_gap, constants)
    g = sig * inv_gap * inv_gap          # e2' = -g e2, e2'' = (g^2 + 2 g / (r - a s)) e2
    radial = B * srp - srq
    d_radial = (q * srq - p * B * srp) * inv_r
    dd_radial = (p * (p + 1.0) * B * srp - q * (q + 1.0) * srq) * inv_r * inv_r
    d_phi = a_eps * e2 * (d_radial - radial * g)
    dd_phi = a_eps * e2 * (dd_radial - 2.0 * d_radial * g + radial * g * (g + 2.0 * inv_gap))
    return (dd_phi - d_phi * inv_r) * inv_r * inv_r


@kernel(inline="always")
def sw_three_body_hessian(cos_t, inv_r1, e1, de1, dde1, inv_r2, e2, de2, dde2, constants):
    """The Hessian of phi3 = lam eps (cos theta - cos0)^2 e1 e2 in (sigma1, sigma2, pi) = (r1^2 / 2, r2^2 / 2,
    d1 . d2 / 2), where cos theta = pi / sqrt(sigma1 sigma2): (f11, f22, f33, f12, f13, f23) (kJ/mol/nm^4), from
    the bonds' sw_bond values (e, de) and sw_bond_curvature (dde)."""
    lam_eps, cos0 = constants[8], constants[10]
    w1 = inv_r1 * inv_r1
    w2 = inv_r2 * inv_r2
    c1 = -cos_t * w1                  # gradient and Hessian of cos theta (c33 = 0)
    c2 = -cos_t * w2
    c3 = 2.0 * inv_r1 * inv_r2
    c11 = 3.0 * cos_t * w1 * w1
    c22 = 3.0 * cos_t * w2 * w2
    c12 = cos_t * w1 * w2
    c13 = -c3 * w1
    c23 = -c3 * w2
    m = e1 * e2                       # the radial factor and its derivatives (none along pi)
    m1 = de1 * e2
    m2 = e1 * de2
    two_delta = 2.0 * (cos_t - cos0)
    delta2 = 0.25 * two_delta * two_delta
    # f_xy = lam eps (2 c_x c_y m + 2 delta (c_xy m + c_x m_y + c_y m_x) + delta^2 m_xy)
    return (lam_eps * (2.0 * c1 * c1 * m + two_delta * (c11 * m + 2.0 * c1 * m1) + delta2 * dde1 * e2),
            lam_eps * (2.0 * c2 * c2 * m + two_delta * (c22 * m + 2.0 * c2 * m2) + delta2 * e1 * dde2),
            lam_eps * 2.0 * c3 * c3 * m,
            lam_eps * (2.0 * c1 * c2 * m + two_delta * (c12 * m + c1 * m2 + c2 * m1) + delta2 * de1 * de2),
            lam_eps * (2.0 * c1 * c3 * m + two_delta * (c13 * m + c3 * m1)),
            lam_eps * (2.0 * c2 * c3 * m + two_delta * (c23 * m + c3 * m2)))


# ---------------------------------------------------------------------------- CPU: scatter over centre atoms
# Shared by the many-body kernels (Stillinger-Weber here, UF3 in difftre.kernels.uf3): a function
# `atoms(params, positions, box, nbr_idx, nbr_count, first, last, forces, virial) -> energy` computes
# the terms centred on atoms first..last-1, collects per bond of a centre atom the energy gradient, and
# hands it to `scatter_bond_gradients`; `on_atom_chunks` runs it over all atoms, serially or in chunks.

@kernel(inline="always")
def bond_buffers(box, capacity):
    """Box edges and their inverses (3-tuples, nm and 1/nm) and, for `collect_bonds`, float64 buffers of
    `capacity` bonds (bx, by, bz, squared length) and their neighbour indices (int64)."""
    lengths = (box[0], box[1], box[2])
    inverse_lengths = (1.0 / box[0], 1.0 / box[1], 1.0 / box[2])
    return (lengths, inverse_lengths, np.empty(capacity), np.empty(capacity), np.empty(capacity), np.empty(capacity),
            np.empty(capacity, np.int64))


@kernel(inline="always")
def collect_bonds(i, positions, lengths, inverse_lengths, nbr_idx, nbr_count, cutoff2, bx, by, bz, b_r2, neighbor):
    """The bonds of centre atom i: for each listed neighbour j with |r_j - r_i|^2 < cutoff2 (nm^2; a NaN
    distance is kept, to show up in the energy), in list order, d = r_j - r_i (minimum image, box edges
    `lengths` and their inverses, nm) into bx, by, bz, its square into b_r2 and j into neighbor;
    returns how many."""
    lx, ly, lz = lengths
    ix, iy, iz = inverse_lengths
    xi, yi, zi = positions[i, 0], positions[i, 1], positions[i, 2]
    n_bonds = 0
    for jj in range(nbr_count[i]):
        j = nbr_idx[i, jj]
        dx = minimum_image(positions[j, 0] - xi, lx, ix)
        dy = minimum_image(positions[j, 1] - yi, ly, iy)
        dz = minimum_image(positions[j, 2] - zi, lz, iz)
        r2 = dx * dx + dy * dy + dz * dz
        bx[n_bonds] = dx
        by[n_bonds] = dy
        bz[n_bonds] = dz
        b_r2[n_bonds] = r2
        neighbor[n_bonds] = j
        n_bonds += not r2 >= cutoff2
    return n_bonds


@kernel(inline="always")
def scatter_bond_gradients(i, n_bonds, neighbor, bx, by, bz, gx, gy, gz, forces, virial_sum):
    """Forces and virial of the bonds of centre atom i from their energy gradients.

    Bond b (b < n_bonds) is d_b = r_j - r_i = (bx, by, bz)[b] (nm) with j = neighbor[b], and
    G_b = dU/dd_b = (gx, gy, gz)[b] (kJ/mol/nm) the gradient of the terms centred on i: adds -G_b to
    the force on j and +sum_b G_b to the force on i (kJ/mol/nm); returns virial_sum - sum_b G_b (x) d_b,
    the virial (kJ/mol) as a 9-tuple in row-major order (a running sum the caller keeps in registers
    and adds with `add_virial`).
    """
    w_xx, w_xy, w_xz, w_yx, w_yy, w_yz, w_zx, w_zy, w_zz = virial_sum
    fxi = fyi = fzi = 0.0
    for b in range(n_bonds):
        j = neighbor[b]
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
    return w_xx, w_xy, w_xz, w_yx, w_yy, w_yz, w_zx, w_zy, w_zz


@kernel(inline="always")
def add_virial(virial, virial_sum):
    """virial (3, 3) += virial_sum (9-tuple, row-major; kJ/mol)."""
    for a in range(3):
        for b in range(3):
            virial[a, b] += virial_sum[3 * a + b]


@kernel(parallel=True)
def _chunks_in_parallel(atoms, params, positions, box, nbr_idx, nbr_count, bounds, forces, extra, energies,
                        virials):
    """Chunk c runs `atoms` on atoms bounds[c]..bounds[c+1]-1 and writes its forces to `forces` (c = 0) or
    extra[c-1] (zeroed here), its energy to energies[c] and its virial to virials[c]; chunks run in parallel."""
    for c in prange(bounds.shape[0] - 1):
        if c == 0:
            energies[c] = atoms(params, positions, box, nbr_idx, nbr_count, bounds[c], bounds[c + 1], forces,
                                virials[c])
        else:
            out = extra[c - 1]
            out[:] = 0.0
            energies[c] = atoms(params, positions, box, nbr_idx, nbr_count, bounds[c], bounds[c + 1], out,
                                virials[c])


@kernel(inline="always")
def on_atom_chunks(atoms, params, positions, box, nbr_idx, nbr_count, forces, virial):
    """The many-body term `atoms` (see above) over all atoms: its energy (kJ/mol), adding forces
    (kJ/mol/nm) and virial (kJ/mol). With DIFFTRE_PARALLEL=1 the atoms are split into chunks
    (difftre.kernels.parallel) run on Numba's threads, and the chunks' forces, energies and virials
    are added in chunk order.

    Inlined into each potential's kernel (compiled with cache=False: whether the parallel code exists is
    decided when it compiles, per process): a kernel passed as an argument to a function compiled on
    its own would be compiled in as an object address, and code holding one is not cached on disk
    (the parallel code holds one anyway, through numba.get_num_threads).
    """
    n = positions.shape[0]
    if _PARALLEL:
        chunks = parallel.n_chunks(n)
        if chunks > 1:
            bounds = parallel.balanced_bounds(nbr_count, chunks)
            extra = np.empty((chunks - 1, n, 3), positions.dtype)
            energies = np.zeros(chunks)
            virials = np.zeros((chunks, 3, 3))
            _chunks_in_parallel(atoms, params, positions, box, nbr_idx, nbr_count, bounds, forces, extra, energies,
                                virials)
            parallel.add_chunk_forces(forces, extra)
            energy = 0.0
            for c in range(chunks):
                energy += energies[c]
                virial += virials[c]
            return energy
    return atoms(params, positions, box, nbr_idx, nbr_count, 0, n, forces, virial)


@kernel(fastmath=FASTMATH)
def _stillinger_weber_atoms(params, positions, box, nbr_idx, nbr_count, first, last, forces, w):
    """The SW terms centred on atoms first..last-1: adds forces, w[c, d] += virial; returns the energy.

    Per centre atom i: its bonds d_b = r_j - r_i inside the cut-off, the two-body terms of the
    bonds with j > i and the three-body terms of every bond pair accumulate the gradient
    G_b = dU/dd_b per bond; then the force on j_b is -G_b, on i +sum_b G_b, and W -= G_b (x) d_b.
    """
    constants = sw_constants(params)
    rc = constants[1]
    rc2 = rc * rc
    lengths = (box[0], box[1], box[2])
    inverse_lengths = (1.0 / box[0], 1.0 / box[1], 1.0 / box[2])
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
    energy = zero
    virial_sum = (zero, zero, zero, zero, zero, zero, zero, zero, zero)
    for i in range(first, last):
        nb = collect_bonds(i, positions, lengths, inverse_lengths, nbr_idx, nbr_count, rc2, bx, by, bz, b_r2, b_j)
        e_i = zero
        for b in range(nb):
            inv_r, inv_gap, e, de = sw_bond(b_r2[b], constants)
            b_inv_r[b] = inv_r
            b_exp[b] = e
            b_dexp[b] = de
            g = zero
            if b_j[b] > i:   # two-body term, once per pair
                u2, g = sw_two_body(inv_r, inv_gap, constants)
                e_i += u2
            gx[b] = g * bx[b]
            gy[b] = g * by[b]
            gz[b] = g * bz[b]
        for b1 in range(nb):
            d1x, d1y, d1z = bx[b1], by[b1], bz[b1]
            inv_r1 = b_inv_r[b1]
            e1 = b_exp[b1]
            de1 = b_dexp[b1]
            g1x = g1y = g1z = zero
            for b2 in range(b1 + 1, nb):
                u3, h1x, h1y, h1z, h2x, h2y, h2z = sw_three_body(d1x, d1y, d1z, inv_r1, e1, de1, bx[b2], by[b2],
                                                                 bz[b2], b_inv_r[b2], b_exp[b2], b_dexp[b2],
                                                                 constants)
                e_i += u3
                g1x += h1x
                g1y += h1y
                g1z += h1z
                gx[b2] += h2x
                gy[b2] += h2y
                gz[b2] += h2z
            gx[b1] += g1x
            gy[b1] += g1y
            gz[b1] += g1z
        virial_sum = scatter_bond_gradients(i, nb, b_j, bx, by, bz, gx, gy, gz, forces, virial_sum)
        energy += e_i
    add_virial(w, virial_sum)
    return energy


@kernel(cache=False)
def stillinger_weber(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """Stillinger-Weber energy (kJ/mol), adding forces (kJ/mol/nm) and virial (kJ/mol):
    sum_{i<j} phi2(r_ij) + sum_i sum_{j<k} phi3(r_ij, r_ik, theta_jik).

    phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s));
    phi3 = lam eps (cos theta - cos0)^2 exp(gamma s / (r_ij - a s)) exp(gamma s / (r_ik - a s)).
    With DIFFTRE_PARALLEL=1 the atoms are split over Numba's threads (`on_atom_chunks`; cache=False
    as there).
    """
    return on_atom_chunks(_stillinger_weber_atoms, params, positions, box, nbr_idx, nbr_count, forces, virial)


# ---------------------------------------------------------------------------- CPU: strain derivatives (Born terms)
# Under the strain x -> F(eps) x of models.state.strain_deformation (F^T F = I + eps + eps^T + O(eps^3); to
# first order also under the virial's x -> (I + eps) x) a bond's sigma = r^2 / 2 and a bond pair's
# pi = d1 . d2 / 2 are linear in eps: d sigma / d eps_ab = d_a d_b
# and d pi / d eps_ab = (d1_a d2_b + d2_a d1_b) / 2, the Voigt products q (`voigt_products`). A term
# phi(x_1, x_2, ..) of such variables then has dphi/deps = sum_x phi_x q_x and the Born term
# d^2 phi / deps deps = sum_xy phi_xy q_x q_y^T, kept as its 21 upper Voigt components (I <= J over
# VOIGT_PAIRS, row by row).

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""The Voigt order of the six symmetric tensor components (a, b)."""


@kernel(inline="always")
def voigt_products(ax, ay, az, bx, by, bz, q):
    """q (6,) = (a_a b_b + a_b b_a) / 2 over VOIGT_PAIRS (nm^2): d pi / d eps of the bond pair's pi = a . b / 2
    (a = b: d sigma / d eps of the bond's sigma)."""
    q[0] = ax * bx
    q[1] = ay * by
    q[2] = az * bz
    q[3] = 0.5 * (ay * bz + az * by)
    q[4] = 0.5 * (ax * bz + az * bx)
    q[5] = 0.5 * (ax * by + ay * bx)


@kernel(inline="always")
def add_strain_outer(out, weight, q):
    """out (21,) += weight q q^T in the upper Voigt order."""
    k = 0
    for a in range(6):
        for b in range(a, 6):
            out[k] += weight * q[a] * q[b]
            k += 1


@kernel(inline="always")
def strain_geometry(q1, q2, q3, geometry):
    """geometry (6, 21): the rows q1 q1^T, q2 q2^T, q3 q3^T, q1 q2^T + q2 q1^T, q1 q3^T + q3 q1^T,
    q2 q3^T + q3 q2^T in the upper Voigt order, so that the Born term of a function of three variables
    with the Hessian (f11, f22, f33, f12, f13, f23) is sum_t f_t geometry[t]."""
    k = 0
    for a in range(6):
        for b in range(a, 6):
            geometry[0, k] = q1[a] * q1[b]
            geometry[1, k] = q2[a] * q2[b]
            geometry[2, k] = q3[a] * q3[b]
            geometry[3, k] = q1[a] * q2[b] + q2[a] * q1[b]
            geometry[4, k] = q1[a] * q3[b] + q3[a] * q1[b]
            geometry[5, k] = q2[a] * q3[b] + q3[a] * q2[b]
            k += 1


@kernel(inline="always")
def full_neighbor_list(positions, box, cutoff, capacity):
    """(nbr_idx, nbr_count) of a full list of every pair closer than cutoff (nm), starting at `capacity`
    slots per atom and regrown as needed (nothing dropped)."""
    nbr_idx = np.empty((positions.shape[0], capacity), np.int32)
    nbr_count = np.empty(positions.shape[0], np.int32)
    nbr_idx = build(positions, box, cutoff, False, nbr_idx, nbr_count, np.empty_like(positions))
    return nbr_idx, nbr_count


@kernel(fastmath=FASTMATH)
def stillinger_weber_born(params, positions, box, nbr_idx, nbr_count, born):
    """Adds the Born term of SW, d^2U / d eps d eps at eps = 0 (kJ/mol), to born (21,) (upper Voigt order;
    see above: phi2 is a function of sigma, phi3 of (sigma1, sigma2, pi)); a full neighbour list covering
    the cut-off. The same terms as `stillinger_weber`."""
    constants = sw_constants(params)
    rc = constants[1]
    cap = nbr_idx.shape[1]
    lengths, inverse_lengths, bx, by, bz, b_r2, b_j = bond_buffers(box, cap)
    b_inv_r = np.empty(cap)
    b_exp = np.empty((cap, 3))        # exp(gamma s / (r - a s)) and its first and second sigma-derivatives
    b_q = np.empty((cap, 6))
    q12 = np.empty(6)
    geometry = np.empty((6, 21))
    for i in range(positions.shape[0]):
        nb = collect_bonds(i, positions, lengths, inverse_lengths, nbr_idx, nbr_count, rc * rc, bx, by, bz, b_r2,
                           b_j)
        for b in range(nb):
            inv_r, inv_gap, e, de = sw_bond(b_r2[b], constants)
            b_inv_r[b] = inv_r
            b_exp[b, 0] = e
            b_exp[b, 1] = de
            b_exp[b, 2] = sw_bond_curvature(inv_r, inv_gap, de, constants)
            voigt_products(bx[b], by[b], bz[b], bx[b], by[b], bz[b], b_q[b])
            if b_j[b] > i:
                add_strain_outer(born, sw_two_body_curvature(inv_r, inv_gap, constants), b_q[b])
        for b1 in range(nb):
            for b2 in range(b1 + 1, nb):
                cos_t = (bx[b1] * bx[b2] + by[b1] * by[b2] + bz[b1] * bz[b2]) * b_inv_r[b1] * b_inv_r[b2]
                hessian = sw_three_body_hessian(cos_t, b_inv_r[b1], b_exp[b1, 0], b_exp[b1, 1], b_exp[b1, 2],
                                                b_inv_r[b2], b_exp[b2, 0], b_exp[b2, 1], b_exp[b2, 2], constants)
                voigt_products(bx[b1], by[b1], bz[b1], bx[b2], by[b2], bz[b2], q12)
                strain_geometry(b_q[b1], b_q[b2], q12, geometry)
                for t in range(6):
                    for k in range(21):
                        born[k] += hessian[t] * geometry[t, k]


@kernel(parallel=True)
def stillinger_weber_trajectory_born(params, frames, box, capacity, born):
    """`stillinger_weber_born` of every frame (S, N, 3) nm into born (S, 21) (zeroed here), the frames spread
    over Numba's threads, each with its own full list (`full_neighbor_list`, `capacity` slots to start)."""
    for f in prange(frames.shape[0]):
        positions = np.ascontiguousarray(frames[f])
        nbr_idx, nbr_count = full_neighbor_list(positions, box, stillinger_weber_cutoff(params), capacity)
        born[f] = 0.0
        stillinger_weber_born(params, positions, box, nbr_idx, nbr_count, born[f])


# ---------------------------------------------------------------------------- GPU: gather per atom

@kernel(inline="always")
def add_outer(virial, scale, ax, ay, az, bx, by, bz):
    """virial += scale * a (x) b (3-D)."""
    virial[0, 0] += scale * ax * bx
    virial[0, 1] += scale * ax * by
    virial[0, 2] += scale * ax * bz
    virial[1, 0] += scale * ay * bx
    virial[1, 1] += scale * ay * by
    virial[1, 2] += scale * ay * bz
    virial[2, 0] += scale * az * bx
    virial[2, 1] += scale * az * by
    virial[2, 2] += scale * az * bz


@kernel
def stillinger_weber_on_atom(i, positions, box, inv_box, nbr_idx, nbr_count, params, force, virial):
    """SW force on atom i alone, added to force (3,) kJ/mol/nm, from the terms it belongs to (full list);
    adds its share of the virial (kJ/mol) and returns its share of the energy (kJ/mol): a triplet's
    to its centre atom, half a pair's to each atom. Summed over all atoms: `stillinger_weber`."""
    constants = sw_constants(params)
    rc = constants[1]
    rc2 = rc * rc
    e = fx = fy = fz = 0.0
    for jj in range(nbr_count[i]):
        j = nbr_idx[i, jj]
        dx, dy, dz, r2 = displacement(positions, i, j, box, inv_box)   # bond i -> j
        if r2 >= rc2:
            continue
        inv_r, inv_gap, e1, de1 = sw_bond(r2, constants)
        u2, g = sw_two_body(inv_r, inv_gap, constants)
        e += 0.5 * u2
        fx += g * dx
        fy += g * dy
        fz += g * dz
        add_outer(virial, -0.5 * g, dx, dy, dz, dx, dy, dz)
        # triplets centred on i: bonds (j, k), k after j in i's row
        for kk in range(jj + 1, nbr_count[i]):
            ex, ey, ez, rk2 = displacement(positions, i, nbr_idx[i, kk], box, inv_box)
            if rk2 >= rc2:
                continue
            inv_rk, _, e2, de2 = sw_bond(rk2, constants)
            u3, g1x, g1y, g1z, g2x, g2y, g2z = sw_three_body(dx, dy, dz, inv_r, e1, de1, ex, ey, ez, inv_rk, e2,
                                                             de2, constants)
            e += u3
            fx += g1x + g2x
            fy += g1y + g2y
            fz += g1z + g2z
            add_outer(virial, -1.0, g1x, g1y, g1z, dx, dy, dz)
            add_outer(virial, -1.0, g2x, g2y, g2z, ex, ey, ez)
        # triplets centred on j with i as one bond (j -> i is -d): i moves bond 1
        for kk in range(nbr_count[j]):
            k = nbr_idx[j, kk]
            if k == i:
                continue
            ex, ey, ez, rk2 = displacement(positions, j, k, box, inv_box)
            if rk2 >= rc2:
                continue
            inv_rk, _, e2, de2 = sw_bond(rk2, constants)
            u3, g1x, g1y, g1z, g2x, g2y, g2z = sw_three_body(-dx, -dy, -dz, inv_r, e1, de1, ex, ey, ez, inv_rk, e2,
                                                             de2, constants)
            fx -= g1x
            fy -= g1y
            fz -= g1z
    force[0] += fx
    force[1] += fy
    force[2] += fz
    return e
