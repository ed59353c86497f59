"""Weighted averages (chunking, rematerialisation, gradients), density profile, q, dynamics."""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from difftre.observables import (  # noqa: E402
    dense_neighbor_list, density_profile, mean_squared_displacement, nm2_per_ps_to_cm2_per_s, phonon_dos,
    pressure, self_diffusion, tetrahedral_order, tetrahedral_order_parameters, velocity_autocorrelation,
    weighted_average,
)
from difftre.models.state import State  # noqa: E402
from difftre.observables.geometry import neighbor_displacements, safe_norm  # noqa: E402

GRID = jnp.linspace(0.0, 1.0, 101)


# ---------------------------------------------------------------- density profile

def test_density_profile_normalised_periodic_and_explicit():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (300, 1))
    rho = density_profile(State(jnp.asarray(x), jnp.ones(1)), GRID)
    assert jnp.sum(rho[:-1]) * 0.01 == pytest.approx(1.0, abs=1e-6)  # periodic: 0 and 1 coincide
    assert float(rho[0]) == pytest.approx(float(rho[-1]), rel=1e-12)
    explicit = sum(np.exp(-(GRID[:, None] - x[:, 0] - image) ** 2 / (2 * 0.01**2)) for image in (-1, 0, 1))
    np.testing.assert_allclose(rho, explicit.mean(axis=1) / np.sqrt(2 * np.pi * 0.01**2), rtol=1e-10)
    unwrapped = density_profile(State(jnp.asarray(x + rng.integers(-3, 4, x.shape)), jnp.ones(1)), GRID)
    np.testing.assert_allclose(unwrapped, rho, rtol=1e-9)


def test_density_profile_along_other_axis():
    rng = np.random.default_rng(1)
    positions = rng.uniform(0, 2, (50, 3)) * np.array([1.0, 1.5, 1.0])
    box = jnp.array([2.0, 3.0, 2.0])
    grid = jnp.linspace(0, 3, 61)
    rho = density_profile(State(jnp.asarray(positions), box), grid, sigma=0.1, axis=1)
    one_d = density_profile(State(jnp.asarray(positions[:, 1:2]), box[1:2]), grid, sigma=0.1)
    np.testing.assert_allclose(rho, one_d)
    assert jnp.sum(rho[:-1]) * 0.05 == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- weighted averages

def external_energy(theta, x):
    """U_theta = sum_i sum_k theta_k cos(2 pi k x_i), in units of kT."""
    k = jnp.arange(1, theta.shape[0] + 1)
    return jnp.sum(theta * jnp.cos(2 * jnp.pi * k * x[:, :1]))


def pair_energy(theta, state):
    """Gaussian pair repulsion theta_0 exp(-(r / theta_1)^2) on the state contract energy(params, state)."""
    dr, mask = neighbor_displacements(state)
    r = safe_norm(dr, mask)
    return 0.5 * jnp.sum(jnp.where(mask, theta[0] * jnp.exp(-((r / theta[1]) ** 2)), 0.0))


def test_reweighted_density_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    states = jnp.asarray(rng.uniform(0, 1, (12, 60, 1)))
    box = jnp.ones(1)
    theta_ref = jnp.zeros(3)
    u_ref = jax.vmap(lambda s: external_energy(theta_ref, s))(states)
    target = density_profile(State(jnp.asarray(rng.uniform(0.2, 0.6, (500, 1))), box), GRID)

    @jax.jit
    def loss(theta):
        weights = jax.nn.softmax(-(jax.vmap(lambda s: external_energy(theta, s))(states) - u_ref))
        rho = weighted_average(lambda s: density_profile(State(s, box), GRID), states, weights, chunk_size=5)
        return jnp.mean((rho - target) ** 2)

    theta = jnp.array([0.3, -0.2, 0.1])
    grad = jax.grad(loss)(theta)
    h = 1e-6
    fd = [(loss(theta.at[i].add(h)) - loss(theta.at[i].add(-h))) / (2 * h) for i in range(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_uniform_weights_at_reference_give_plain_mean():
    rng = np.random.default_rng(3)
    states = jnp.asarray(rng.uniform(0, 1, (7, 20, 1)))
    plain = jnp.mean(jax.vmap(lambda s: density_profile(State(s, jnp.ones(1)), GRID))(states), axis=0)
    averaged = weighted_average(lambda s: density_profile(State(s, jnp.ones(1)), GRID), states, chunk_size=3)
    np.testing.assert_allclose(averaged, plain, rtol=1e-12)


def chunked_loss(chunk_size):
    """Loss on a pytree of observables (one depends on theta directly), pytree states, 10 states."""
    rng = np.random.default_rng(4)
    n_states, n, length = 10, 30, 1.5
    box = jnp.full(3, length)
    positions = rng.uniform(0, length, (n_states, n, 3))
    states = State(jnp.asarray(positions), jnp.broadcast_to(box, (n_states, 3)),
                   jnp.asarray(np.stack([dense_neighbor_list(p, box, 0.7, capacity=n - 1) for p in positions])))

    def loss(theta):
        u = jax.vmap(lambda s: pair_energy(theta, s))(states)
        weights = jax.nn.softmax(-u)

        def observables(s):
            return {"p": pressure(pair_energy, theta, s, kT=1.0),
                    "rho": density_profile(s, GRID, sigma=0.05, axis=2)}

        avg = weighted_average(observables, states, weights, chunk_size=chunk_size)
        return (avg["p"] - 3.0) ** 2 + jnp.sum(avg["rho"] ** 2)

    return loss


def test_chunking_gives_identical_values_and_gradients():
    theta = jnp.array([2.0, 0.3])
    results = [jax.jit(jax.value_and_grad(chunked_loss(c)))(theta) for c in (1, 4, None)]
    for value, grad in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-12)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-11)


