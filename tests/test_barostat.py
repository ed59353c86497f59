"""The Monte Carlo barostat of the CPU sampler: the exact isothermal-isobaric volume distribution of an
ideal gas, the pressure identity and the density of an LJ liquid (against LAMMPS fix npt), determinism,
refusals at the minimum-image limit, bad input."""
import copy

import numpy as np
import pytest
from scipy import stats

from conftest import LAMMPS_ARGS, lammps_module, lattice_positions
from difftre import md
from difftre.observables.errors import block_standard_error

BLOCKS = 20


def ideal_gas_volumes(integrator, n, dim, pressure, kT, n_frames, seed=1):
    """Box volumes of an ideal gas of n particles (no forces) under the barostat, one per 10 steps."""
    barostat = md.MonteCarloBarostat(pressure, interval=1, max_volume_change=6.0 * kT / pressure)
    sampler = md.Sampler(md.ForceField([]), integrator, barostat=barostat)
    length = ((n + 1) * kT / pressure) ** (1 / dim)
    positions = np.random.default_rng(0).uniform(0.0, length, (n, dim))
    state = sampler.init_state(positions, np.full(dim, length), 1.0, seed=seed)
    trajectory, state = sampler.run(state, 1000, n_frames, 10)
    np.testing.assert_array_equal(state.box, trajectory.box[-1])
    return np.prod(trajectory.box, axis=1), trajectory


@pytest.mark.parametrize("integrator, dim", [(md.Langevin(dt=0.01, kT=1.0, friction=1.0), 3),
                                             (md.NoseHooverChain(dt=0.01, kT=1.0, tau=0.5), 3),
                                             (md.Langevin(dt=0.01, kT=1.0, friction=1.0), 2)])
def test_ideal_gas_volume_distribution_is_exact(integrator, dim):
    """p(V) ~ V^N exp(-P V / kT): a Gamma distribution of shape N + 1 and scale kT / P (mean and variance
    (N + 1) kT / P and (N + 1) (kT / P)^2). N + 1, not N: a wrong Jacobian (N - 1 or N + 1 in the
    acceptance) moves the mean by kT / P, about 30 standard errors. Without forces the volume chain
    depends only on (seed, step), not on the integrator or dim: those cases check that they run."""
    n, kT, pressure = 10, 1.0, 1.0
    volumes, trajectory = ideal_gas_volumes(integrator, n, dim, pressure, kT, 20_000)
    attempted, accepted, refused = trajectory.barostat_moves
    assert attempted == 201_000 and refused == 0 and 0.4 < trajectory.barostat_acceptance < 0.8
    exact = stats.gamma(n + 1, scale=kT / pressure)
    mean_error = block_standard_error(volumes, n_blocks=BLOCKS)
    deviation = (volumes - volumes.mean()) ** 2
    variance_error = block_standard_error(deviation, n_blocks=BLOCKS)
    assert abs(volumes.mean() - exact.mean()) < 3.5 * mean_error, (volumes.mean(), exact.mean(), mean_error)
    assert abs(deviation.mean() - exact.var()) < 3.5 * variance_error, (deviation.mean(), exact.var(), variance_error)
    # frames 50 moves apart are nearly independent (a volume's autocorrelation time is a few moves)
    assert stats.kstest(volumes[::5], exact.cdf).pvalue > 0.01


def lj_liquid(pressure, kT, interval=10, max_volume_change=12.0, n_side=6, density=0.72):
    """A sampler (shifted LJ, reduced units, Langevin) with the barostat, and a state of n_side^3 atoms."""
    force_field = md.ForceField([md.lennard_jones(1.0, 1.0, 2.5, shift=True)])
    barostat = md.MonteCarloBarostat(pressure, interval=interval, max_volume_change=max_volume_change)
    sampler = md.Sampler(force_field, md.Langevin(dt=0.005, kT=kT, friction=1.0), skin=0.3, barostat=barostat)
    length = (n_side ** 3 / density) ** (1 / 3)
    positions = lattice_positions(n_side, length, 0.05, np.random.default_rng(0))
    return sampler, sampler.init_state(positions, np.full(3, length), 1.0, seed=1)


