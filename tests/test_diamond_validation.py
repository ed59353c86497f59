"""Diamond's held-out validation (experiments/diamond/validation.py): the phonon DOS against an
analytic frequency, the stress-strain slopes against the zero-temperature stiffness, bad input."""
import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from difftre import md, runner  # noqa: E402
from difftre.experiments.diamond import crystal  # noqa: E402
from difftre.experiments.diamond.validation import CONSTANTS, rotated_diamond, stress_strain_slopes  # noqa: E402
from difftre.md import GPA  # noqa: E402
from difftre.models import priors  # noqa: E402
from difftre.observables import cubic_constants  # noqa: E402
from difftre.observables.dynamics import dos_of_vacf, dos_peaks, phonon_dos_with_error  # noqa: E402
from difftre.observables.elastic import static_stiffness  # noqa: E402
from difftre.states import stored_states  # noqa: E402
from difftre.trainer import SamplingConfig  # noqa: E402

DENSITY, MASS = 3512.0, 12.011             # the paper's diamond (kg/m^3, u)
SW = (200.0, 0.14)                         # the prior's epsilon (kJ/mol) and sigma (nm)
DT, FRICTION, SKIN = 0.0005, 4.0, 0.05     # ps, 1/ps, nm


def langevin_oscillator_vacf(lags, nu, friction):
    """Normalised VACF of a Langevin-damped harmonic oscillator of frequency nu (THz), friction 1/ps."""
    w0 = 2 * np.pi * nu
    w1 = np.sqrt(w0 ** 2 - friction ** 2 / 4)
    return np.exp(-friction * lags / 2) * (np.cos(w1 * lags) - friction / (2 * w1) * np.sin(w1 * lags))


