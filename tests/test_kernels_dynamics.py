"""Integrators and the sampler against analytic results: energy conservation,
equipartition, harmonic <x^2> = kT/k, the Boltzmann distribution of the double well."""
import copy

import numpy as np
import pytest
from scipy import integrate, stats

from conftest import lattice_positions
from difftre import md

LJ_DENSITY = 0.8442


def block_error(series, n_blocks=20):
    """Standard error of the mean of a correlated series by block averaging."""
    blocks = np.array_split(np.asarray(series), n_blocks)
    means = np.array([b.mean() for b in blocks])
    return means.std(ddof=1) / np.sqrt(n_blocks)


@pytest.fixture(scope="module")
def lj_liquid():
    """216 LJ particles at rho* = 0.8442 equilibrated at T* = 0.72 (shifted LJ, rc = 2.5)."""
    n_side = 6
    box = np.full(3, (n_side ** 3 / LJ_DENSITY) ** (1 / 3))
    ff = md.ForceField([md.lennard_jones(1.0, 1.0, 2.5, shift=True)])
    sampler = md.Sampler(ff, md.Langevin(dt=0.005, kT=0.72, friction=1.0), skin=0.3)
    state = sampler.init_state(lattice_positions(n_side, box[0], 0.0, np.random.default_rng(1)), box, 1.0, seed=1)
    _, state = sampler.run(state, n_equilibration=2000, n_frames=0, stride=1)
    return ff, state


