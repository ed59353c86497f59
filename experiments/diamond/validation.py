"""Held-out validation of a diamond run (``difftre evaluate``): the stress-strain check of the
fluctuation stiffness and the phonon density of states.

Stress-strain check (``stress_strain_slopes``): NVT runs of a diamond crystal oriented x = [110],
y = [-110], z = [001] (the engine's box is orthorhombic; this orientation makes a strain along x a
shear in the cube frame), at the same density as the run's crystal and about its size, strained by
+-``strain`` along z (C11, C12) and along x (C44), with the learned potential and the run's
integrator; slopes of the second Piola-Kirchhoff stress against the Green-Lagrange strain
(``difftre.observables.stress_strain``) with block-averaging errors, compared in ``held_out`` with
the fluctuation C of the evaluation's trajectory by z = (slope - C) / hypot(errors). The secant's
bias at +-0.5 % is (q + d) e^2, below 0.1 GPa for diamond's third-order constants (~ -5000 GPa).

Phonon DOS (``phonon_dos_runs``): a dedicated trajectory from the evaluation's last state with
velocities every DOS_FRAME_PS (the stored states, every 25 fs, resolve only 20 THz; diamond's
optical phonons reach 40 THz), at the prior (theta = 0) and at the learned parameters. The
Langevin friction gamma (4 /ps) gives every line a Lorentzian full width gamma / (2 pi) = 0.64 THz,
and the window of 1 ps of VACF lags (DOS segments of 2 ps) another 0.7 THz; both are far below the
width of diamond's phonon bands. Units: nm, ps, u, kJ/mol, THz; the JSON reports GPa.
"""
import numpy as np

from difftre import systems
from difftre.executor import InProcessExecutor, SamplingJob
from difftre.md import GPA, Sampler
from difftre.observables.dynamics import dos_peaks, phonon_dos_with_error
from difftre.observables.stress_strain import cauchy_stress, cubic_slopes, second_piola_kirchhoff, uniaxial_stretch

STRAIN = 0.005              # +-0.5 %: the linear regime
STRAINED_RUN_PS = 20.0      # production per strained run
EQUILIBRATION_PS = 2.0      # before every strained and DOS run
N_BLOCKS = 20               # blocks of each strained run's stress series
DOS_FRAME_PS = 0.0025       # velocities every 2.5 fs: Nyquist 200 THz
DOS_RUN_PS = 16.0
DOS_SEGMENTS = 8            # 2 ps segments: the DOS's standard error from their spread
DOS_MAX_THZ = 60.0          # the DOS reported up to here (diamond's phonons end near 40 THz)
CONSTANTS = ("C11", "C12", "C44")


def rotated_diamond(lattice_constant, edges):
    """Diamond (lattice constant nm) oriented x = [110], y = [-110], z = [001] in the orthorhombic box
    closest to ``edges`` (3,) nm, at least one 4-atom cell per axis: positions (N, 3), box (3,) nm."""
    cell = lattice_constant * np.array([np.sqrt(0.5), np.sqrt(0.5), 1.0])
    cells = np.maximum(np.round(np.asarray(edges) / cell), 1).astype(int)
    return systems.rotated_110_lattice(systems.DIAMOND_BASIS, cells, lattice_constant)


def check_strain(strain, box, list_cutoff):
    """ValueError naming ``strain`` unless 0 < strain < 1 and the box compressed by it keeps every edge
    above 2 list_cutoff (nm; the force field's cut-off plus the skin, the minimum-image condition)."""
    if not 0 < strain < 1:
        raise ValueError(f"strain = {strain}: must be in (0, 1); the check strains by +strain and -strain, "
                         f"and 1 - strain <= 0 would invert the box")
    compressed = np.asarray(box) * (1 - strain)
    if compressed.min() <= 2 * list_cutoff:
        axis = int(compressed.argmin())
        raise ValueError(f"strain = {strain}: compresses box edge {axis} to {compressed[axis]:.4g} nm, not above "
                         f"2 (cutoff + skin) = {2 * list_cutoff:.4g} nm; use a smaller strain or a larger crystal")


def steps_in(duration_ps, step_ps, field, at_least):
    """round(duration_ps / step_ps), or a ValueError naming ``field`` when that is below ``at_least``."""
    steps = int(round(duration_ps / step_ps)) if np.isfinite(duration_ps) else -1
    if steps < at_least:
        raise ValueError(f"{field} = {duration_ps}: gives {steps} steps of {step_ps:.4g} ps, fewer than {at_least}")
    return steps


