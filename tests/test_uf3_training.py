"""UF3 in the generic trainer (difftre.uf3): the linear path (features once per trajectory) against the
same model through energy(params, state); pressure, stress and stiffness targets from virial and Born
features against difftre.observables on the model; the smoothness penalty against a hand value;
coefficient files and the refusals of bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import lattice_positions
from difftre import md
from difftre import uf3 as glue
from difftre.models import priors, uf3
from difftre.models.geometry import dense_neighbor_list
from difftre.models.state import State
from difftre.observables import pressure
from difftre.observables.elastic import born_terms, fluctuation_stiffness
from difftre.observables.stress import stress_tensor
from difftre.optim import add_penalty_gradient
from difftre.potential import Potential
from difftre.trainer import SamplingConfig, Target, Trainer

jax.config.update("jax_enable_x64", True)

KT, SIGMA, MASS = 2.5, 0.3165, 18.0
SPEC = uf3.UF3Spec(pair_cutoff=0.5, leg_cutoff=0.3, n_pair=5, n_leg=4, n_jk=6)
PRIOR_CUTOFF = 0.5


def prior():
    return (priors.repulsive(1.0, SIGMA, PRIOR_CUTOFF, dtype=np.float64),
            [md.repulsive(1.0, SIGMA, PRIOR_CUTOFF)])


def start(seed=0):
    """125 beads at 33 /nm^3 (box 1.56 nm), a jittered simple-cubic lattice."""
    length = (125 / 33.0) ** (1 / 3)
    return lattice_positions(5, length, 0.03, np.random.default_rng(seed)), np.full(3, length)


def theta0(seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.concatenate([np.linspace(2.0, 0.0, SPEC.n_pair), 0.05 * rng.random(SPEC.n_triplet_free)]))


def trainer_pair(record_velocities=False):
    """Two trainers on the same model and trajectory: the linear path (uf3_potential, pressure and stress
    targets from virial features) and the energy path (no features, difftre.observables on energy)."""
    prior_energy, prior_terms = prior()
    linear = glue.uf3_potential(SPEC, prior_energy, prior_terms)
    plain = Potential(linear.energy, linear.force_field, cutoff=linear.cutoff)
    masses = MASS if record_velocities else None
    sampling = SamplingConfig(md.Langevin(0.002, KT, 5.0), 40, 6, 10, skin=0.05,
                              record_velocities=record_velocities)
    targets_linear = [glue.pressure_target("pressure", 10.0, SPEC, prior_energy, kT=KT, masses=masses, gamma=1e-3),
                      glue.stress_target("stress", np.zeros((3, 3)), SPEC, prior_energy, kT=KT, masses=masses,
                                         gamma=1e-4)]
    targets_plain = [Target("pressure", np.array(10.0), 1e-3,
                            observable=lambda p, s: pressure(plain.energy, p, s, masses=masses, kT=KT)),
                     Target("stress", np.zeros((3, 3)), 1e-4,
                            observable=lambda p, s: stress_tensor(plain.energy, p, s, masses=masses, kT=KT))]
    positions, box = start()
    out = []
    for potential, targets in ((linear, targets_linear), (plain, targets_plain)):
        trainer = Trainer(potential, targets, optax.adam(1e-2), sampling, box=box, masses=MASS, kT=KT, chunk_size=4)
        out.append((trainer, trainer.init(theta0(), positions, seed=3)))
    return out


@pytest.mark.parametrize("record_velocities", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_linear_path_gives_the_loss_and_gradient_of_the_energy_path(record_velocities):
    (linear, state_l), (plain, state_p) = trainer_pair(record_velocities)
    np.testing.assert_array_equal(state_l.states.positions, state_p.states.positions)
    np.testing.assert_allclose(state_l.reference_energies, state_p.reference_energies, rtol=1e-12)
    moved = theta0() + 0.02 * jnp.asarray(np.random.default_rng(5).standard_normal(SPEC.n_free))
    (loss_l, (parts_l, pred_l, n_eff_l)), grad_l = linear._value_and_grad(
        moved, linear._model_inputs, state_l.reference_energies, linear._target_inputs)
    (loss_p, (parts_p, pred_p, n_eff_p)), grad_p = plain._value_and_grad(
        moved, plain._model_inputs, state_p.reference_energies, plain._target_inputs)
    assert 1.0 < float(n_eff_l) < 6.0 and float(n_eff_l) == pytest.approx(float(n_eff_p), rel=1e-10)
    for name in ("pressure", "stress"):
        np.testing.assert_allclose(pred_l[name], pred_p[name], rtol=1e-9, atol=1e-9)
    assert float(loss_l) == pytest.approx(float(loss_p), rel=1e-9)
    np.testing.assert_allclose(grad_l, grad_p, rtol=1e-8, atol=1e-10 * float(jnp.max(jnp.abs(grad_p))))
    # the linear path's inputs: (U_prior, Phi) per state, no state in sight
    assert linear._model_inputs[1].shape == (6, SPEC.n_free)


def states_with_list(n_states=3, seed=0, velocities=False):
    positions, box = start(seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_states):
        p = positions + rng.normal(0, 0.01, positions.shape)
        v = jnp.asarray(rng.normal(0, 0.3, positions.shape)) if velocities else None
        out.append(State(jnp.asarray(p), jnp.asarray(box),
                         dense_neighbor_list(p, box, max(SPEC.neighbor_cutoff, PRIOR_CUTOFF) + 0.05), v))
    return out


@pytest.mark.parametrize("velocities", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_pressure_and_stress_from_virial_features_equal_the_observables_on_the_model(velocities):
    prior_energy, prior_terms = prior()
    potential = glue.uf3_potential(SPEC, prior_energy, prior_terms)
    masses = MASS if velocities else None
    p_target = glue.pressure_target("p", 0.0, SPEC, prior_energy, kT=KT, masses=masses)
    s_target = glue.stress_target("s", np.zeros((3, 3)), SPEC, prior_energy, kT=KT, masses=masses)
    theta = theta0(1) + 0.3 * jnp.asarray(np.random.default_rng(2).standard_normal(SPEC.n_free))
    for state in states_with_list(velocities=velocities):
        expected = pressure(potential.energy, theta, state, masses=masses, kT=KT)
        got = p_target.observable(theta, p_target.features(state))
        assert float(got) == pytest.approx(float(expected), rel=1e-10)
        np.testing.assert_allclose(s_target.observable(theta, s_target.features(state)),
                                   stress_tensor(potential.energy, theta, state, masses=masses, kT=KT),
                                   rtol=1e-10, atol=1e-10)
        # the model energy from its features
        assert float(potential.energy_from_features(theta, potential.features(state))) == pytest.approx(
            float(potential.energy(theta, state)), rel=1e-11)


def test_stiffness_from_born_features_equals_the_fluctuation_formula_on_the_model():
    prior_energy, _ = prior()
    positions, box = start()
    n = len(positions)
    target = glue.stiffness_target("c", np.zeros((3, 3, 3, 3)), SPEC, KT, n, box, prior_energy)
    theta = theta0(2)
    energy = glue.uf3_potential(SPEC, prior_energy).energy
    states = states_with_list(3, seed=4)
    weights = jnp.asarray([0.2, 0.5, 0.3])
    per_state = [target.observable(theta, target.features(s)) for s in states]
    averages = jax.tree.map(lambda *v: sum(w * x for w, x in zip(weights, v)), *per_state)
    got = target.combine(averages)
    terms = [born_terms(energy, theta, s) for s in states]
    reference = jax.tree.map(lambda *v: sum(w * x for w, x in zip(weights, v)), *terms)
    expected = fluctuation_stiffness(reference, jnp.asarray(box), KT, n)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(expected))))
    assert got.shape == (3, 3, 3, 3) and float(jnp.max(jnp.abs(got - got.transpose(2, 3, 0, 1)))) < 1e-9 * float(
        jnp.max(jnp.abs(got)))


def test_voigt_round_trip():
    c = np.random.default_rng(0).standard_normal((3, 3, 3, 3))
    c = c + c.transpose(1, 0, 2, 3)
    c = c + c.transpose(0, 1, 3, 2)
    c = c + c.transpose(2, 3, 0, 1)
    np.testing.assert_allclose(glue._from_voigt21(glue._to_voigt21(jnp.asarray(c))), c)


def test_smoothness_penalty_hand_value_and_gradient_transformation():
    spec = uf3.UF3Spec(pair_cutoff=0.5, leg_cutoff=0.3, n_pair=2, n_leg=1, n_jk=1)
    theta = jnp.asarray([1.0, 2.0, 3.0])
    # a = [1, 2, 0, 0, 0]: second differences -3, 2, 0 -> 13; c[0, 0, 0] = 3, all else 0: along each
    # axis the one non-zero second difference is 3 -> 9 per axis; weights pair 1, leg 0.5 (x2 axes), jk 2
    penalty = glue.smoothness_penalty(spec, pair=1.0, leg=0.5, jk=2.0)
    assert float(penalty(theta)) == pytest.approx(13.0 + 0.5 * (9.0 + 9.0) + 2.0 * 9.0)
    # usable as difftre.optim.add_penalty_gradient(penalty, weight): g <- g + weight * grad penalty
    transform = add_penalty_gradient(penalty, 0.1)
    updates, _ = transform.update(jnp.zeros(3), transform.init(theta), theta)
    # d/dtheta by hand: pair part 2 (-3 * 1 + 2 * (-2)) ... checked against finite differences instead
    h = 1e-6
    fd = [(penalty(theta.at[k].add(h)) - penalty(theta.at[k].add(-h))) / (2 * h) for k in range(3)]
    np.testing.assert_allclose(updates, 0.1 * np.asarray(fd), rtol=1e-6)
    with pytest.raises(ValueError, match="weight jk"):
        glue.smoothness_penalty(spec, jk=-1.0)


def test_coefficient_files(tmp_path):
    theta = np.random.default_rng(0).standard_normal(SPEC.n_free)
    path = glue.save_coefficients(tmp_path / "model", SPEC, theta)
    spec, loaded = glue.load_coefficients(path, SPEC)
    assert spec == SPEC
    np.testing.assert_array_equal(loaded, theta)
    # wrong shape of theta for the spec in the file
    np.savez(tmp_path / "short.npz", theta=theta[:-1], **{f: getattr(SPEC, f) for f in glue._SPEC_FIELDS})
    with pytest.raises(ValueError, match="field 'theta' has shape"):
        glue.load_coefficients(tmp_path / "short.npz")
    # a missing spec field
    np.savez(tmp_path / "nospec.npz", theta=theta, pair_cutoff=0.5)
    with pytest.raises(ValueError, match="field 'leg_cutoff' missing"):
        glue.load_coefficients(tmp_path / "nospec.npz")
    # the file's spec differs from the expected one
    other = uf3.UF3Spec(pair_cutoff=0.55, leg_cutoff=0.3, n_pair=5, n_leg=4, n_jk=6)
    with pytest.raises(ValueError, match="field 'pair_cutoff' is 0.5, expected 0.55"):
        glue.load_coefficients(path, other)
    # a spec field that is no number / knots that do not increase
    np.savez(tmp_path / "bad.npz", theta=theta, **{**{f: getattr(SPEC, f) for f in glue._SPEC_FIELDS},
                                                   "n_leg": np.array([4, 4])})
    with pytest.raises(ValueError, match="field 'n_leg' must be a number"):
        glue.load_coefficients(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="theta must have shape"):
        glue.save_coefficients(tmp_path / "x", SPEC, theta[:3])


def test_neighbour_lists_that_cannot_hold_the_legs_are_refused_before_the_run():
    prior_energy, prior_terms = prior()
    with pytest.raises(ValueError, match="cutoff=0.4 nm"):
        glue.uf3_potential(SPEC, prior_energy, prior_terms, cutoff=0.4)
    with pytest.raises(ValueError, match="cutoff=0.2"):
        glue.pressure_target("p", 0.0, SPEC, prior_energy, kT=KT, cutoff=0.2)
    # a force field with a half list (only pair terms), or a full list that stops short of the legs
    half = md.Sampler(md.ForceField(prior_terms), md.VelocityVerlet(0.002), skin=0.05)
    with pytest.raises(ValueError, match="half list"):
        glue.check_sampler(half, SPEC)
    short = md.ForceField([md.SystemTerm(glue.uf3_term(SPEC, theta0()).function,
                                         glue.uf3_params(SPEC, theta0()), 0.25)])
    with pytest.raises(ValueError, match="leg_cutoff=0.3"):
        glue.check_force_field(short, SPEC)
    # the potential's force field (what the trainer samples with) passes the check
    potential = glue.uf3_potential(SPEC, prior_energy, prior_terms)
    field = potential.force_field(theta0())
    glue.check_sampler(md.Sampler(field, md.VelocityVerlet(0.002), skin=0.05), SPEC)
    assert field.cutoff == pytest.approx(0.5) and not field.half_list
