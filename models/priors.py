"""JAX versions of the fixed prior potentials.

Each factory fixes the parameters and the precision and returns
``energy_fn(positions, box, neighbors=None) -> total energy`` (a scalar in ``dtype``),
with positions (N, dim) (nm; cast to ``dtype``), box (dim,) and the full dense
neighbour list (N, capacity) padded with N (unused by external potentials). Pair
terms count each pair once; pairs at r >= r_cut are masked out.
"""
import jax.numpy as jnp

from .geometry import neighbor_distances, pair_energy, wrap
from .precision import check_dtype


def _cast(dtype, *arrays):
    return tuple(jnp.asarray(a, dtype) for a in arrays)


def harmonic_external(k, center, *, dtype):
    """U = sum_i 0.5 k |x_i - center|^2 with x_i wrapped into [0, L).

    k in energy/length^2, center a scalar or (dim,) vector. The double-well prior
    75 (x - 0.5)^2 (kT units) is k = 150, center = 0.5.
    """
    dtype = check_dtype(dtype)

    def energy_fn(positions, box, neighbors=None):
        positions, box, c = _cast(dtype, positions, box, center)
        return 0.5 * k * jnp.sum((wrap(positions, box) - c) ** 2)
    return energy_fn


def lennard_jones(sigma, epsilon, r_cut, *, shift=False, dtype):
    """U = sum_{i<j, r < r_cut} 4 eps [(s/r)^12 - (s/r)^6] (kJ/mol, nm).

    Truncated, not shifted, by default; ``shift=True`` subtracts the value at r_cut so
    the energy goes to zero there.
    """
    dtype = check_dtype(dtype)

    def lj(r):
        s6 = (sigma / r) ** 6
        return 4.0 * epsilon * (s6 * s6 - s6)
    offset = lj(r_cut) if shift else 0.0

    def energy_fn(positions, box, neighbors, deformation=None):
        positions, box = _cast(dtype, positions, box)
        return pair_energy(lambda r: lj(r) - offset, positions, box, neighbors, r_cut, deformation)
    return energy_fn


def soft_sphere(sigma, epsilon, r_cut, exponent=12, *, dtype):
    """Repulsive power U = sum_{i<j, r < r_cut} eps (s/r)^exponent (kJ/mol, nm).

    The coarse-grained water prior is sigma = 0.3165 nm, epsilon = 1 kJ/mol, exponent 12.
    """
    dtype = check_dtype(dtype)

    def energy_fn(positions, box, neighbors, deformation=None):
        positions, box = _cast(dtype, positions, box)
        return pair_energy(lambda r: epsilon * (sigma / r) ** exponent, positions, box, neighbors, r_cut,
                           deformation)
    return energy_fn


def stillinger_weber(sigma, epsilon, *, dtype, A=7.049556277, B=0.6022245584, p=4, q=0,
                     a=1.8, lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0):
    """Stillinger-Weber three-body potential (defaults: silicon's dimensionless constants).

    U = sum_{i<j} phi2(r_ij) + sum_i sum_{j<k; j,k != i} phi3(r_ij, r_ik, theta_jik),
    phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s)),
    phi3 = lam eps (cos theta_jik - cos_theta0)^2 exp(gamma s / (r_ij - a s)) exp(gamma s / (r_ik - a s)),
    both vanishing smoothly at the cut-off a s. sigma in nm, epsilon in kJ/mol (silicon:
    2.1683 eV, 0.20951 nm; the paper's diamond prior: 200 kJ/mol, 0.14 nm). The
    neighbour list must hold all neighbours within a * sigma.
    """
    dtype = check_dtype(dtype)
    r_cut = a * sigma

    def energy_fn(positions, box, neighbors, deformation=None):
        positions, box = _cast(dtype, positions, box)
        dr, r, mask = neighbor_distances(positions, box, neighbors, r_cut, deformation)
        s_r = sigma / r
        phi2 = A * epsilon * (B * s_r ** p - s_r ** q) * jnp.exp(sigma / (r - r_cut))
        g = jnp.where(mask, jnp.exp(gamma * sigma / (r - r_cut)), 0.0)          # (N, cap)
        cos = jnp.einsum("ijd,ikd->ijk", dr, dr) / (r[:, :, None] * r[:, None, :])
        weight = g[:, :, None] * g[:, None, :] * (1.0 - jnp.eye(r.shape[1], dtype=dtype))
        # each unordered (j, k) appears twice in the j != k sum, each pair twice in the full list
        return 0.5 * (jnp.sum(jnp.where(mask, phi2, 0.0))
                      + lam * epsilon * jnp.sum(weight * (cos - cos_theta0) ** 2))
    return energy_fn
