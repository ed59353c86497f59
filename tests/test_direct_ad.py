"""The direct-AD baseline (`difftre.direct_ad`) and the speed-up study (`difftre bench grad`).

The JAX BAOAB must be the Numba integrator (friction 0: velocity Verlet step for step),
sample the right distribution (harmonic: <x^2> = kT/k exactly for BAOAB), and its
gradient must equal finite differences of the same deterministic loss.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difftre import bridge, direct_ad, md, speedup
from difftre.models import mlp, priors
from difftre.observables.density import density_profile_uniform

jax.config.update("jax_enable_x64", True)

K = 150.0   # the double-well prior's spring (kT / length^2)


def mlp_and_prior(params, state):
    return mlp.mlp_external_energy(params, state) + priors.harmonic(K, [0.5], dtype=np.float64)(params, state)


@pytest.fixture(scope="module")
def setup():
    params = mlp.init_mlp(jax.random.PRNGKey(3), [1, 16, 16, 1], np.float64)
    rng = np.random.default_rng(3)
    positions = 0.5 + np.sqrt(1.0 / K) * rng.standard_normal((20, 1))
    velocities = rng.standard_normal((20, 1))
    return params, positions, velocities, np.array([1.0])


def test_jax_baoab_without_friction_is_the_numba_velocity_verlet(setup):
    params, positions, velocities, box = setup
    dt, stride, n_states = 1e-3, 25, 4
    states = direct_ad.baoab_trajectory(mlp_and_prior, params, jnp.asarray(positions), jnp.asarray(velocities),
                                        jnp.asarray(box), jax.random.PRNGKey(0), dt, 1.0, 0.0, 1.0, n_states, stride)
    ff = md.ForceField([bridge.jax_force_term(mlp.mlp_external_energy, params), md.harmonic(K, [0.5])])
    sampler = md.Sampler(ff, md.VelocityVerlet(dt=dt))
    state = sampler.init_state(positions, box, 1.0, seed=0, velocities=velocities)
    trajectory, _ = sampler.run(state, 0, n_states, stride)
    np.testing.assert_allclose(np.asarray(states), trajectory.positions, rtol=0, atol=1e-11)


def test_jax_baoab_samples_the_harmonic_boltzmann_variance():
    k, kT, n = 150.0, 1.0, 4000
    energy = lambda params, state: 0.5 * k * jnp.sum((state.positions - 0.5) ** 2)
    rng = np.random.default_rng(0)
    x0 = 0.5 + np.sqrt(kT / k) * rng.standard_normal((n, 1))
    v0 = np.sqrt(kT) * rng.standard_normal((n, 1))
    # dt 0.02 is a large step (omega dt = 0.24): BAOAB's configurational variance stays exact
    states = direct_ad.baoab_trajectory(energy, None, jnp.asarray(x0), jnp.asarray(v0), jnp.ones(1),
                                        jax.random.PRNGKey(1), 0.02, kT, 2.0, 1.0, 100, 10)
    variance = float(jnp.mean((states[20:] - 0.5) ** 2))
    # 80 states x 4000 particles, states a few correlation times apart: relative error ~ 1%
    assert variance == pytest.approx(kT / k, rel=0.04)


def test_direct_ad_gradient_equals_finite_differences(setup):
    params, positions, velocities, box = setup
    target = jnp.full(11, 1.0)
    observable = lambda x: density_profile_uniform(x, 1.0, 11, 0.05)

    def loss(p):
        return direct_ad.direct_ad_loss(mlp_and_prior, observable, target, p, jnp.asarray(positions),
                                        jnp.asarray(velocities), jnp.asarray(box), jax.random.PRNGKey(2), 1e-3,
                                        1.0, 0.1, 1.0, 1, 3, 20)

    gradient = jax.grad(loss)(params)
    direction = jax.tree.map(lambda leaf: jnp.asarray(np.random.default_rng(leaf.size).standard_normal(leaf.shape)),
                             params)
    h = 1e-5
    shifted = lambda s: loss(jax.tree.map(lambda p, d: p + s * d, params, direction))
    finite_difference = (shifted(h) - shifted(-h)) / (2 * h)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(gradient), jax.tree.leaves(direction)))
    assert float(analytic) == pytest.approx(float(finite_difference), rel=1e-6)


def test_fit_mlp_reproduces_a_function():
    params = mlp.init_mlp(jax.random.PRNGKey(0), [1, 32, 32, 1], np.float64)
    x = jnp.linspace(0.0, 1.0, 101)[:, None]
    y = jnp.sin(2 * jnp.pi * x)
    residual_before = float(jnp.sqrt(jnp.mean((mlp.mlp_apply(params, x) - y) ** 2)))
    fitted, residual = mlp.fit_mlp(params, x, y, steps=3000, learning_rate=3e-3)
    assert residual == pytest.approx(float(jnp.sqrt(jnp.mean((mlp.mlp_apply(fitted, x) - y) ** 2))))
    assert residual < 0.05 < residual_before


def test_speedup_study_reports_both_methods_at_both_parameter_sets():
    result = speedup.run(n_particles=20, n_states=2, lengths=(2, 3), repeats=1, norm_particles=10, draws=2,
                         progress=lambda line: None)
    for key in ("grad_speedup", "update_speedup", "difftre_grad_temp_bytes", "direct_ad_grad_temp_bytes"):
        assert result[key] > 0
    assert result["fitted_rms_residual_kT"] < 0.05
    for study in (result["gradient_norms"], result["gradient_norms_fitted"]):
        assert (study["particles"], study["draws"]) == (10, 2)
        assert [row["retained_states"] for row in study["rows"]] == [2, 3]
        for row in study["rows"]:
            for method in ("difftre_grad_norm", "direct_ad_grad_norm"):
                norms = row[method]
                assert len(norms["draws"]) == 2 and all(np.isfinite(norms["draws"]))
                assert norms["min"] <= norms["median"] <= norms["max"]
        medians = [row["difftre_grad_norm"]["median"] for row in study["rows"]]
        assert study["difftre_median_max_over_min"] == pytest.approx(max(medians) / min(medians))
    # independent draws: each has its own start and noise, so their norms differ
    first = result["gradient_norms_fitted"]["rows"][0]["direct_ad_grad_norm"]["draws"]
    assert first[0] != first[1]


def test_boltzmann_sample_has_the_harmonic_mean_and_variance():
    k, n = 150.0, 200_000
    x = speedup._boltzmann_sample(np.random.default_rng(0), lambda y: 0.5 * k * (y - 0.5) ** 2, n)
    assert x.shape == (n, 1)
    # standard errors: sqrt(var / n) = 1.8e-4 for the mean, var * sqrt(2 / n) = 2.1e-5 for the variance
    assert float(x.mean()) == pytest.approx(0.5, abs=1e-3)
    assert float(x.var()) == pytest.approx(1.0 / k, abs=1.5e-4)