def nve_energy_series(ff, state, dt, duration=10.0, sample_every=0.1):
    sampler = md.Sampler(ff, md.VelocityVerlet(dt), skin=0.3)
    stride = int(round(sample_every / dt))
    trajectory, _ = sampler.run(copy.deepcopy(state), 0, int(round(duration / dt)) // stride, stride)
    n = state.positions.shape[0]
    return (trajectory.potential_energy + trajectory.kinetic_energy) / n


def test_nve_energy_drift_and_step_size_scaling(lj_liquid):
    """Stated bounds (reduced units, per atom, over 10 tau):
    dt = 0.005:  |drift| < 1e-4 eps/tau,   fluctuation < 3e-4 eps  (measured 2.2e-5, 1.4e-4);
    dt = 0.0025: |drift| < 2.5e-5 eps/tau, fluctuation < 1e-4 eps;
    and the fluctuation falls at least 2.5x when dt halves (4x for an exact dt^2 error; the
    force jump of the shifted potential at rc adds a floor)."""
    ff, state = lj_liquid
    energy_big = nve_energy_series(ff, state, 0.005)
    energy_small = nve_energy_series(ff, state, 0.0025)
    time = np.arange(len(energy_big)) * 0.1
    assert abs(np.polyfit(time, energy_big, 1)[0]) < 1e-4
    assert abs(np.polyfit(time, energy_small, 1)[0]) < 2.5e-5
    assert energy_big.std() < 3e-4
    assert energy_small.std() < 1e-4
    assert energy_big.std() / energy_small.std() > 2.5


@pytest.mark.parametrize("integrator", [md.Langevin(dt=0.005, kT=0.72, friction=1.0),
                                        md.NoseHooverChain(dt=0.005, kT=0.72, tau=0.5)])
def test_equipartition_lj_liquid(lj_liquid, integrator):
    """<K> = dof kT / 2 within 4 standard errors (block averaging)."""
    ff, state = lj_liquid
    sampler = md.Sampler(ff, integrator, skin=0.3)
    state = copy.deepcopy(state)
    state.thermostat = np.zeros(2 * getattr(integrator, "chain_length", 0))
    trajectory, _ = sampler.run(state, n_equilibration=500, n_frames=2000, stride=10)
    expected = 0.5 * state.dof * integrator.kT
    mean = trajectory.kinetic_energy.mean()
    assert abs(mean - expected) < 4 * block_error(trajectory.kinetic_energy) + 1e-3 * expected


def test_nose_hoover_chain_conserves_extended_energy(lj_liquid):
    """Kinetic + potential + chain energy is conserved (a check on the chain integrator)."""
    ff, state = lj_liquid
    integrator = md.NoseHooverChain(dt=0.0025, kT=1.2, tau=0.2, chain_length=5)  # heating: the chain works hard
    sampler = md.Sampler(ff, integrator, skin=0.3)
    state = copy.deepcopy(state)
    state.thermostat = np.zeros(10)
    _, params_dof = None, None
    extended, kinetic = [], []
    for _ in range(40):
        trajectory, state = sampler.run(state, 0, 1, 100)
        params = np.array([integrator.kT, state.dof, integrator.tau])
        kinetic.append(trajectory.kinetic_energy[0])
        extended.append(trajectory.potential_energy[0] + trajectory.kinetic_energy[0]
                        + md.integrators.nose_hoover_chain_energy(state.thermostat, params))
    extended = np.array(extended) / state.positions.shape[0]
    assert np.ptp(kinetic) / state.positions.shape[0] > 0.1     # the thermostat changed the energy...
    assert np.ptp(extended) < 2e-3                               # ...and the extended energy stayed put


@pytest.mark.parametrize("integrator", [md.Langevin(dt=0.005, kT=1.0, friction=2.0),
                                        md.NoseHooverChain(dt=0.005, kT=1.0, tau=0.3, chain_length=5)])
def test_harmonic_position_variance_is_kT_over_k(integrator):
    """Independent 3-D particles in 0.5 k x^2: <x_a^2> = kT / k per component, <K> = dof kT / 2."""
    k, n = 150.0, 400
    ff = md.ForceField([md.harmonic(k, [0.5, 0.5, 0.5])])
    sampler = md.Sampler(ff, integrator)
    rng = np.random.default_rng(4)
    positions = 0.5 + rng.normal(0, np.sqrt(integrator.kT / k), (n, 3))
    state = sampler.init_state(positions, np.ones(3), 1.0, seed=5)
    trajectory, _ = sampler.run(state, n_equilibration=2000, n_frames=1000, stride=20)
    per_frame = ((trajectory.positions - 0.5) ** 2).mean(axis=(1, 2))
    expected = integrator.kT / k
    assert abs(per_frame.mean() - expected) < 4 * block_error(per_frame) + 2e-3 * expected
    kinetic = trajectory.kinetic_energy
    assert abs(kinetic.mean() - 1.5 * n * integrator.kT) < 4 * block_error(kinetic) + 2e-3 * 1.5 * n


def double_well_energy(x):
    """U_DW(x) = 2500 (x - 0.5)^6 - 10 (x - 0.55)^2 (kT units), and its derivative."""
    return 2500 * (x - 0.5) ** 6 - 10 * (x - 0.55) ** 2, 15000 * (x - 0.5) ** 5 - 20 * (x - 0.55)


def hermite_table(function, x0, x1, n_intervals):
    """Cubic Hermite spline table of a function returning (value, slope), in the kernels' format."""
    knots = np.linspace(x0, x1, n_intervals + 1)
    h = knots[1] - knots[0]
    u, du = function(knots)
    du0, du1, u0, u1 = du[:-1], du[1:], u[:-1], u[1:]
    c2 = (3 * (u1 - u0) / h - 2 * du0 - du1) / h
    c3 = (du0 + du1 - 2 * (u1 - u0) / h) / h ** 2
    return x0, h, np.stack([u0, du0, c2, c3], 1)


def test_double_well_histogram_matches_boltzmann():
    """Langevin sampling of U_DW: the histogram of 20 000 independent particles matches
    exp(-U/kT)/Z (chi-square test, p > 1e-3), starting from a uniform distribution."""
    ff = md.ForceField([md.external_spline(*hermite_table(double_well_energy, 0.0, 1.0, 400))])
    sampler = md.Sampler(ff, md.Langevin(dt=1e-3, kT=1.0, friction=1.0))
    n = 20_000
    positions = np.random.default_rng(6).uniform(0.15, 0.85, (n, 1))
    state = sampler.init_state(positions, [1.0], 1.0, seed=7)
    trajectory, _ = sampler.run(state, n_equilibration=10_000, n_frames=1, stride=1)
    edges = np.linspace(0.0, 1.0, 51)
    counts, _ = np.histogram(trajectory.positions[-1, :, 0] % 1.0, edges)
    boltzmann = lambda x: np.exp(-double_well_energy(x)[0])
    weights = np.array([integrate.quad(boltzmann, a, b)[0] for a, b in zip(edges[:-1], edges[1:])])
    expected = n * weights / weights.sum()
    keep = expected > 5
    assert counts[~keep].sum() < 10
    chi2 = stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum())
    assert chi2.pvalue > 1e-3, chi2


def test_continuation_equals_one_long_run(lj_liquid):
    """Two runs of S steps continue exactly as one run of 2S (positions, thermostat, random stream)."""
    ff, state = lj_liquid
    sampler = md.Sampler(ff, md.Langevin(dt=0.005, kT=0.72, friction=1.0), skin=0.3)
    one = copy.deepcopy(state)
    two = copy.deepcopy(state)
    long_run, one = sampler.run(one, 0, 2, 150)
    sampler.run(two, 0, 1, 150)
    second, two = sampler.run(two, 0, 1, 150)
    np.testing.assert_array_equal(long_run.positions[-1], second.positions[-1])
    np.testing.assert_array_equal(one.velocities, two.velocities)
    assert one.step == two.step == state.step + 300