def test_phonon_dos_of_langevin_einstein_crystal_peaks_at_the_analytic_frequencies():
    """Independent 3-D oscillators in one harmonic well, two masses (m and 4 m): lines at
    nu0 = sqrt(k/m) / 2 pi = 20 THz and nu0 / 2, each within a bin; unit area; and the DOS within
    its standard errors of the analytic one (the Langevin oscillator's VACF through the same window)."""
    nu0, kT, n_segments = 20.0, 2.479, 16
    masses = np.repeat([MASS, 4 * MASS], 32)
    box = np.full(3, 10.0)
    well = md.harmonic(MASS * (2 * np.pi * nu0) ** 2, box / 2)
    sampler = md.Sampler(md.ForceField([well]), md.Langevin(DT, kT, FRICTION))
    state = sampler.init_state(np.tile(box / 2, (len(masses), 1)), box, masses, seed=0)
    stride, segment_frames = 5, 400
    trajectory, _ = sampler.run(state, 4000, n_segments * segment_frames, stride, record_velocities=True)
    frequency, dos, error = phonon_dos_with_error(trajectory.velocities, DT * stride, masses, n_segments)
    bin_width = frequency[1]
    np.testing.assert_allclose(dos_peaks(frequency, dos), [nu0 / 2, nu0], atol=bin_width)
    assert np.sum(dos) * bin_width == pytest.approx(1.0)
    lags = DT * stride * np.arange(segment_frames // 2)
    vacf = sum(3 * 32 * kT * langevin_oscillator_vacf(lags, nu, FRICTION) for nu in (nu0 / 2, nu0))
    _, expected = dos_of_vacf(vacf, DT * stride, len(lags))
    z = ((dos - expected) / error)[frequency < 3 * nu0]
    assert 0.25 < np.mean(z ** 2) < 4.0


def relaxed_ion_constants(cells):
    """Cubic constants (3,) kJ mol^-1 nm^-3 of the prior's perfect diamond lattice at 0 K
    (``static_stiffness``: Born minus the internal relaxation, which in diamond only the shear has:
    C44 201 GPa against the Born term's 401)."""
    positions, box = crystal(cells, DENSITY, MASS)
    state = jax.tree.map(lambda x: x[0], stored_states(positions[None], box, SW[1] * 1.8 + SKIN))
    energy = priors.stillinger_weber(*SW, dtype=np.float64)
    return np.asarray(cubic_constants(jax.jit(lambda s: static_stiffness(energy, None, s)["stiffness"])(state)))


def prior_sampling(temperature):
    return SamplingConfig(md.Langevin(DT, md.kT_from_temperature(temperature), FRICTION), 0, 0, 10, skin=SKIN)


def test_stress_strain_slopes_of_the_prior_at_zero_temperature_equal_its_lattice_stiffness():
    """The Stillinger-Weber prior at 0.01 K on a 72-atom rotated crystal (3 x 3 x 2 cells, the quick
    preset's density): C11, C12 and C44 equal the perfect lattice's relaxed-ion stiffness (for C44
    half the Born term) within 3 standard errors + 0.1 GPa (the secant's bias at +-0.5 %, measured
    0.02-0.04 GPa). A slope of the Cauchy stress would miss by the reference stress, -17.8 GPa."""
    relaxed, lattice_constant = relaxed_ion_constants(2), crystal(1, DENSITY, MASS)[1][0]
    positions, box = rotated_diamond(lattice_constant, crystal(2, DENSITY, MASS)[1])
    assert len(positions) == 72
    slopes = stress_strain_slopes(md.ForceField([md.stillinger_weber(*SW)]), prior_sampling(0.01), MASS, positions,
                                  box, run_ps=0.5, equilibration_ps=2.0, n_blocks=10)
    for name, reference in zip(CONSTANTS + ("C11 (x)", "C12 (x)"), np.concatenate([relaxed, relaxed[:2]])):
        slope, error = slopes[name]
        assert abs(slope - reference) < 3 * error + 0.1 * GPA, (name, slope / GPA, error / GPA, reference / GPA)


def test_rotated_diamond_has_four_bonds_per_atom_at_the_crystal_density():
    lattice_constant = crystal(1, DENSITY, MASS)[1][0]
    positions, box = rotated_diamond(lattice_constant, crystal(5, DENSITY, MASS)[1])
    assert len(positions) == 4 * 7 * 7 * 5 and len(positions) / np.prod(box) == pytest.approx(8 / lattice_constant ** 3)
    d = positions[:, None] - positions[None]
    d -= box * np.round(d / box)
    r = np.sort(np.sqrt(np.sum(d ** 2, axis=-1)), axis=1)[:, 1:6]
    np.testing.assert_allclose(r[:, :4], np.sqrt(3) / 4 * lattice_constant, rtol=1e-12)
    np.testing.assert_allclose(r[:, 4], lattice_constant / np.sqrt(2), rtol=1e-12)


@pytest.mark.parametrize("strain, run_ps, message", [
    (0.0, 1.0, r"strain = 0.0: must be in \(0, 1\)"),
    (-0.01, 1.0, r"strain = -0.01: must be in \(0, 1\)"),
    (1.0, 1.0, r"strain = 1.0: .*invert the box"),
    (0.25, 1.0, r"strain = 0.25: compresses box edge 2 to 0.5352 nm, not above 2 \(cutoff \+ skin\) = 0.604 nm"),
    (0.005, 0.01, r"run_ps = 0.01: gives 2 steps of 0.005 ps, fewer than 20"),
    (0.005, float("nan"), r"run_ps = nan"),
])
def test_stress_strain_check_refuses_bad_strains_and_lengths(strain, run_ps, message):
    positions, box = rotated_diamond(crystal(1, DENSITY, MASS)[1][0], crystal(2, DENSITY, MASS)[1])
    with pytest.raises(ValueError, match=message):
        stress_strain_slopes(md.ForceField([md.stillinger_weber(*SW)]), prior_sampling(300.0), MASS, positions, box,
                             strain=strain, run_ps=run_ps)


def test_phonon_dos_with_error_refuses_too_few_frames():
    with pytest.raises(ValueError, match="n_segments = 8 for 20 frames"):
        phonon_dos_with_error(np.zeros((20, 2, 3)), 0.0025, n_segments=8)


@pytest.mark.slow
def test_held_out_of_quick_preset_agrees_with_the_fluctuation_stiffness(tmp_path):
    """``difftre evaluate`` of the quick preset (64 atoms, one update, a state every 25 fs) over 100 ps:
    the stress-strain slopes (72 atoms, 20 ps per strained run) equal the fluctuation C11, C12, C44
    within 3 combined standard errors; the DOS of prior and learned parameters, its plot."""
    out = tmp_path / "diamond"
    runner.run("diamond", out, preset="quick", overrides={"training.n_updates": 1, "sampling.stride": 50},
               progress=False)
    evaluation = runner.evaluate(out, 100.0, progress=False)
    stress_strain, dos = evaluation["held_out"]["stress_strain"], evaluation["held_out"]["phonon_dos"]
    print({name: stress_strain[name] for name in CONSTANTS})
    for name in CONSTANTS:
        assert abs(stress_strain[name]["z_score"]) < 3, (name, stress_strain[name])
    for label in ("prior", "learned"):
        assert len(dos[label]["dos_per_thz"]) == len(dos["frequency_thz"]) and dos[label]["peaks_thz"]
    assert (out / "phonon_dos.png").exists()
