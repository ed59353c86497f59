"""Pair potentials and the generic pair-force kernel (Numba, 3-D).

A pair function has the signature ``pair_fn(r2, params) -> (u, f_over_r)``:
r2 the squared distance (nm^2), params a 1-D float array, u the pair energy
(kJ/mol) and f_over_r = -(du/dr)/r (kJ/mol/nm^2), so the force on i due to j is
f_over_r * (r_i - r_j). Any ``numba.njit`` function with this signature is a
pair potential: put ``(pair_fn, params, cutoff)`` into a force field's pair
terms (see ``difftre.kernels.sampler``); the kernel applies the cut-off.

`pair_forces` calls pair_fn in a branch-free loop that LLVM vectorises, on the
pairs inside the cut-off plus a few padding entries at exactly the cut-off (whose
values are discarded by a select, so even a NaN or inf there does no harm); the
functions in EVALUATE_ON_ALL_PAIRS (LJ) are instead called on every listed pair,
also those beyond the cut-off (up to cutoff + skin), and masked. A pair function
must therefore be pure (no side effects) and defined for any r2 > 0. The loop
vectorises unless pair_fn calls libm (``**`` with a float exponent, np.exp,
np.log: scalar calls unless Numba runs with Intel SVML); then it stays scalar.
"""
import numpy as np
from numba import prange
from numba.extending import overload

from difftre.kernels import parallel
from difftre.kernels.jit import kernel
from difftre.kernels.parallel import ENABLED as _PARALLEL
from difftre.kernels.space import minimum_image
from difftre.kernels.spline import spline_value_and_slope


@kernel(inline="always")
def lennard_jones(r2, params):
    """U = 4 eps [(s/r)^12 - (s/r)^6]; params = [eps, sigma] (plain, truncated by the cut-off)."""
    inv_r2 = 1.0 / r2
    s2 = params[1] * params[1] * inv_r2
    s6 = s2 * s2 * s2
    return 4.0 * params[0] * (s6 * s6 - s6), 24.0 * params[0] * (2.0 * s6 * s6 - s6) * inv_r2


@kernel(inline="always")
def lennard_jones_shifted(r2, params):
    """LJ shifted to zero at the cut-off; params = [eps, sigma, u_lj(r_cut)]."""
    u, f_over_r = lennard_jones(r2, params)
    return u - params[2], f_over_r


@kernel(inline="always")
def repulsive(r2, params):
    """U = eps (s/r)^n, the water prior; params = [eps, sigma, n]."""
    u = params[0] * (params[1] * params[1] / r2) ** (0.5 * params[2])
    return u, params[2] * u / r2


@kernel(inline="always")
def tabulated(r2, params):
    """Cubic spline table in r (packed as in ``difftre.kernels.spline``)."""
    r = np.sqrt(r2)
    u, du_dr = spline_value_and_slope(r, params)
    return u, -du_dr / r


def lennard_jones_shift(eps, sigma, cutoff):
    """Energy of plain LJ at the cut-off (the shift of ``lennard_jones_shifted``)."""
    s6 = (sigma / cutoff) ** 6
    return 4.0 * eps * (s6 * s6 - s6)


# LLVM fast-math flags of the force loops: reassociation lets the per-particle sums be vectorised.
# Never 'nnan' / 'ninf' / 'fast': the sampler relies on non-finite values surviving.
FASTMATH = {"contract", "arcp", "reassoc", "nsz"}
_VECTOR_BYTES = 64   # the vectorised loops run over a multiple of this many bytes of neighbours (AVX-512)


