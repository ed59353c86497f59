"""JAX versions of the fixed prior potentials (twins of the Numba terms in ``difftre.md``).

Each factory fixes the constants and the precision and returns
``energy(params, state) -> U`` (kJ/mol, a scalar in ``dtype``) on the state contract of
``models.state``: ``params`` is ignored (a prior has no learnable parameters; taking it
lets ``lambda p, s: model(p, s) + prior(p, s)`` compose), positions (N, dim) nm and box
(dim,) nm are cast to ``dtype``. Pair and many-body priors read ``state.neighbors`` (full
dense list (N, capacity) padded with N, covering the cut-off) and apply
``state.deformation``; external potentials ignore both. Pair terms count each pair once;
pairs at r >= cutoff are masked out.

Names and argument order are those of the Numba twins: ``md.lennard_jones(eps, sigma,
cutoff)``, ``md.repulsive(eps, sigma, cutoff, exponent)``, ``md.stillinger_weber(epsilon,
sigma, **constants)``, ``md.harmonic(k, center)``.
"""
import jax.numpy as jnp

from .geometry import neighbor_distances, pair_energy, state_arrays, wrap
from .precision import check_dtype


def harmonic(k, center, *, dtype):
    """U = sum_i 0.5 k |x_i - center|^2 with x_i wrapped into [0, L) (twin of ``md.harmonic``).

    k in kJ/mol/nm^2 (kT/length^2 for the toys), center a scalar or (dim,) vector (nm). The
    double-well prior 75 (x - 0.5)^2 (kT units) is k = 150, center = 0.5.
    """
    dtype = check_dtype(dtype)

    def energy(params, state):
        positions, box, _ = state_arrays(state, dtype)
        return 0.5 * k * jnp.sum((wrap(positions, box) - jnp.asarray(center, dtype)) ** 2)
    return energy


def _pair_prior(pair_fn, cutoff, dtype):
    """energy(params, state) = sum_{i<j, r < cutoff} pair_fn(r) over state.neighbors (kJ/mol)."""
    dtype = check_dtype(dtype)

    def energy(params, state):
        positions, box, deformation = state_arrays(state, dtype)
        return pair_energy(pair_fn, positions, box, state.neighbors, cutoff, deformation)
    return energy


def lennard_jones(epsilon, sigma, cutoff, *, shift=False, dtype):
    """U = sum_{i<j, r < cutoff} 4 epsilon [(sigma/r)^12 - (sigma/r)^6] (twin of ``md.lennard_jones``).

    epsilon in kJ/mol, sigma and cutoff in nm. Truncated, not shifted, by default;
    ``shift=True`` subtracts the value at the cut-off so the energy goes to zero there.
    """
    def lj(r):
        s6 = (sigma / r) ** 6
        return 4.0 * epsilon * (s6 * s6 - s6)
    offset = lj(cutoff) if shift else 0.0
    return _pair_prior(lambda r: lj(r) - offset, cutoff, dtype)


def repulsive(epsilon, sigma, cutoff, exponent=12, *, dtype):
    """U = sum_{i<j, r < cutoff} epsilon (sigma/r)^exponent (twin of ``md.repulsive``).

    epsilon in kJ/mol, sigma and cutoff in nm. The coarse-grained water prior is
    epsilon = 1 kJ/mol, sigma = 0.3165 nm, exponent 12.
    """
    return _pair_prior(lambda r: epsilon * (sigma / r) ** exponent, cutoff, dtype)


def stillinger_weber(epsilon, sigma, *, dtype, A=7.049556277, B=0.6022245584, p=4, q=0,
                     a=1.8, lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0):
    """Stillinger-Weber three-body potential (twin of ``md.stillinger_weber``; defaults: silicon's
    dimensionless constants).

    U = sum_{i<j} phi2(r_ij) + sum_i sum_{j<k; j,k != i} phi3(r_ij, r_ik, theta_jik),
    phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s)),
    phi3 = lam eps (cos theta_jik - cos_theta0)^2 exp(gamma s / (r_ij - a s)) exp(gamma s / (r_ik - a s)),
    both vanishing smoothly at the cut-off a s. epsilon in kJ/mol, sigma in nm (silicon:
    2.1683 eV, 0.20951 nm; the paper's diamond prior: 200 kJ/mol, 0.14 nm). The
    neighbour list must hold all neighbours within a * sigma.
    """
    dtype = check_dtype(dtype)
    cutoff = a * sigma

    def energy(params, state):
        positions, box, deformation = state_arrays(state, dtype)
        dr, r, mask = neighbor_distances(positions, box, state.neighbors, cutoff, deformation)
        s_r = sigma / r
        phi2 = A * epsilon * (B * s_r ** p - s_r ** q) * jnp.exp(sigma / (r - cutoff))
        g = jnp.where(mask, jnp.exp(gamma * sigma / (r - cutoff)), 0.0)          # (N, cap)
        cos = jnp.einsum("ijd,ikd->ijk", dr, dr) / (r[:, :, None] * r[:, None, :])
        weight = g[:, :, None] * g[:, None, :] * (1.0 - jnp.eye(r.shape[1], dtype=dtype))
        # each unordered (j, k) appears twice in the j != k sum, each pair twice in the full list
        return 0.5 * (jnp.sum(jnp.where(mask, phi2, 0.0))
                      + lam * epsilon * jnp.sum(weight * (cos - cos_theta0) ** 2))
    return energy