def backward_temp_bytes(n_states, chunk_size):
    box = jnp.full(3, 1.0)

    def loss(theta, states):
        return weighted_average(lambda s: pressure(pair_energy, theta, State(s, box), kT=1.0), states,
                                chunk_size=chunk_size)

    compiled = jax.jit(jax.grad(loss)).lower(jnp.array([1.0, 0.2]), jnp.zeros((n_states, 64, 3))).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("backend reports no memory analysis")
    return analysis.temp_size_in_bytes


def test_rematerialised_backward_memory_does_not_grow_with_states():
    per_chunk = backward_temp_bytes(8, 2)
    assert backward_temp_bytes(64, 2) < 1.2 * per_chunk + 1e5
    assert backward_temp_bytes(64, None) > 4 * per_chunk  # all-at-once holds every state's intermediates


# ---------------------------------------------------------------- tetrahedral order

def diamond(cells, a):
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    basis = np.concatenate([fcc, fcc + 0.25])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return a * (grid + basis).reshape(-1, 3), np.full(3, cells * a)


def test_perfect_tetrahedra_give_q_one():
    positions, box = diamond(2, 0.357)  # bond 0.1546 nm, second shell 0.2524 nm
    nbrs = jnp.asarray(dense_neighbor_list(positions, box, 0.3))
    q, valid = tetrahedral_order_parameters(State(jnp.asarray(positions), jnp.asarray(box), nbrs))
    assert bool(jnp.all(valid))
    np.testing.assert_allclose(q, 1.0, atol=1e-12)


def test_ideal_gas_q_averages_to_zero():
    """Directions to the 4 nearest neighbours of ideal-gas particles are independent and uniform."""
    rng = np.random.default_rng(5)
    box = np.full(3, 3.0)
    frames = rng.uniform(0, 3.0, (12, 900, 3))
    states = State(jnp.asarray(frames), jnp.broadcast_to(jnp.asarray(box), (len(frames), 3)),
                   jnp.asarray(np.stack([dense_neighbor_list(p, box, 0.6, capacity=64) for p in frames])))
    q = weighted_average(tetrahedral_order, states)
    assert abs(q) < 0.04  # frame-to-frame standard deviation ~0.03: standard error ~0.01


def test_missing_neighbours_are_masked():
    positions, box = diamond(2, 0.357)
    positions = jnp.asarray(positions + np.random.default_rng(6).normal(scale=0.01, size=positions.shape))
    box = jnp.asarray(box)
    nbrs = dense_neighbor_list(positions, box, 0.2)
    nbrs[5, 2:] = len(positions)  # particle 5 lost neighbours: only 2 listed
    nbrs = jnp.asarray(nbrs)
    q, valid = tetrahedral_order_parameters(State(positions, box, nbrs))
    np.testing.assert_array_equal(valid, np.arange(len(positions)) != 5)
    mean_q = tetrahedral_order(State(positions, box, nbrs))
    assert mean_q == pytest.approx(float(jnp.mean(jnp.delete(q, 5))), rel=1e-12)
    assert 0.9 < mean_q < 1.0
    gradient = jax.grad(lambda x: tetrahedral_order(State(x, box, nbrs)))(positions)
    assert gradient.shape == positions.shape and bool(jnp.all(jnp.isfinite(gradient)))
    nbrs = nbrs.at[:, 3:].set(len(positions))  # nobody has 4 neighbours
    assert bool(jnp.isnan(tetrahedral_order(State(positions, box, nbrs))))
    with pytest.raises(ValueError, match="capacity"):
        tetrahedral_order(State(positions, box, nbrs[:, :3]))


# ---------------------------------------------------------------- dynamics

def test_msd_and_vacf_match_brute_force():
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.normal(size=(40, 5, 3)), axis=0)
    brute = [np.mean(np.sum((x[m:] - x[:len(x) - m]) ** 2, -1)) for m in range(40)]
    np.testing.assert_allclose(mean_squared_displacement(x), brute, rtol=1e-10, atol=1e-10)
    masses = rng.uniform(1, 2, 5)
    vacf = [np.mean(np.einsum("tia,tia,i->t", x[m:], x[:len(x) - m], masses)) for m in range(40)]
    np.testing.assert_allclose(velocity_autocorrelation(x, masses), vacf, rtol=1e-10)


def test_random_walk_recovers_diffusion_coefficient():
    rng = np.random.default_rng(8)
    d, dt = 0.25, 0.1  # nm^2/ps, ps
    steps = rng.normal(scale=np.sqrt(2 * d * dt), size=(2000, 400, 3))
    positions = np.cumsum(steps, axis=0) + rng.uniform(0, 3, (400, 3))
    estimate = self_diffusion(positions, dt, fit_window=(1.0, 20.0))
    assert estimate == pytest.approx(d, rel=0.03)
    assert nm2_per_ps_to_cm2_per_s(estimate) == pytest.approx(1e-2 * estimate)
    with pytest.raises(ValueError):
        self_diffusion(positions, dt, fit_window=(1.0, 1.05))


def test_phonon_dos_of_harmonic_oscillators_peaks_at_their_frequency():
    rng = np.random.default_rng(9)
    nu, dt = 7.3, 0.005  # THz, ps
    t = dt * np.arange(4000)[:, None, None]
    velocities = np.cos(2 * np.pi * nu * t + rng.uniform(0, 2 * np.pi, (1, 20, 3)))
    frequency, dos = phonon_dos(velocities, dt, masses=12.011)
    assert frequency[-1] == pytest.approx(1 / (2 * dt), rel=1e-3)
    assert abs(frequency[np.argmax(dos)] - nu) <= frequency[1]
    assert np.sum(dos) * frequency[1] == pytest.approx(1.0)