def _pair_forces_masked(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, first, last,
                       forces, w):
    """`_pair_forces_atoms` for cheap pair functions (evaluated on every listed pair). Per atom i: (1) the displacements to its listed neighbours are gathered into contiguous
    buffers, padded to a whole number of SIMD vectors; (2) one branch-free loop, which LLVM
    vectorises, applies the minimum image, calls pair_fn for every entry and masks pairs at or
    beyond the cut-off (and j < i of a full list, and the padding) to zero, summing i's force,
    the energy and the virial; (3) the forces on the neighbours are scattered.
    """
    capacity = nbr_idx.shape[1]
    dtype = positions.dtype
    pad = _VECTOR_BYTES // positions.itemsize
    padded = capacity + pad
    dx_buf = np.empty(padded, dtype)
    dy_buf = np.empty(padded, dtype)
    dz_buf = np.empty(padded, dtype)
    fx_buf = np.empty(padded, dtype)
    fy_buf = np.empty(padded, dtype)
    fz_buf = np.empty(padded, dtype)
    mask = np.empty(padded, np.bool_)
    energy = 0.0
    w_xx = w_yy = w_zz = w_xy = w_xz = w_yz = 0.0   # pair virial is symmetric
    lx, ly, lz = box[0], box[1], box[2]
    ix, iy, iz = 1.0 / lx, 1.0 / ly, 1.0 / lz
    cutoff2 = cutoff * cutoff
    zero = cutoff - cutoff
    for i in range(first, last):
        xi, yi, zi = positions[i, 0], positions[i, 1], positions[i, 2]
        m = nbr_count[i]
        for jj in range(m):
            j = np.uint32(nbr_idx[i, jj])
            dx_buf[jj] = xi - positions[j, 0]
            dy_buf[jj] = yi - positions[j, 1]
            dz_buf[jj] = zi - positions[j, 2]
            mask[jj] = half_list or j > i
        m_padded = (m + pad - 1) // pad * pad
        for jj in range(m, m_padded):
            dx_buf[jj] = cutoff
            dy_buf[jj] = zero
            dz_buf[jj] = zero
            mask[jj] = False
        e_i = zero
        fxi = zero
        fyi = zero
        fzi = zero
        for jj in range(m_padded):
            dx = minimum_image(dx_buf[jj], lx, ix)
            dy = minimum_image(dy_buf[jj], ly, iy)
            dz = minimum_image(dz_buf[jj], lz, iz)
            r2 = dx * dx + dy * dy + dz * dz
            u, f_over_r = pair_fn(r2, params)
            inside = (not r2 >= cutoff2) & mask[jj]     # a NaN distance stays in (and shows up)
            u = u if inside else zero
            f_over_r = f_over_r if inside else zero
            fx = f_over_r * dx
            fy = f_over_r * dy
            fz = f_over_r * dz
            fx_buf[jj] = fx
            fy_buf[jj] = fy
            fz_buf[jj] = fz
            e_i += u
            fxi += fx
            fyi += fy
            fzi += fz
            w_xx += fx * dx
            w_yy += fy * dy
            w_zz += fz * dz
            w_xy += fx * dy
            w_xz += fx * dz
            w_yz += fy * dz
        for jj in range(m):
            j = np.uint32(nbr_idx[i, jj])
            forces[j, 0] -= fx_buf[jj]
            forces[j, 1] -= fy_buf[jj]
            forces[j, 2] -= fz_buf[jj]
        forces[i, 0] += fxi
        forces[i, 1] += fyi
        forces[i, 2] += fzi
        energy += e_i
    w[0] += w_xx
    w[1] += w_yy
    w[2] += w_zz
    w[3] += w_xy
    w[4] += w_xz
    w[5] += w_yz
    return energy