def test_lj_virial_pressure_averages_to_the_barostat_pressure():
    """In the NPT ensemble <N kT / V + tr(W) / (3 V)> = P exactly (integrate d/dV of V^N exp(-beta P V) Q(V)
    by parts); the energy-shifted LJ has no impulsive term at the cut-off, so the virial is dU/dV."""
    kT, pressure = 2.0, 4.0
    sampler, state = lj_liquid(pressure, kT)
    _, state = sampler.run(state, 5000, 0, 1)
    trajectory, _ = sampler.run(state, 0, 2000, 20)
    volumes = np.prod(trajectory.box, axis=1)
    n = state.positions.shape[0]
    instantaneous = (n * kT + np.trace(trajectory.virial, axis1=1, axis2=2) / 3.0) / volumes
    error = block_standard_error(instantaneous, n_blocks=BLOCKS)
    assert 0.2 < trajectory.barostat_acceptance < 0.7 and trajectory.barostat_moves[2] == 0
    assert abs(instantaneous.mean() - pressure) < 3.0 * error, (instantaneous.mean(), error)
    assert error < 0.01 * pressure


def lammps_npt_densities(lammps, pressure, kT, n_side, density, n_equilibration, n_samples, stride):
    """Densities of a LAMMPS fix npt (MTK barostat, Nose-Hoover chains) run of the same shifted LJ liquid."""
    lmp = lammps.lammps(cmdargs=LAMMPS_ARGS)
    script = f"""units lj
        atom_style atomic
        lattice sc {density}
        region box block 0 {n_side} 0 {n_side} 0 {n_side}
        create_box 1 box
        create_atoms 1 box
        mass 1 1.0
        pair_style lj/cut 2.5
        pair_modify shift yes
        pair_coeff 1 1 1.0 1.0 2.5
        neighbor 0.3 bin
        velocity all create {kT} 1 mom yes
        timestep 0.005
        fix 1 all npt temp {kT} {kT} 0.5 iso {pressure} {pressure} 2.5
        run {n_equilibration}"""
    for line in script.splitlines():
        lmp.command(line.strip())
    densities = []
    for _ in range(n_samples):
        lmp.command(f"run {stride} pre no post no")
        densities.append(lmp.get_thermo("density"))
    lmp.close()
    return np.array(densities)


@pytest.mark.slow
def test_lj_density_agrees_with_lammps_npt():
    """Mean density of 216 shifted-LJ atoms at kT = 2, P = 4 (reduced): this sampler (Langevin + Monte
    Carlo volume moves) against LAMMPS fix npt (MTK), 200 000 steps each, within 3.5 combined errors."""
    lammps = lammps_module()
    if lammps is None:
        pytest.skip("the lammps Python module is not importable")
    kT, pressure = 2.0, 4.0
    sampler, state = lj_liquid(pressure, kT)
    _, state = sampler.run(state, 10_000, 0, 1)
    trajectory, _ = sampler.run(state, 0, 10_000, 20)
    mine = state.positions.shape[0] / np.prod(trajectory.box, axis=1)
    reference = lammps_npt_densities(lammps, pressure, kT, 6, 0.72, 10_000, 10_000, 20)
    errors = [block_standard_error(x, n_blocks=BLOCKS) for x in (mine, reference)]
    assert abs(mine.mean() - reference.mean()) < 3.5 * np.hypot(*errors), (mine.mean(), reference.mean(), errors)
    assert max(errors) < 0.003


def test_same_seed_same_volumes_and_runs_continue():
    """The volume moves are keyed by (seed, step): reruns are bit-identical, a run split in two equals the
    whole, and another seed gives another trajectory."""
    kT, pressure = 1.0, 1.0
    integrator = md.Langevin(dt=0.01, kT=kT, friction=1.0)
    volumes, _ = ideal_gas_volumes(integrator, 10, 3, pressure, kT, 200)
    again, _ = ideal_gas_volumes(integrator, 10, 3, pressure, kT, 200)
    other, _ = ideal_gas_volumes(integrator, 10, 3, pressure, kT, 200, seed=2)
    np.testing.assert_array_equal(volumes, again)
    assert not np.array_equal(volumes, other)
    sampler, state = lj_liquid(4.0, 2.0, interval=5)
    whole, _ = sampler.run(copy.deepcopy(state), 0, 4, 50)
    first, state = sampler.run(state, 0, 2, 50)
    second, _ = sampler.run(state, 0, 2, 50)
    np.testing.assert_array_equal(whole.box, np.concatenate([first.box, second.box]))
    np.testing.assert_array_equal(whole.positions, np.concatenate([first.positions, second.positions]))
    assert whole.barostat_moves[0] == 40 and whole.barostat_moves[1] > 0
    np.testing.assert_array_equal(whole.barostat_moves, first.barostat_moves + second.barostat_moves)



