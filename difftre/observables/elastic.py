"""Isothermal elastic stiffness by the stress-fluctuation method (NVT).

C_ijkl = <C^B_ijkl> - (V/kT) (<sigma^B_ij sigma^B_kl> - <sigma^B_ij><sigma^B_kl>)
         + (N kT / V) (delta_ik delta_jl + delta_il delta_jk),

with the Born stress sigma^B = (1/V) dU/deps and Born stiffness
C^B = (1/V) d^2U/deps deps at eps = 0 (fixed fractional coordinates; strain and
energy contract as in ``stress.py``: symmetrised Green-Lagrange strain, so C^B
has the Voigt symmetries). With DiffTRe each ensemble average is reweighted
separately: average ``born_terms`` with ``weighted_average`` and combine the
averages with ``fluctuation_stiffness``. Units: kJ mol^-1 nm^-3
(1 GPa = 602.2137 kJ mol^-1 nm^-3).

The Born terms come from automatic differentiation of a smooth energy. A
potential whose force jumps at the cut-off (LJ shifted in energy only) has a
delta function in its second derivative that AD cannot see: the missing
impulsive term -(phi'(r_c) r_c^2 / V) <sum_pairs delta(r - r_c) n_i n_j n_k n_l>
biased C11 of an LJ crystal (rc = 2.5 sigma) by 1.8 % in
tests/test_stiffness_sampled.py, which measures and adds it. Use a potential
that goes smoothly to zero (force and energy) when stiffness matters, as the
models' priors and the DimeNet++ envelope do.
"""
import jax
import jax.numpy as jnp

from difftre.observables.geometry import volume
from difftre.observables.stress import deformed, strain_deformation, strained_energy, zero_strain


def born_terms(energy, params, state):
    """Per-state inputs of the stress-fluctuation formula.

    Args:
      energy: energy(params, state) -> U (kJ/mol), on the strain contract of ``stress.py``.
      params: the model's parameters; state: ``State`` (positions (N, dim) nm, box (dim,) nm).

    Returns:
      dict with "stress" sigma^B (dim, dim), "stress_product"
      sigma^B_ij sigma^B_kl (dim,)*4 and "stiffness" C^B (dim,)*4, kJ mol^-1 nm^-3.
    """
    grad = jax.grad(strained_energy(energy, params, state))

    def grad_twice(eps):
        value = grad(eps)
        return value, value

    hessian, dU = jax.jacfwd(grad_twice, has_aux=True)(zero_strain(state))
    v = volume(state.box)
    stress = dU / v
    return {"stress": stress, "stress_product": jnp.einsum("ij,kl->ijkl", stress, stress),
            "stiffness": hessian / v}


def born_stiffness(energy, params, state):
    """Born stiffness C^B = (1/V) d^2U/deps deps at eps = 0, (dim,)*4 kJ mol^-1 nm^-3."""
    return born_terms(energy, params, state)["stiffness"]


def static_derivatives(energy, params, state):
    """First and second derivatives at eps = 0, u = 0 of U(eps, u), the energy under the strain eps
    (``stress.py``'s contract) with internal displacements u (N, dim) of the unstrained positions:
    a dict of "d_eps" (dim, dim), "d_u" (N dim,), "eps_eps" (dim,)*4, "eps_u" (dim, dim, N dim) and
    "u_u" (N dim, N dim), kJ/mol per nm and per unit strain. Linear in the energy, so in the parameters
    of a linear model (what `static_stiffness` reads)."""
    n, dim = state.positions.shape

    def strained_displaced(eps, u):
        return energy(params, deformed(state._replace(positions=state.positions + u), strain_deformation(eps)))

    eps0, u0 = zero_strain(state), jnp.zeros_like(state.positions)
    d_eps, d_u = jax.grad(strained_displaced, argnums=(0, 1))(eps0, u0)
    (eps_eps, eps_u), (_, u_u) = jax.jacfwd(jax.grad(strained_displaced, argnums=(0, 1)), argnums=(0, 1))(eps0, u0)
    return {"d_eps": d_eps, "d_u": d_u.reshape(n * dim), "eps_eps": eps_eps,
            "eps_u": eps_u.reshape(dim, dim, n * dim), "u_u": u_u.reshape(n * dim, n * dim)}


