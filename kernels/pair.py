"""Pair potentials and the generic pair-force kernel (Numba, 3-D).

A pair function has the signature ``pair_fn(r2, params) -> (u, f_over_r)``:
r2 the squared distance (nm^2), params a 1-D float array, u the pair energy
(kJ/mol) and f_over_r = -(du/dr)/r (kJ/mol/nm^2), so the force on i due to j is
f_over_r * (r_i - r_j). Any ``numba.njit`` function with this signature is a
pair potential: put ``(pair_fn, params, cutoff)`` into a force field's pair
terms (see ``difftre.kernels.forcefield``); the kernel applies the cut-off.
"""
import numpy as np
from difftre.kernels.jit import kernel

from difftre.kernels.space import minimum_image
from difftre.kernels.spline import spline_value_and_slope


@kernel(inline="always")
def lennard_jones(r2, params):
    """U = 4 eps [(s/r)^12 - (s/r)^6]; params = [eps, sigma] (plain, truncated by the cut-off)."""
    s2 = params[1] * params[1] / r2
    s6 = s2 * s2 * s2
    return 4.0 * params[0] * (s6 * s6 - s6), 24.0 * params[0] * (2.0 * s6 * s6 - s6) / r2


@kernel(inline="always")
def lennard_jones_shifted(r2, params):
    """LJ shifted to zero at the cut-off; params = [eps, sigma, u_lj(r_cut)]."""
    u, f_over_r = lennard_jones(r2, params)
    return u - params[2], f_over_r


@kernel(inline="always")
def repulsive_power(r2, params):
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


@kernel(cache=False)
def pair_forces(pair_fn, params, cutoff, positions, box, nbr_idx, nbr_count, half_list, forces, virial):
    """Add the forces and virial (W = sum f_ij (x) r_ij) of one pair potential; return its energy.

    With a full neighbour list (half_list False) each pair is visited once through j > i.
    """
    energy = 0.0
    w_xx = w_yy = w_zz = w_xy = w_xz = w_yz = 0.0   # pair virial is symmetric
    n = positions.shape[0]
    lx, ly, lz = box[0], box[1], box[2]
    ix, iy, iz = 1.0 / lx, 1.0 / ly, 1.0 / lz
    cutoff2 = cutoff * cutoff
    for i in range(n):
        xi, yi, zi = positions[i, 0], positions[i, 1], positions[i, 2]
        fxi = 0.0
        fyi = 0.0
        fzi = 0.0
        for jj in range(nbr_count[i]):
            j = nbr_idx[i, jj]
            if not half_list and j < i:
                continue
            dx = minimum_image(xi - positions[j, 0], lx, ix)
            dy = minimum_image(yi - positions[j, 1], ly, iy)
            dz = minimum_image(zi - positions[j, 2], lz, iz)
            r2 = dx * dx + dy * dy + dz * dz
            if r2 >= cutoff2:
                continue
            u, f_over_r = pair_fn(r2, params)
            energy += u
            fx = f_over_r * dx
            fy = f_over_r * dy
            fz = f_over_r * dz
            fxi += fx
            fyi += fy
            fzi += fz
            forces[j, 0] -= fx
            forces[j, 1] -= fy
            forces[j, 2] -= fz
            w_xx += fx * dx
            w_yy += fy * dy
            w_zz += fz * dz
            w_xy += fx * dy
            w_xz += fx * dz
            w_yz += fy * dz
        forces[i, 0] += fxi
        forces[i, 1] += fyi
        forces[i, 2] += fzi
    virial[0, 0] += w_xx
    virial[1, 1] += w_yy
    virial[2, 2] += w_zz
    virial[0, 1] += w_xy
    virial[1, 0] += w_xy
    virial[0, 2] += w_xz
    virial[2, 0] += w_xz
    virial[1, 2] += w_yz
    virial[2, 1] += w_yz
    return energy
