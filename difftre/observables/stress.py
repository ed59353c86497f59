"""Stress tensor and pressure of any (many-body) energy under periodic boundaries.

Energy contract
---------------
Strain-dependent observables take a model ``energy(params, state)`` (kJ/mol) on
the state contract of ``difftre.models.state``: the energy of a state whose
``deformation`` is F is that of the configuration in which every minimum-image
displacement dr = r_i - r_j is replaced by F dr. Energies built from
minimum-image displacements (pair, angular, spline, message-passing models and
the priors) meet it through ``models.geometry.neighbor_distances``. Energies that
depend on absolute positions (external fields) have no strain derivative here.

Strain
------
An affine strain eps (dim, dim) maps x_a -> x_a + eps_ab x_b, positions and
box together at fixed fractional coordinates. Deforming the minimum-image
vectors is the same thing for infinitesimal strain, and it allows shear of an
orthorhombic box given by its edge lengths. The strain is symmetrised,
eta = (eps + eps^T) / 2, and applied as deformation = I + eta - eta^2 / 2, whose
metric F^T F = I + 2 eta + O(eta^3) makes eta the Green-Lagrange strain: first
derivatives at eps = 0 are those of the linear strain (the virial), second
derivatives are the Born term of the stress-fluctuation formula (``elastic.py``).

Sign convention (docs/DESIGN.md): stress
sigma = -(1/V) sum_i m_i v_i (x) v_i + (1/V) dU/deps, pressure p = -tr(sigma)/dim.
The derivative at fixed fractional coordinates already contains the full
configurational virial; no separate sum r_i (x) grad_i U is added (that would
double count, see docs/paper-setup.md section 4).

Units: nm, ps, u, kJ/mol; stress and pressure in kJ mol^-1 nm^-3
(1 bar = 0.0602214 kJ mol^-1 nm^-3).
"""
import jax
import jax.numpy as jnp

from difftre.models.state import deformed, strain_deformation  # noqa: F401  (re-exported)
from difftre.observables.geometry import volume


def strained_energy(energy, params, state):
    """The function eps (dim, dim) -> U of the state strained by eps (see module docstring)."""
    return lambda eps: energy(params, deformed(state, strain_deformation(eps)))


def zero_strain(state):
    """eps = 0 (dim, dim) in the dtype of the state's positions."""
    dim = state.positions.shape[1]
    return jnp.zeros((dim, dim), dtype=state.positions.dtype)


def born_stress(energy, params, state):
    """Born (configurational) stress sigma^B = (1/V) dU/deps at eps = 0, (dim, dim) kJ mol^-1 nm^-3."""
    dU = jax.grad(strained_energy(energy, params, state))(zero_strain(state))
    return dU / volume(state.box)


def kinetic_tensor(velocities, masses):
    """sum_i m_i v_i (x) v_i (kJ/mol); velocities (N, dim) nm/ps, masses scalar or (N,) u."""
    masses = jnp.broadcast_to(masses, velocities.shape[:1])
    return jnp.einsum("i,ia,ib->ab", masses, velocities, velocities)


def stress_tensor(energy, params, state, masses=None, kT=None):
    """Instantaneous stress sigma = -(1/V) K + (1/V) dU/deps, (dim, dim) kJ mol^-1 nm^-3.

    The kinetic tensor K is sum_i m_i v_i (x) v_i when the state has
    ``velocities`` (and ``masses`` are given), the velocities used as given (remove a centre-of-mass
    drift beforehand if wanted). Without velocities K = N kT I, its canonical
    average (equipartition), which gives the same ensemble average with less
    noise.

    Args:
      energy: energy(params, state) -> U (kJ/mol).
      params: the model's parameters (differentiated through when the stress is a target).
      state: ``State``; its velocities (N, dim) nm/ps, or None.
      masses: scalar or (N,) u; required with velocities.
      kT: kJ/mol; required without velocities.
    """
    n, dim = state.positions.shape
    if state.velocities is None:
        if kT is None:
            raise ValueError("stress_tensor needs a state with velocities and masses, or kT")
        kin = n * kT * jnp.eye(dim, dtype=state.positions.dtype)
    else:
        if masses is None:
            raise ValueError("stress_tensor needs masses together with velocities")
        kin = kinetic_tensor(state.velocities, masses)
    return born_stress(energy, params, state) - kin / volume(state.box)


def pressure(energy, params, state, masses=None, kT=None):
    """Instantaneous pressure -tr(sigma)/dim (kJ mol^-1 nm^-3); arguments as ``stress_tensor``."""
    sigma = stress_tensor(energy, params, state, masses, kT)
    return -jnp.trace(sigma) / state.positions.shape[1]