def static_stiffness(energy, params, state, translation_stiffness=1.0, derivatives=None):
    """Stress and relaxed-ion stiffness of a crystal at 0 K, at a configuration in mechanical equilibrium
    (a perfect lattice: no force on any atom).

    With U(eps, u) as in `static_derivatives`,

      sigma = (1/V) dU/deps,   C = (1/V) [U_eps,eps - U_eps,u (U_u,u)^+ U_u,eps]

    (Lutsko 1989): the Born stiffness minus the relaxation of the atoms inside the strained cell, which
    is zero for a Bravais lattice and large for diamond's shear (C44). The pseudo-inverse is taken on the
    complement of the dim rigid translations, which U_u,eps cannot excite: (U_u,u + k P)^-1 with P the
    projector onto translations and k = ``translation_stiffness`` (kJ/mol/nm^2; any positive value gives
    the same C). ``derivatives``: those of `static_derivatives` when already at hand (energy and params
    are then not used).

    Returns a dict with "stress" (dim, dim), "stiffness" (dim,)*4 (kJ mol^-1 nm^-3),
    "lowest_internal_curvature": the smallest eigenvalue of U_u,u off the translations (kJ/mol/nm^2;
    positive for a stable lattice) and "largest_force": max |dU/du| (kJ/mol/nm; ~0 at equilibrium, which
    the formula assumes). Differentiable in params. Cost: the Hessian of N x dim coordinates.
    """
    n, dim = state.positions.shape
    d = static_derivatives(energy, params, state) if derivatives is None else derivatives
    u_u = d["u_u"]
    translations = jnp.tile(jnp.eye(dim, dtype=u_u.dtype), (n, 1)) / jnp.sqrt(n)   # (N dim, dim), orthonormal
    projector = translations @ translations.T
    relaxation = jnp.einsum("abi,ij,cdj->abcd", d["eps_u"], jnp.linalg.inv(u_u + translation_stiffness * projector),
                            d["eps_u"])
    internal_only = jnp.eye(n * dim, dtype=u_u.dtype) - projector
    internal = jnp.linalg.eigvalsh(internal_only @ u_u @ internal_only + projector * jnp.max(jnp.abs(u_u)))
    v = volume(state.box)
    return {"stress": d["d_eps"] / v, "stiffness": (d["eps_eps"] - relaxation) / v,
            "lowest_internal_curvature": internal[0], "largest_force": jnp.max(jnp.abs(d["d_u"]))}


def fluctuation_stiffness(averages, box, kT, n_particles):
    """Stiffness tensor C_ijkl (dim,)*4 from (reweighted) averages of ``born_terms``.

    Args:
      averages: dict as returned by ``born_terms``, each entry an ensemble average.
      box: (dim,) nm (NVT: the same for every state).
      kT: kJ/mol.
      n_particles: N.
    """
    v = volume(box)
    mean = averages["stress"]
    covariance = averages["stress_product"] - jnp.einsum("ij,kl->ijkl", mean, mean)
    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)
    kinetic = jnp.einsum("ik,jl->ijkl", eye, eye) + jnp.einsum("il,jk->ijkl", eye, eye)
    return averages["stiffness"] - v / kT * covariance + n_particles * kT / v * kinetic


def cubic_constants(stiffness):
    """(C11, C12, C44) of a cubic crystal, each averaged over its 3, 6 and 12 index patterns."""
    c = stiffness
    c11 = (c[0, 0, 0, 0] + c[1, 1, 1, 1] + c[2, 2, 2, 2]) / 3
    c12 = sum(c[i, i, j, j] for i in range(3) for j in range(3) if i != j) / 6
    shears = [(a, b, p, q) for i, j in ((0, 1), (0, 2), (1, 2))
              for a, b in ((i, j), (j, i)) for p, q in ((i, j), (j, i))]
    c44 = sum(c[idx] for idx in shears) / 12
    return jnp.stack([c11, c12, c44])
