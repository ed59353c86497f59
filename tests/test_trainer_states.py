"""The trainer on the state contract with neighbour lists: fixed targets computed once per trajectory
on their own lists, parameter-dependent targets on the potential's list, a model's linear split."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from difftre import md
from difftre.models import pair_spline, priors
from difftre.models.state import State
from difftre.observables import bin_centers, pressure, rdf, rdf_list_cutoff
from difftre.potential import Potential
from difftre.trainer import SamplingConfig, Target, Trainer

jax.config.update("jax_enable_x64", True)

KT, CUTOFF, SIGMA = 2.5, 0.6, 0.3165


def small_liquid(features=False):
    """64 repulsive beads (the CG-water prior) plus a pair spline, with an RDF and a pressure target."""
    grid = pair_spline.pair_spline_grid(0.25, CUTOFF, 8)
    model, prior = pair_spline.pair_spline(grid), priors.repulsive(1.0, SIGMA, CUTOFF, dtype=np.float64)

    def energy(params, state):
        return model(params, state) + prior(params, state)

    def force_field(params):
        return md.ForceField([md.tabulated_pair(*pair_spline.export_pair_table(params, grid)),
                              md.repulsive(1.0, SIGMA, CUTOFF)])

    split = {}
    if features:   # the energy is linear in the knot values: U = prior + theta . Phi
        basis = jax.jacfwd(model)
        split = dict(features=lambda s: (prior(None, s), basis(jnp.zeros(grid.n - 1), s)),
                     energy_from_features=lambda p, f: f[0] + f[1] @ p)
    potential = Potential(energy, force_field, cutoff=CUTOFF, **split)
    centers = bin_centers(0.0, 0.8, 40)
    targets = [Target("rdf", np.ones(40), features=lambda s: rdf(s, centers), cutoff=rdf_list_cutoff(centers)),
               Target("pressure", np.array(0.0), gamma=1e-4,
                      observable=lambda p, s: pressure(energy, p, s, kT=KT))]
    sampling = SamplingConfig(md.Langevin(0.002, KT, 5.0), 50, 8, 10, skin=0.1)
    trainer = Trainer(potential, targets, optax.adam(1e-2), sampling, box=np.full(3, 2.0), masses=18.0, kT=KT,
                      chunk_size=3)
    rng = np.random.default_rng(0)
    positions = (np.stack(np.meshgrid(*[np.arange(4)] * 3), -1).reshape(-1, 3) + 0.5) * 0.5
    positions += 0.02 * rng.standard_normal(positions.shape)
    params = 0.1 * jnp.asarray(rng.standard_normal(grid.n - 1))
    return trainer, params, positions, centers, energy


def test_fixed_and_parameter_dependent_targets_on_their_lists():
    trainer, params, positions, centers, energy = small_liquid()
    state = trainer.init(params, positions, seed=0)
    states = state.states
    assert states.neighbors.shape[:2] == (8, 64)
    # the RDF features (built chunk by chunk on 1.1 nm lists) equal the all-pairs RDF of each state
    all_pairs = jax.vmap(lambda s: rdf(s._replace(neighbors=None), centers))(states)
    np.testing.assert_allclose(trainer._target_inputs["rdf"], all_pairs, rtol=1e-12, atol=1e-12)
    (loss, (parts, predictions, n_eff)), grads = trainer._value_and_grad(
        state.params, trainer._model_inputs, state.reference_energies, trainer._target_inputs)
    assert float(n_eff) == pytest.approx(8.0, rel=1e-12)
    np.testing.assert_allclose(predictions["rdf"], all_pairs.mean(0), rtol=1e-12)
    direct = np.mean([pressure(energy, params, State(x, np.full(3, 2.0), nbrs), kT=KT)
                      for x, nbrs in zip(states.positions, states.neighbors)])
    assert float(predictions["pressure"]) == pytest.approx(direct, rel=1e-10)
    # the gradient equals central finite differences of the reweighted loss
    h = 1e-5
    for k in (0, 3, 6):
        step = jnp.zeros_like(params).at[k].set(h)
        args = (trainer._model_inputs, state.reference_energies, trainer._target_inputs)
        plus, minus = (trainer._value_and_grad(params + sign * step, *args)[0][0] for sign in (1, -1))
        assert float(grads[k]) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-5, abs=1e-12)


def test_linear_split_gives_the_same_loss_and_gradient():
    """A model given as per-state features + energy_from_features reweights exactly as its energy does."""
    runs = []
    for features in (False, True):
        trainer, params, positions, *_ = small_liquid(features)
        state = trainer.init(params, positions, seed=1)
        moved = params + 0.05
        runs.append(trainer._value_and_grad(moved, trainer._model_inputs, state.reference_energies,
                                            trainer._target_inputs))
    (loss_a, aux_a), grad_a = runs[0]
    (loss_b, aux_b), grad_b = runs[1]
    assert float(aux_a[2]) < 8.0 and float(aux_b[2]) == pytest.approx(float(aux_a[2]), rel=1e-9)
    assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-9)
    np.testing.assert_allclose(grad_b, grad_a, rtol=1e-7)
