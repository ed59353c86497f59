"""The sampler front end: bad input is a clear error, blow-ups name step and particle,
user-written kernels plug in, precision is what was asked for."""
import copy
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from conftest import lattice_positions
from difftre import md
from test_kernels_forces import evaluate

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "user_kernels.py"


def load_example():
    spec = importlib.util.spec_from_file_location("user_kernels", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # as a normal import would: Numba resolves kernels by module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lj_sampler():
    ff = md.ForceField([md.lennard_jones(1.0, 1.0, 2.5)])
    return md.Sampler(ff, md.Langevin(dt=0.005, kT=1.0, friction=1.0), skin=0.3)


def lj_positions(n_side=6, density=0.8):
    length = (n_side ** 3 / density) ** (1 / 3)
    return lattice_positions(n_side, length, 0.0, np.random.default_rng(0)), np.full(3, length)


@pytest.mark.parametrize("field, integrator", [
    ("kT", lambda: md.Langevin(dt=0.005, kT=0.0, friction=1.0)),
    ("kT", lambda: md.NoseHooverChain(dt=0.005, kT=-1.0, tau=0.5)),
    ("dt", lambda: md.Langevin(dt=-0.005, kT=1.0, friction=1.0)),
    ("dt", lambda: md.VelocityVerlet(dt=0.0)),
    ("dt", lambda: md.VelocityVerlet(dt=float("nan"))),
    ("friction", lambda: md.Langevin(dt=0.005, kT=1.0, friction=0.0)),
    ("tau", lambda: md.NoseHooverChain(dt=0.005, kT=1.0, tau=0.0)),
    ("chain_length", lambda: md.NoseHooverChain(dt=0.005, kT=1.0, tau=0.1, chain_length=0)),
])
def test_bad_integrator_parameters(field, integrator):
    with pytest.raises(ValueError, match=field):
        integrator()


def test_bad_state_input(lj_sampler):
    positions, box = lj_positions()
    with pytest.raises(ValueError, match="mass of particle 3"):
        lj_sampler.init_state(positions, box, np.where(np.arange(len(positions)) == 3, 0.0, 1.0), seed=0)
    bad = positions.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="particle 7"):
        lj_sampler.init_state(bad, box, 1.0, seed=0)
    with pytest.raises(ValueError, match="positive"):
        lj_sampler.init_state(positions, [box[0], -1.0, box[2]], 1.0, seed=0)
    with pytest.raises(ValueError, match="must exceed 2"):
        lj_sampler.init_state(positions[:10], np.full(3, 5.0), 1.0, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        md.kT_from_temperature(0.0)
    with pytest.raises(ValueError, match="float32 or float64"):
        md.Sampler(lj_sampler.force_field, lj_sampler.integrator, skin=0.3, dtype=np.float16)


def test_blow_up_names_step_and_particle(lj_sampler):
    positions, box = lj_positions()
    positions[17] = positions[42] + 0.05        # nearly on top of each other: enormous repulsion
    state = lj_sampler.init_state(positions, box, 1.0, seed=0)
    with pytest.raises(md.SimulationError, match=r"step 0: particle (17|42)") as error:
        lj_sampler.run(state, 10, 1, 1)
    assert error.value.step == 0 and error.value.particle in (17, 42)


def test_float32_runs_in_float32():
    ff = md.ForceField([md.lennard_jones(1.0, 1.0, 2.5)])
    sampler32 = md.Sampler(ff, md.Langevin(dt=0.005, kT=1.0, friction=1.0), skin=0.3, dtype=np.float32)
    positions, box = lj_positions()
    state = sampler32.init_state(positions, box, 1.0, seed=0)
    trajectory, state = sampler32.run(state, 10, 2, 5, record_velocities=True)
    for array in (state.positions, state.velocities, trajectory.positions, trajectory.velocities,
                  trajectory.potential_energy, trajectory.virial):
        assert array.dtype == np.float32
    sampler64 = md.Sampler(ff, sampler32.integrator, skin=0.3)
    with pytest.raises(TypeError, match="float32"):
        sampler64.run(state, 1, 1, 1)


def test_user_kernels_plug_in_without_editing_the_library():
    """The example's pair and system kernels: forces = -FD gradient, and they drive the sampler."""
    example = load_example()
    ff = example.user_force_field()
    rng = np.random.default_rng(3)
    positions, box = rng.uniform(0, 2.0, (120, 3)), np.full(3, 2.0)
    energy, forces, _ = evaluate(ff, positions, box)
    for i, a in [(0, 0), (5, 2), (77, 1), (119, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[i, a] += 1e-6
        minus[i, a] -= 1e-6
        fd = -(evaluate(ff, plus, box)[0] - evaluate(ff, minus, box)[0]) / 2e-6
        assert forces[i, a] == pytest.approx(fd, rel=1e-6, abs=1e-6)
    sampler = md.Sampler(ff, md.VelocityVerlet(dt=0.001), skin=0.1)
    state = sampler.init_state(positions, box, 18.0, seed=1, kT=2.5)
    trajectory, _ = sampler.run(state, 0, 20, 10)
    total = trajectory.potential_energy + trajectory.kinetic_energy
    assert np.ptp(total) < 1e-3 * np.abs(trajectory.kinetic_energy).mean()


def test_one_sampler_entry_point_for_cpu_and_cuda():
    """md.sampler(device=, replicas=) gives the CPU Sampler (the CUDA one is exercised by the training
    test under the simulator); wrong devices and CPU replicas are refused by name."""
    from difftre import md
    ff, integrator = md.ForceField([md.harmonic(1.0, [0.5])]), md.Langevin(0.01, 1.0, 1.0)
    assert type(md.sampler(ff, integrator)) is md.Sampler
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        md.sampler(ff, integrator, device="gpu")
    with pytest.raises(ValueError, match="replicas=1.*replicas=4.*device='cuda'"):
        md.sampler(ff, integrator, replicas=4)
