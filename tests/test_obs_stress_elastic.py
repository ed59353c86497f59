"""Stress, pressure and Born / fluctuation stiffness against explicit strains of positions and box."""
import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from difftre.observables import (  # noqa: E402
    born_stiffness, born_stress, born_terms, cubic_constants, dense_neighbor_list, fluctuation_stiffness,
    pressure, stress_tensor, weighted_average,
)
from difftre.models.state import State  # noqa: E402
from difftre.observables.geometry import neighbor_displacements, safe_norm  # noqa: E402
from difftre.observables.structure import neighbor_pairs, triplet_angles  # noqa: E402

KT = 0.0083144626 * 300.0


def fcc(cells, a, noise=0.0, seed=0):
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    positions = a * (grid + basis).reshape(-1, 3)
    positions += np.random.default_rng(seed).normal(scale=noise, size=positions.shape)
    return jnp.asarray(positions), jnp.full(3, cells * a)


def lj_phi(r, eps=1.0, sigma=0.315, r_cut=0.75):
    """Lennard-Jones times a C2 envelope (1 - (r/rc)^2)^3 that vanishes at r_cut."""
    inside = r < r_cut
    envelope = jnp.where(inside, 1 - (r / r_cut) ** 2, 0.0) ** 3
    return 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6) * envelope


def lj_core(dr, mask, eps=1.0, sigma=0.315):
    """Pair energy from displacement vectors (N, M, dim) of a full list (each pair twice)."""
    return 0.5 * jnp.sum(jnp.where(mask, lj_phi(safe_norm(dr, mask), eps, sigma), 0.0))


def three_body_core(dr, mask, lam=5.0, gamma=0.05, a=0.4):
    """Stillinger-Weber-like angular energy sum_i sum_{j<k} lam g(r_ij) g(r_ik) (cos + 1/3)^2."""
    r = safe_norm(dr, mask)
    inside = mask & (r < a)
    g = jnp.where(inside, jnp.exp(gamma / jnp.where(inside, r - a, -1.0)), 0.0)
    j, k = neighbor_pairs(dr.shape[1])
    theta = triplet_angles(dr[:, j], dr[:, k], mask[:, j] & mask[:, k])
    return lam * jnp.sum(g[:, j] * g[:, k] * (jnp.cos(theta) + 1 / 3) ** 2)


def with_deformation(core):
    """An energy on the state contract energy(params, state) (params unused), deformed by state.deformation."""
    def energy(params, state):
        return core(*neighbor_displacements(state))
    return energy


def zero_energy(params, state):
    """U = 0, still a function of the positions."""
    return 0.0 * jnp.sum(state.positions)


@functools.partial(jax.jit, static_argnums=0)
def explicitly_strained_energy(core, positions, box, deformation):
    """Energy after mapping positions and box by ``deformation`` (triclinic cell, all pairs)."""
    cell = deformation @ jnp.diag(box)  # edge vectors as columns
    fractional = positions @ deformation.T @ jnp.linalg.inv(cell).T
    ds = fractional[:, None] - fractional[None, :]
    dr = (ds - jnp.round(ds)) @ cell.T
    return core(dr, ~jnp.eye(len(positions), dtype=bool))


CASES = {
    "pair": (lj_core, fcc(4, 0.5, noise=0.02, seed=1), 0.85),
    "three_body": (lambda dr, m: lj_core(dr, m) + three_body_core(dr, m), fcc(3, 0.5, noise=0.03, seed=2), 0.8),
}