def _pair_forces_compact(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, first, last,
                       forces, w):
    """`_pair_forces_atoms` for any pair function (evaluated inside the cut-off only). Per atom i: (1) the displacements to its listed neighbours are gathered into contiguous
    buffers; (2) a vectorised loop applies the minimum image and computes r^2; (3) the pairs
    inside the cut-off (and j > i for a full list) are compacted, padded to a whole number of
    SIMD vectors with entries at exactly the cut-off; (4) one branch-free loop, which LLVM
    vectorises, calls pair_fn on them, masks the padding to zero and sums i's force, the
    energy and the virial; (5) the forces on the neighbours are scattered.
    """
    capacity = nbr_idx.shape[1]
    dtype = positions.dtype
    pad = _VECTOR_BYTES // positions.itemsize
    padded = capacity + pad
    dx_buf = np.empty(padded, dtype)
    dy_buf = np.empty(padded, dtype)
    dz_buf = np.empty(padded, dtype)
    r2_buf = np.empty(padded, dtype)
    dx_in = np.empty(padded, dtype)
    dy_in = np.empty(padded, dtype)
    dz_in = np.empty(padded, dtype)
    r2_in = np.empty(padded, dtype)
    j_in = np.empty(padded, np.uint32)
    fx_buf = np.empty(padded, dtype)
    fy_buf = np.empty(padded, dtype)
    fz_buf = np.empty(padded, dtype)
    energy = 0.0
    w_xx = w_yy = w_zz = w_xy = w_xz = w_yz = 0.0   # pair virial is symmetric
    lx, ly, lz = box[0], box[1], box[2]
    ix, iy, iz = 1.0 / lx, 1.0 / ly, 1.0 / lz
    cutoff2 = cutoff * cutoff
    zero = cutoff - cutoff
    for i in range(first, last):
        xi, yi, zi = positions[i, 0], positions[i, 1], positions[i, 2]
        m = nbr_count[i]
        for jj in range(m):
            j = np.uint32(nbr_idx[i, jj])
            dx_buf[jj] = xi - positions[j, 0]
            dy_buf[jj] = yi - positions[j, 1]
            dz_buf[jj] = zi - positions[j, 2]
        for jj in range(m):
            dx = minimum_image(dx_buf[jj], lx, ix)
            dy = minimum_image(dy_buf[jj], ly, iy)
            dz = minimum_image(dz_buf[jj], lz, iz)
            dx_buf[jj] = dx
            dy_buf[jj] = dy
            dz_buf[jj] = dz
            r2_buf[jj] = dx * dx + dy * dy + dz * dz
        k = 0
        for jj in range(m):
            j = np.uint32(nbr_idx[i, jj])
            r2 = r2_buf[jj]
            dx_in[k] = dx_buf[jj]
            dy_in[k] = dy_buf[jj]
            dz_in[k] = dz_buf[jj]
            r2_in[k] = r2
            j_in[k] = j
            k += (not r2 >= cutoff2) & (half_list or j > i)   # a NaN distance stays in (and shows up)
        k_padded = (k + pad - 1) // pad * pad
        for q in range(k, k_padded):
            dx_in[q] = cutoff
            dy_in[q] = zero
            dz_in[q] = zero
            r2_in[q] = cutoff2
        e_i = zero
        fxi = zero
        fyi = zero
        fzi = zero
        for q in range(k_padded):
            dx = dx_in[q]
            dy = dy_in[q]
            dz = dz_in[q]
            r2 = r2_in[q]
            u, f_over_r = pair_fn(r2, params)
            inside = not r2 >= cutoff2
            u = u if inside else zero
            f_over_r = f_over_r if inside else zero
            fx = f_over_r * dx
            fy = f_over_r * dy
            fz = f_over_r * dz
            fx_buf[q] = fx
            fy_buf[q] = fy
            fz_buf[q] = fz
            e_i += u
            fxi += fx
            fyi += fy
            fzi += fz
            w_xx += fx * dx
            w_yy += fy * dy
            w_zz += fz * dz
            w_xy += fx * dy
            w_xz += fx * dz
            w_yz += fy * dz
        for q in range(k):
            j = j_in[q]
            forces[j, 0] -= fx_buf[q]
            forces[j, 1] -= fy_buf[q]
            forces[j, 2] -= fz_buf[q]
        forces[i, 0] += fxi
        forces[i, 1] += fyi
        forces[i, 2] += fzi
        energy += e_i
    w[0] += w_xx
    w[1] += w_yy
    w[2] += w_zz
    w[3] += w_xy
    w[4] += w_xz
    w[5] += w_yz
    return energy