def test_rejected_and_refused_moves_leave_the_trajectory_as_without_barostat():
    """A box edge just above 2 (cutoff + skin) with a huge pressure: every compression is refused (it would
    break the minimum image), every expansion rejected; the trajectory is then bit-identical to the
    constant-volume one (a rejection restores everything; the barostat's draws are a separate stream).
    A barostat whose interval is never reached changes nothing either; without one the box stays (dim,)."""
    force_field = md.ForceField([md.lennard_jones(1.0, 1.0, 2.5, shift=True)])
    integrator = md.Langevin(dt=0.005, kT=1.0, friction=1.0)
    length = 2.0 * 2.8 * (1.0 + 1e-9)
    positions = lattice_positions(4, length, 0.02, np.random.default_rng(0))
    runs = {}
    for name, barostat in [("nvt", None), ("squeezed", md.MonteCarloBarostat(1e4, interval=5, max_volume_change=1.0)),
                           ("never", md.MonteCarloBarostat(1.0, interval=10 ** 6))]:
        sampler = md.Sampler(force_field, integrator, skin=0.3, barostat=barostat)
        state = sampler.init_state(positions, np.full(3, length), 1.0, seed=3)
        runs[name] = sampler.run(state, 0, 10, 20, record_velocities=True)
    nvt, state = runs["nvt"]
    assert nvt.box.shape == (3,) and nvt.barostat_moves is None and nvt.barostat_acceptance is None
    squeezed, squeezed_state = runs["squeezed"]
    attempted, accepted, refused = squeezed.barostat_moves
    assert attempted == 40 and accepted == 0 and 10 < refused < 30
    never, _ = runs["never"]
    assert never.barostat_moves[0] == 0 and np.isnan(never.barostat_acceptance)
    for trajectory in (squeezed, never):
        np.testing.assert_array_equal(trajectory.box, np.broadcast_to(nvt.box, (10, 3)))
        for name in ("positions", "velocities", "potential_energy", "virial"):
            np.testing.assert_array_equal(getattr(trajectory, name), getattr(nvt, name))
    np.testing.assert_array_equal(md.dense_neighbor_list(squeezed_state.nbr_idx, squeezed_state.nbr_count),
                                  md.dense_neighbor_list(state.nbr_idx, state.nbr_count))


@pytest.mark.parametrize("field, arguments", [("pressure", dict(pressure=-1.0)),
                                              ("pressure", dict(pressure=float("nan"))),
                                              ("interval", dict(pressure=1.0, interval=0)),
                                              ("interval", dict(pressure=1.0, interval=2.5)),
                                              ("max_volume_change", dict(pressure=1.0, max_volume_change=0.0))])
def test_bad_barostat_parameters(field, arguments):
    with pytest.raises(ValueError, match=field):
        md.MonteCarloBarostat(**arguments)


def test_barostat_needs_a_thermostat_and_no_jax_forces():
    """Both the CPU and the CUDA sampler check the barostat alike; the host-stepped (JAX forces) sampler refuses it."""
    barostat = md.MonteCarloBarostat(1.0 * md.BAR)
    langevin = md.Langevin(dt=0.01, kT=1.0, friction=1.0)
    from difftre import md_cuda
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match="thermostatted integrator.*VelocityVerlet"):
            md.sampler(md.ForceField([]), md.VelocityVerlet(dt=0.01), device=device, barostat=barostat)
        with pytest.raises(TypeError, match="MonteCarloBarostat"):
            md.sampler(md.ForceField([]), langevin, device=device, barostat=1.0 * md.BAR)
    assert md.sampler(md.ForceField([]), langevin, device="cuda", replicas=2, barostat=barostat).barostat is barostat
    with pytest.raises(NotImplementedError, match="does not run host-stepped"):
        md_cuda.HostSteppedSampler(md.ForceField([]), langevin, barostat=barostat)