@pytest.mark.parametrize("case", CASES)
def test_born_stress_equals_finite_difference_strain(case):
    core, (positions, box), cutoff = CASES[case]
    nbrs = jnp.asarray(dense_neighbor_list(positions, box, cutoff))
    ours = born_stress(with_deformation(core), None, State(positions, box, nbrs)) * jnp.prod(box)
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            step = h * jnp.eye(3)[a][:, None] * jnp.eye(3)[b][None, :]
            fd[a, b] = (explicitly_strained_energy(core, positions, box, jnp.eye(3) + step)
                        - explicitly_strained_energy(core, positions, box, jnp.eye(3) - step)) / (2 * h)
    off_diagonal = ~np.eye(3, dtype=bool)
    assert np.abs(fd[off_diagonal]).min() > 1e-3 * np.abs(fd).max()  # shear terms are tested too
    np.testing.assert_allclose(ours, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


def test_pair_stress_equals_pair_virial():
    """sigma = -(1/V) sum_pairs f_ij (x) r_ij for pair forces (docs/DESIGN.md sign convention)."""
    positions, box = fcc(4, 0.48, noise=0.02, seed=3)  # compressed: positive pressure
    dr, mask = neighbor_displacements(State(positions, box))
    r = safe_norm(dr, mask)
    dphi = jnp.where(mask, jax.vmap(jax.vmap(jax.grad(lj_phi)))(r), 0.0)
    force = -(dphi / r)[..., None] * dr  # force on i due to j
    virial = 0.5 * jnp.einsum("ija,ijb->ab", force, dr)
    sigma = stress_tensor(with_deformation(lj_core), None, State(positions, box), kT=0.0)
    np.testing.assert_allclose(sigma, -virial / jnp.prod(box), rtol=1e-10, atol=1e-12)
    assert pressure(with_deformation(lj_core), None, State(positions, box), kT=0.0) > 0


def test_ideal_gas_kinetic_and_equipartition_terms():
    rng = np.random.default_rng(4)
    n, box, mass = 50, jnp.array([2.0, 3.0, 4.0]), 18.0
    positions = jnp.asarray(rng.uniform(0, 2, (n, 3)))
    volume = 24.0
    at_rest = State(positions, box)
    assert float(pressure(zero_energy, None, at_rest, kT=KT)) == pytest.approx(float(n * KT / volume), rel=1e-14)
    velocities = jnp.asarray(rng.normal(scale=np.sqrt(KT / mass), size=(n, 3)))
    moving = State(positions, box, velocities=velocities)
    sigma = stress_tensor(zero_energy, None, moving, masses=mass)
    np.testing.assert_allclose(sigma, -mass * velocities.T @ velocities / volume, rtol=1e-14)
    p = pressure(zero_energy, None, moving, masses=jnp.full(n, mass))
    assert float(p) == pytest.approx(float(mass * jnp.sum(velocities**2) / (3 * volume)), rel=1e-14)
    with pytest.raises(ValueError):
        stress_tensor(zero_energy, None, at_rest)        # no velocities and no kT
    with pytest.raises(ValueError):
        stress_tensor(zero_energy, None, moving)         # velocities without masses


def cholesky_deformation(eta):
    """A deformation F with F^T F = I + 2 eta (differs from the observables' choice by a rotation)."""
    return jnp.linalg.cholesky(jnp.eye(3) + 2 * eta).T


def test_born_stiffness_of_fcc_lj_crystal():
    positions, box = fcc(4, 0.5)  # perfect crystal, 256 atoms
    nbrs = jnp.asarray(dense_neighbor_list(positions, box, 0.8))
    ours = np.asarray(born_stiffness(with_deformation(lj_core), None, State(positions, box, nbrs)))
    volume = float(jnp.prod(box))

    # analytic pair Born term (1/V) sum_pairs (phi'' - phi'/r) r_a r_b r_c r_d / r^2
    dr, mask = neighbor_displacements(State(positions, box, nbrs))
    r = safe_norm(dr, mask)
    d1 = jax.vmap(jax.vmap(jax.grad(lj_phi)))(r)
    d2 = jax.vmap(jax.vmap(jax.grad(jax.grad(lj_phi))))(r)
    coefficient = jnp.where(mask, (d2 - d1 / r) / r**2, 0.0)
    analytic = 0.5 * jnp.einsum("ij,ija,ijb,ijc,ijd->abcd", coefficient, dr, dr, dr, dr) / volume
    np.testing.assert_allclose(ours, analytic, rtol=1e-9, atol=1e-9 * np.abs(analytic).max())

    # finite-difference second derivative of the explicitly strained energy (symmetrised strain)
    def energy(eps):
        return explicitly_strained_energy(lj_core, positions, box, cholesky_deformation(0.5 * (eps + eps.T)))

    h = 1e-4
    for (a, b, c, d) in [(0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 0, 1), (2, 1, 1, 2), (0, 0, 1, 2)]:
        e1 = h * jnp.zeros((3, 3)).at[a, b].set(1)
        e2 = h * jnp.zeros((3, 3)).at[c, d].set(1)
        fd = (energy(e1 + e2) - energy(e1 - e2) - energy(-e1 + e2) + energy(-e1 - e2)) / (4 * h * h)
        assert ours[a, b, c, d] * volume == pytest.approx(float(fd), abs=1e-5 * np.abs(ours).max() * volume)

    c11, c12, c44 = np.asarray(cubic_constants(ours))
    assert c11 > c12 > 0 and c44 > 0
    np.testing.assert_allclose(ours, ours.transpose(1, 0, 2, 3), atol=1e-9 * c11)  # Voigt symmetries
    np.testing.assert_allclose(ours, ours.transpose(2, 3, 0, 1), atol=1e-9 * c11)
    np.testing.assert_allclose(cubic_constants(ours), [ours[0, 0, 0, 0], ours[0, 0, 1, 1], ours[0, 1, 0, 1]],
                               rtol=1e-9)


def test_fluctuation_stiffness_combines_separately_reweighted_averages():
    core, (positions, box), cutoff = CASES["pair"]
    nbrs = jnp.asarray(dense_neighbor_list(positions, box, cutoff))  # valid for the perturbed states
    energy_fn = with_deformation(core)
    rng = np.random.default_rng(5)
    states = jnp.asarray(positions + rng.normal(scale=0.01, size=(6,) + positions.shape))
    weights = jnp.asarray(rng.dirichlet(np.ones(6)))
    n = positions.shape[0]
    averages = weighted_average(lambda s: born_terms(energy_fn, None, State(s, box, nbrs)), states, weights,
                                chunk_size=4)
    ours = fluctuation_stiffness(averages, box, KT, n)

    volume = float(jnp.prod(box))
    stresses = jax.vmap(lambda s: born_stress(energy_fn, None, State(s, box, nbrs)))(states)
    mean = np.einsum("s,sij->ij", weights, stresses)
    deviation = stresses - mean
    covariance = np.einsum("s,sij,skl->ijkl", weights, deviation, deviation)
    born = np.einsum("s,sijkl->ijkl", weights,
                     jax.vmap(lambda s: born_stiffness(energy_fn, None, State(s, box, nbrs)))(states))
    eye = np.eye(3)
    kinetic = n * KT / volume * (np.einsum("ik,jl->ijkl", eye, eye) + np.einsum("il,jk->ijkl", eye, eye))
    np.testing.assert_allclose(ours, born - volume / KT * covariance + kinetic, rtol=1e-8, atol=1e-8)


def test_ideal_gas_stiffness_is_kinetic():
    positions, box = fcc(2, 0.5)
    averages = weighted_average(lambda s: born_terms(zero_energy, None, State(s, box)), positions[None])
    density_kt = positions.shape[0] * KT / jnp.prod(box)
    np.testing.assert_allclose(cubic_constants(fluctuation_stiffness(averages, box, KT, positions.shape[0])),
                               [2 * density_kt, 0.0, density_kt], rtol=1e-14, atol=1e-14)


def test_reweighted_pressure_gradient_matches_finite_differences():
    """The pressure depends on theta directly and through the weights."""
    positions, box = fcc(3, 0.5)
    rng = np.random.default_rng(6)
    states = jnp.asarray(positions + rng.normal(scale=0.02, size=(5,) + positions.shape))
    beta = 1 / KT

    def energy(theta, state):
        return lj_core(*neighbor_displacements(state), eps=theta[0], sigma=theta[1])

    theta_ref = jnp.array([1.0, 0.315])
    u_ref = jax.vmap(lambda s: energy(theta_ref, State(s, box)))(states)

    @jax.jit
    def loss(theta):
        u = jax.vmap(lambda s: energy(theta, State(s, box)))(states)
        weights = jax.nn.softmax(-beta * (u - u_ref))
        p = weighted_average(lambda s: pressure(energy, theta, State(s, box), kT=KT), states, weights, chunk_size=2)
        return (p - 10.0) ** 2

    theta = jnp.array([1.05, 0.31])
    grad = jax.grad(loss)(theta)
    h = 1e-6
    fd = [(loss(theta.at[i].add(h)) - loss(theta.at[i].add(-h))) / (2 * h) for i in range(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_model_stress_equals_strained_configuration():
    """The models' state.deformation is the strain contract: the stress of DimeNet++ + SW prior
    equals a finite-difference derivative of the energy of explicitly strained positions and box."""
    from difftre.models import dimenet, graph as graph_module, priors
    from difftre.models.geometry import dense_neighbor_list
    from difftre.observables.stress import stress_tensor
    rng = np.random.default_rng(3)
    a = 0.357
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                      [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    cells = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    positions = ((cells + basis[None]) * a).reshape(-1, 3) + rng.normal(0, 0.005, (64, 3))
    box = np.full(3, 2 * a)
    neighbors = jnp.asarray(dense_neighbor_list(positions, box, 0.3))
    state = State(jnp.asarray(positions), jnp.asarray(box), neighbors)
    params = dimenet.init_dimenet(jax.random.PRNGKey(0), jnp.float64, embed_size=8, out_embed_size=8,
                                  int_embed_size=4, basis_embed_size=4, n_interactions=1)
    model = dimenet.dimenet(0.2, *graph_module.graph_capacities(state, 0.2))
    prior = priors.stillinger_weber(200.0, 0.14, dtype=np.float64)   # epsilon (kJ/mol), sigma (nm)

    def energy(p, s):
        return model(p, s) + prior(p, s)

    sigma = stress_tensor(energy, params, state, kT=0.0)
    h = 1e-6
    for axis in range(3):
        energies = []
        for sign in (1, -1):
            scale = np.ones(3)
            scale[axis] += sign * h
            energies.append(float(energy(params, State(jnp.asarray(positions * scale), jnp.asarray(box * scale),
                                                       neighbors))))
        dU = (energies[0] - energies[1]) / (2 * h)
        assert float(sigma[axis, axis]) == pytest.approx(dU / np.prod(box), rel=1e-6)