def stress_strain_slopes(force_field, sampling, masses, positions, box, strain=STRAIN, run_ps=STRAINED_RUN_PS,
                         equilibration_ps=EQUILIBRATION_PS, n_blocks=N_BLOCKS, seed=0, executor=None):
    """{constant: (slope, standard error)} kJ mol^-1 nm^-3 from NVT runs strained by +-strain.

    force_field: ``md.ForceField`` (the learned potential); sampling: the run's ``SamplingConfig``
    (integrator, skin, dtype, stride); masses u; positions (N, 3), box (3,) nm: a cubic crystal
    oriented x = [110], y = [-110], z = [001] (``rotated_diamond``). Four runs (z and x, -strain and
    +strain) of equilibration_ps then run_ps (ps), the stress every sampling.stride steps, seeds
    seed + k; ``executor`` (default: this process) runs them. Constants as ``cubic_slopes``: C11, C12
    from z; C44, "C12 (x)", "C11 (x)" from x.
    """
    integrator = sampling.integrator
    check_strain(strain, box, force_field.cutoff + sampling.skin)
    n_frames = steps_in(run_ps, integrator.dt * sampling.stride, "run_ps", n_blocks)
    n_equilibration = steps_in(equilibration_ps, integrator.dt, "equilibration_ps", 0)
    sampler = Sampler(force_field, integrator, skin=sampling.skin, dtype=sampling.dtype)
    runs = [(axis, e) for axis in (2, 0) for e in (-strain, strain)]
    jobs = [SamplingJob(force_field, integrator, sampling.skin, sampling.dtype,
                        sampler.init_state(positions * uniaxial_stretch(axis, e), box * uniaxial_stretch(axis, e),
                                           masses, seed + k),
                        n_equilibration, n_frames, sampling.stride, record_velocities=True)
            for k, (axis, e) in enumerate(runs)]
    results = (executor or InProcessExecutor()).map(jobs)
    piola = {2: [], 0: []}
    for (axis, e), (trajectory, _) in zip(runs, results):
        piola[axis].append(second_piola_kirchhoff(cauchy_stress(trajectory, masses), uniaxial_stretch(axis, e)))
    return cubic_slopes(piola, [-strain, strain], n_blocks)


def phonon_dos_runs(force_fields, sampling, start, masses, run_ps=DOS_RUN_PS, equilibration_ps=EQUILIBRATION_PS,
                    n_segments=DOS_SEGMENTS, executor=None):
    """[(frequency (F,) THz, dos (F,) 1/THz, standard error (F,) 1/THz)] of each force field, from a
    trajectory continuing the ``md.MDState`` start (left unchanged) with the run's integrator:
    equilibration_ps, then run_ps with velocities every DOS_FRAME_PS (``phonon_dos_with_error``, unit
    area, n_segments segments)."""
    dt = sampling.integrator.dt
    stride = max(1, int(round(DOS_FRAME_PS / dt)))
    n_frames = steps_in(run_ps, dt * stride, "run_ps", 4 * n_segments)
    n_equilibration = steps_in(equilibration_ps, dt, "equilibration_ps", 0)
    jobs = [SamplingJob(field, sampling.integrator, sampling.skin, sampling.dtype, start, n_equilibration, n_frames,
                        stride, record_velocities=True) for field in force_fields]
    return [phonon_dos_with_error(trajectory.velocities, dt * stride, masses, n_segments)
            for trajectory, _ in (executor or InProcessExecutor()).map(jobs)]


def held_out(trainer, state, strain=STRAIN, strained_run_ps=STRAINED_RUN_PS, dos_run_ps=DOS_RUN_PS):
    """The diamond run's held-out observables at state.params, as JSON-able numbers.

    "stress_strain": per constant the slope and its SE (GPa), the evaluation's fluctuation value and
    SE, and their z-score, on a rotated crystal (``rotated_diamond``) at the run's density and about
    its size; "phonon_dos": frequencies (THz, up to DOS_MAX_THZ), and for the prior (theta = 0) and
    the learned parameters the DOS with its SE (1/THz, unit area over 0 to 200 THz) and its peaks
    (THz; ``dos_peaks``).
    """
    start = state.sampler_states[0]
    lattice_constant = (len(systems.DIAMOND_BASIS) * np.prod(trainer.box) / len(start.positions)) ** (1 / 3)
    positions, box = rotated_diamond(lattice_constant, trainer.box)
    slopes = stress_strain_slopes(trainer.potential.force_field(state.params), trainer.sampling, trainer.masses,
                                  positions, box, strain, strained_run_ps, executor=trainer.executor)
    fluctuation, fluctuation_errors = trainer.predictions_with_errors(state)["cubic_constants"]
    stress_strain = {"strain": strain, "run_ps": strained_run_ps, "n_atoms": len(positions),
                     "box_nm": np.asarray(box).tolist()}
    for k, name in enumerate(CONSTANTS):
        slope, error = slopes[name]
        stress_strain[name] = {"slope_gpa": slope / GPA, "standard_error_gpa": error / GPA,
                               "fluctuation_gpa": float(fluctuation[k]) / GPA,
                               "fluctuation_standard_error_gpa": float(fluctuation_errors[k]) / GPA,
                               "z_score": float((slope - fluctuation[k]) / np.hypot(error, fluctuation_errors[k]))}
    for name in ("C11 (x)", "C12 (x)"):
        stress_strain[name] = {"slope_gpa": slopes[name][0] / GPA, "standard_error_gpa": slopes[name][1] / GPA}
    prior_params = np.zeros_like(np.asarray(state.params))
    dos = phonon_dos_runs([trainer.potential.force_field(p) for p in (prior_params, state.params)], trainer.sampling,
                          start, trainer.masses, dos_run_ps, executor=trainer.executor)
    shown = dos[0][0] <= DOS_MAX_THZ
    phonon_dos = {"frequency_thz": dos[0][0][shown].tolist(), "run_ps": dos_run_ps}
    for label, (frequency, values, errors) in zip(("prior", "learned"), dos):
        phonon_dos[label] = {"dos_per_thz": values[shown].tolist(), "standard_error_per_thz": errors[shown].tolist(),
                             "peaks_thz": dos_peaks(frequency, values).tolist()}
    return {"stress_strain": stress_strain, "phonon_dos": phonon_dos}


def write_held_out_plots(out_dir, held_out):
    """phonon_dos.png in the run folder (``plots.write_phonon_dos_plot``; matplotlib is imported only here)."""
    from difftre.experiments.diamond.plots import write_phonon_dos_plot
    write_phonon_dos_plot(out_dir, held_out)
