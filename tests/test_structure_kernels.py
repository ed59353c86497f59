"""rdf_of_trajectory / adf_of_trajectory (Numba, difftre.kernels.structure) against jax.vmap(rdf / adf)."""
import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from difftre.experiments.cg_water import starting_configuration  # noqa: E402
from difftre.observables import (  # noqa: E402
    adf, adf_list_cutoff, adf_of_trajectory, bin_centers, rdf, rdf_list_cutoff, rdf_of_trajectory,
)
from difftre.states import stored_states  # noqa: E402

RDF_CENTERS = bin_centers(0, 1, 300)        # nm, the paper's CG-water setup
ADF_CENTERS = bin_centers(0, np.pi, 200)    # rad


@pytest.fixture(scope="module")
def water_frames():
    """The packaged 901-bead water and 3 copies with 0.01 nm random displacements: (4, 901, 3) nm, box."""
    positions, box = starting_configuration()
    positions = np.asarray(positions, np.float64)
    noise = np.random.default_rng(7).normal(0.0, 0.01, (3,) + positions.shape)
    return np.concatenate([positions[None], positions + noise]), np.asarray(box, np.float64)


@pytest.fixture(scope="module")
def dilute_frames():
    """27 particles in a 2.5 nm box: a lattice without any pair within the list cut-offs, a sparse gas
    (few neighbours, some isolated), a dense cluster and the same cluster straddling the box faces
    (unwrapped)."""
    rng = np.random.default_rng(11)
    length = 2.5
    lattice = (np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * length / 3
    gas = rng.uniform(0.0, 1.5, (27, 3))
    cluster = rng.uniform(0.0, 0.9, (27, 3))
    return np.stack([lattice, gas, cluster, cluster - 0.45]), np.full(3, length)


def jax_rdfs(frames, box):
    states = stored_states(frames, box, rdf_list_cutoff(RDF_CENTERS))
    return np.asarray(jax.vmap(lambda state: rdf(state, RDF_CENTERS))(states))


def jax_adfs(frames, box):
    states = stored_states(frames, box, adf_list_cutoff())
    return np.asarray(jax.vmap(lambda state: adf(state, ADF_CENTERS))(states))


@pytest.mark.parametrize("system", ["water_frames", "dilute_frames"])
def test_rdf_of_trajectory_equals_vmapped_rdf(system, request):
    frames, box = request.getfixturevalue(system)
    ours = rdf_of_trajectory(frames, box, RDF_CENTERS)
    assert ours.shape == (len(frames), RDF_CENTERS.size) and ours.dtype == np.float64
    assert np.any(ours > 0)
    np.testing.assert_allclose(ours, jax_rdfs(frames, box), rtol=1e-10, atol=0)


@pytest.mark.parametrize("system", ["water_frames", "dilute_frames"])
def test_adf_of_trajectory_equals_vmapped_adf(system, request):
    frames, box = request.getfixturevalue(system)
    ours = adf_of_trajectory(frames, box, ADF_CENTERS)
    np.testing.assert_allclose(ours, jax_adfs(frames, box), rtol=1e-10, atol=0, equal_nan=True)
    if system == "dilute_frames":   # the lattice state has no triplet: NaN, as adf; the others are normalised
        assert np.all(np.isnan(ours[0]))
        assert np.all(np.isfinite(ours[1:]))
        np.testing.assert_allclose(ours[1:].sum(axis=1) * (ADF_CENTERS[1] - ADF_CENTERS[0]), 1.0, rtol=1e-12)


def test_nondefault_smoothing_and_cutoff_match_jax(dilute_frames):
    frames, box = dilute_frames
    centers = bin_centers(0.1, 0.8, 50)
    sigma = 0.03        # several bins: a wider window
    states = stored_states(frames, box, rdf_list_cutoff(centers, sigma))
    expected = np.asarray(jax.vmap(lambda state: rdf(state, centers, sigma))(states))
    np.testing.assert_allclose(rdf_of_trajectory(frames, box, centers, sigma), expected, rtol=1e-10, atol=0)
    states = stored_states(frames, box, adf_list_cutoff(0.4, 0.02))
    expected = np.asarray(jax.vmap(lambda state: adf(state, ADF_CENTERS, 0.05, 0.4, 0.02))(states))
    np.testing.assert_allclose(adf_of_trajectory(frames, box, ADF_CENTERS, 0.05, 0.4, 0.02), expected,
                               rtol=1e-10, atol=0, equal_nan=True)


def test_float32_frames_are_computed_in_float64(water_frames):
    frames, box = water_frames
    single = frames[:2].astype(np.float32)
    for of_trajectory, centers in ((rdf_of_trajectory, RDF_CENTERS), (adf_of_trajectory, ADF_CENTERS)):
        from_single = of_trajectory(single, box, centers)
        assert from_single.dtype == np.float64
        np.testing.assert_array_equal(from_single, of_trajectory(single.astype(np.float64), box, centers))
        double = of_trajectory(frames[:2], box, centers)
        np.testing.assert_allclose(from_single, double, rtol=0, atol=1e-4 * double.max())


@pytest.mark.parametrize("frames, box, centers, message", [
    (np.zeros((5, 3)), np.full(3, 3.0), RDF_CENTERS, "frames must be"),
    (np.zeros((2, 5, 2)), np.full(3, 3.0), RDF_CENTERS, "frames must be"),
    (np.zeros((2, 5, 3)), np.full(2, 3.0), RDF_CENTERS, "box must be"),
    (np.zeros((2, 5, 3)), np.array([3.0, -3.0, 3.0]), RDF_CENTERS, "box must be"),
    (np.zeros((2, 5, 3)), np.full(3, 2.0), RDF_CENTERS, "must exceed 2"),
    (np.zeros((2, 5, 3)), np.full(3, 3.0), np.array([0.5]), "at least 2 bin centres"),
    (np.zeros((2, 5, 3)), np.full(3, 3.0), np.array([0.1, 0.2, 0.4]), "equally spaced"),
    (np.zeros((2, 5, 3)), np.full(3, 3.0), RDF_CENTERS[::-1], "equally spaced"),
])
def test_bad_input_is_refused(frames, box, centers, message):
    with pytest.raises(ValueError, match=message):
        rdf_of_trajectory(frames, box, centers)


def test_bad_smoothing_is_refused():
    with pytest.raises(ValueError, match="sigma must be"):
        adf_of_trajectory(np.zeros((2, 5, 3)), np.full(3, 3.0), ADF_CENTERS, sigma=-0.1)
    with pytest.raises(ValueError, match="cutoff_width must be"):
        adf_of_trajectory(np.zeros((2, 5, 3)), np.full(3, 3.0), ADF_CENTERS, cutoff_width=0.0)