# Pair functions cheap enough that evaluating them on every listed pair (also the ~30% beyond the
# cut-off) costs less than compacting the pairs inside the cut-off first (measured: LJ 20% faster
# masked; a spline table or a non-integer power 30-40% faster compacted).
EVALUATE_ON_ALL_PAIRS = {lennard_jones.py_func, lennard_jones_shifted.py_func}


def _pair_forces_atoms(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, first, last,
                       forces, w):
    """The pairs listed under atoms first..last-1: adds their forces to `forces` and
    (W_xx, W_yy, W_zz, W_xy, W_xz, W_yz) to w[0:6]; returns their energy.

    Compiled (Numba overload below) as `_pair_forces_masked` for the pair functions in
    EVALUATE_ON_ALL_PAIRS and as `_pair_forces_compact` for every other one."""
    raise NotImplementedError("compiled code only")


@overload(_pair_forces_atoms, jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _pair_forces_atoms_overload(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, first,
                                last, forces, w):
    python_function = getattr(getattr(pair_fn, "dispatcher", None), "py_func", None)
    return _pair_forces_masked if python_function in EVALUATE_ON_ALL_PAIRS else _pair_forces_compact


@kernel(parallel=True)
def _pair_forces_chunks(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, bounds,
                        forces, extra, energies, w):
    """Chunk c covers atoms bounds[c]..bounds[c+1]-1 and writes its forces to `forces` (c = 0) or
    extra[c-1] (zeroed here), its energy to energies[c] and its virial to w[c]; chunks run in parallel."""
    for c in prange(bounds.shape[0] - 1):
        if c == 0:
            energies[c] = _pair_forces_atoms(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count,
                                             half_list, bounds[c], bounds[c + 1], forces, w[c])
        else:
            out = extra[c - 1]
            out[:] = 0.0
            energies[c] = _pair_forces_atoms(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count,
                                             half_list, bounds[c], bounds[c + 1], out, w[c])


@kernel
def _pair_forces_parallel(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, chunks,
                          forces, w):
    """`pair_forces` in `chunks` chunks on Numba's threads (see difftre.kernels.parallel); the summed
    virial goes to w[0]."""
    bounds = parallel.balanced_bounds(nbr_count, chunks)
    extra = np.empty((chunks - 1, positions.shape[0], 3), positions.dtype)
    energies = np.zeros(chunks)
    _pair_forces_chunks(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, bounds,
                        forces, extra, energies, w)
    parallel.add_chunk_forces(forces, extra)
    energy = 0.0
    for c in range(chunks):
        energy += energies[c]
    for c in range(1, chunks):
        for k in range(6):
            w[0, k] += w[c, k]
    return energy


@kernel
def pair_forces(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, forces, virial):
    """Add the forces and virial (W = sum f_ij (x) r_ij) of one pair potential; return its energy.

    With a full neighbour list (half_list False) each pair is visited once through j > i.
    With DIFFTRE_PARALLEL=1 the atoms are split over Numba's threads (difftre.kernels.parallel).
    """
    n = positions.shape[0]
    chunks = 1
    if _PARALLEL:
        chunks = parallel.n_chunks(n)
    w = np.zeros((chunks, 6))
    if _PARALLEL and chunks > 1:
        energy = _pair_forces_parallel(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list,
                                       chunks, forces, w)
    else:
        energy = _pair_forces_atoms(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list,
                                    0, n, forces, w[0])
    virial[0, 0] += w[0, 0]
    virial[1, 1] += w[0, 1]
    virial[2, 2] += w[0, 2]
    virial[0, 1] += w[0, 3]
    virial[1, 0] += w[0, 3]
    virial[0, 2] += w[0, 4]
    virial[2, 0] += w[0, 4]
    virial[1, 2] += w[0, 5]
    virial[2, 1] += w[0, 5]
    return energy
