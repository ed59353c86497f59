"""The windowed density on a uniform grid equals the full Gaussian sum."""
import jax
import jax.numpy as jnp
import numpy as np

from difftre.models.state import State
from difftre.observables.density import density_profile, density_profile_uniform

jax.config.update("jax_enable_x64", True)


def test_windowed_density_equals_full_sum():
    rng = np.random.default_rng(0)
    edges = [[0.0], [1.0], [0.999999], [0.5], [0.005], [0.995], [2.0], [-1e-9], [0.01], [0.99]]
    x = jnp.asarray(np.concatenate([rng.uniform(-3, 4, (4990, 1)), edges]))   # unwrapped, on the grid, at 0 and L
    for length, n_points, sigma in [(1.0, 101, 0.01), (2.5, 51, 0.07)]:
        box = jnp.array([length])
        state = State(x * length, box)
        full = density_profile(state, jnp.linspace(0, length, n_points), sigma)
        windowed = density_profile_uniform(state, length, n_points, sigma)
        np.testing.assert_allclose(windowed, full, rtol=0, atol=1e-12 * float(full.max()))
