"""The CUDA engine under numba's CUDA simulator, against the CPU kernels.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba is
imported, and the rest of the suite imports numba normally in the same pytest
process; so, unless this process already runs the simulator, the module holds
two tests that run subprocesses:

- ``test_cuda_engine_in_simulator``: this file again, in ``python -m pytest``
  with NUMBA_ENABLE_CUDASIM=1, where the simulator tests below run;
- ``test_cuda_kernels_compile_for_the_gpu``: the kernels compiled to PTX for
  a real GPU (sm_90) by NVVM, which needs no GPU; float32 physics kernels are
  checked to contain no float64 instruction. Skipped without NVVM or NVRTC.

Systems are tiny (the simulator runs Python per thread). With
DIFFTRE_CUDA_DEVICE_TESTS=1 on a machine with a GPU (bench/gpu_checks.py does
this) the same engine tests run on the device instead of the simulator.
"""
import copy
import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.cudasim

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(not HAVE_NUMBA_CUDA,
                                      reason="numba-cuda is not installed (pip install numba-cuda)")

import numba  # noqa: E402  (after the environment is settled by whoever started this process)

IN_SIMULATOR = bool(numba.config.ENABLE_CUDASIM) and HAVE_NUMBA_CUDA
# bench/gpu_checks.py runs the same engine tests on a real GPU with DIFFTRE_CUDA_DEVICE_TESTS=1
ON_DEVICE = (not IN_SIMULATOR and HAVE_NUMBA_CUDA and os.environ.get("DIFFTRE_CUDA_DEVICE_TESTS") == "1")
RUN_ENGINE_TESTS = IN_SIMULATOR or ON_DEVICE


def _start(args, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# ============================================================================ parent process

if not RUN_ENGINE_TESTS:
    @pytest.fixture(scope="module")
    def children(request):
        """The subprocesses of the selected tests, started together (they run in parallel)."""
        selected = {item.name for item in request.session.items}
        processes = {}
        if "test_cuda_engine_in_simulator" in selected:
            processes["simulator"] = _start(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__)],
                {"NUMBA_ENABLE_CUDASIM": "1"})
        if "test_cuda_kernels_compile_for_the_gpu" in selected:
            processes["ptx"] = _start([sys.executable, "-c", PTX_CHECK], {"NUMBA_ENABLE_CUDASIM": "0"})
        yield processes
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    def _finish(process, timeout):
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"subprocess timed out after {timeout} s:\n{output[-6000:]}")
        return process.returncode, output

    @needs_numba_cuda
    def test_cuda_engine_in_simulator(children):
        """Runs this file's simulator tests in a subprocess with NUMBA_ENABLE_CUDASIM=1."""
        code, output = _finish(children["simulator"], 900)
        tail = "\n".join(output.splitlines()[-60:])
        print(tail)
        assert code == 0, f"simulator tests failed:\n{tail}"

    PTX_CHECK = textwrap.dedent('''
        import sys, types
        try:
            from numba.cuda.cudadrv.nvvm import NVVM
            from numba.cuda.cudadrv import nvrtc
            NVVM()
            nvrtc.get_supported_ccs()      # the sm_90 code generation also needs NVRTC
        except Exception as exc:
            print("NO-NVVM/NVRTC", exc)
            sys.exit(77)
        import numba.cuda.dispatcher as dispatcher
        # compile for an H100/H200 (sm_90) without a device: device functions ask the current device's cc
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
        import numpy as np
        from numba import cuda, float32
        from difftre import md
        from difftre.kernels import external, integrators, pair, space
        import numba
        from difftre.kernels import manybody
        from difftre.kernels.cuda import ptx

        def f64(text):
            return [l.strip() for l in text.splitlines()
                    if ".f64" in l and not l.strip().startswith((".reg", "ld.param", "//"))]

        # float32 physics: not one float64 instruction
        scalar = (float32, float32[:])
        cases = {pair.lennard_jones: scalar, pair.lennard_jones_shifted: scalar, pair.repulsive: scalar,
                 space.minimum_image: (float32, float32, float32), space.wrap: (float32, float32),
                 manybody.stillinger_weber_on_atom: (numba.int64, float32[:, :], float32[:], float32[:],
                                                     numba.int32[:, :], numba.int32[:], float32[:], float32[:],
                                                     float32[:, :]),
                 external.harmonic: (float32[:], float32[:, :], float32[:], numba.int32[:, :], numba.int32[:],
                                     float32[:, :], float32[:, :]),
                 integrators.verlet_first_half: (float32[:, :],) * 3 + (float32[:], float32, float32[:], float32[:],
                                                 numba.uint64, numba.uint64),
                 integrators.kick: (float32[:, :], float32[:, :], float32[:], float32),
                 integrators.drift: (float32[:, :], float32[:, :], float32),
                 integrators.twice_kinetic_energy: (float32[:, :], float32[:])}
        bad = {}
        for fn, sig in cases.items():
            text = ptx.device_function_ptx(fn, np.float32, sig)
            if f64(text):
                bad[fn.__name__] = f64(text)[:5]
        print("float32 device functions checked:", len(cases))
        assert not bad, bad
        # known float64 in float32 mode: int * float32 is float64 in Numba (see docs/report)
        from difftre.kernels import neighbors
        from difftre.kernels import uf3
        known = {pair.tabulated: scalar, neighbors._cell_index: (float32, float32, numba.int64),
                 uf3.uf3_on_atom: (numba.int64, float32[:, :], float32[:], float32[:], numba.int32[:, :],
                                   numba.int32[:], float32[:], float32[:], float32[:, :]),
                 integrators.nose_hoover_chain_half_step: (float32[:, :], float32[:], float32, float32[:],
                                                           float32[:])}
        for fn, sig in known.items():
            print("known float64 instructions in float32", fn.__name__, len(f64(ptx.device_function_ptx(fn, np.float32, sig))))

        # whole kernels compile for the GPU
        from difftre.md_cuda import CudaMDState, CudaSampler

        def small_state(integrator, dtype, n=64):
            """A random state of one replica of n atoms: it supplies the kernel's argument types."""
            positions = np.random.default_rng(0).uniform(0, 3.0, (1, n, 3)).astype(dtype)
            chain = getattr(integrator, "chain_length", 0)
            return CudaMDState(positions, np.zeros_like(positions), np.ones((1, n), dtype),
                               np.full((1, 3), 3.0, dtype), np.zeros((1, 2 * chain), dtype), np.zeros(1, np.uint64),
                               0, 3 * n, np.zeros((1, n, 8), np.int32), np.zeros((1, n), np.int32),
                               positions.copy(), 8)

        lj = md.ForceField([md.lennard_jones(1.0, 0.3, 0.6)])
        sw = md.ForceField([md.stillinger_weber(200.0, 0.14), md.harmonic(5.0, [0.3, 0.3, 0.3])])
        for name, ff, integrator, dtype, mode, barostat in [
                ("lj-langevin-f32-replicas", lj, md.Langevin(0.002, 1.0, 1.0), np.float32, "replicas", None),
                ("sw-nosehoover-f64-grid", sw, md.NoseHooverChain(0.002, 1.0, 0.1), np.float64, "grid", None),
                ("lj-langevin-barostat-f32-replicas", lj, md.Langevin(0.002, 1.0, 1.0), np.float32, "replicas",
                 md.MonteCarloBarostat(1.0))]:
            sampler = CudaSampler(ff, integrator, skin=0.1, dtype=dtype, replicas=1, threads=64, mode=mode,
                                  barostat=barostat)
            text = ptx.kernel_ptx(sampler, small_state(integrator, sampler.dtype))
            print(name, "compiled:", len(text.splitlines()), "PTX lines,", len(f64(text)), "float64 instructions")
        print("PTX-OK")
    ''')

    @needs_numba_cuda
    def test_cuda_kernels_compile_for_the_gpu(children):
        """NVVM compiles the kernels for sm_90; float32 physics compiles without float64 instructions."""
        code, output = _finish(children["ptx"], 600)
        if code == 77:
            pytest.skip("NVVM/NVRTC (e.g. pip install 'cuda-toolkit[nvvm,nvrtc]==13.*') is not available: "
                        + output.strip().splitlines()[-1])
        print(output[-3000:])
        assert code == 0 and "PTX-OK" in output, output[-6000:]


# ============================================================================ simulator (or GPU) process

if RUN_ENGINE_TESTS:
    sys.path.insert(0, HERE)
    from conftest import brute_force_pairs, diamond_lattice, lattice_positions  # noqa: E402

    from difftre import md  # noqa: E402
    from difftre.kernels import neighbors  # noqa: E402
    from difftre.kernels import sampler as cpu_engine  # noqa: E402
    from difftre.md_cuda import CudaSampler  # noqa: E402

    EPS_LJ, SIGMA_LJ = 1.0, 0.3
    LJ = lambda: md.ForceField([md.lennard_jones(EPS_LJ, SIGMA_LJ, 0.6)])   # noqa: E731

    def smooth_pair_table():
        """Cubic Hermite table of a Morse-like pair potential, cut at 0.6 nm."""
        knots = np.linspace(0.2, 0.6, 21)
        h = knots[1] - knots[0]
        u = lambda r: 3.0 * (np.exp(-2 * 8 * (r - 0.3)) - 2 * np.exp(-8 * (r - 0.3))) * (0.6 - r) ** 2  # noqa
        du = lambda r, e=1e-6: (u(r + e) - u(r - e)) / (2 * e)  # noqa: E731
        rows = []
        for x in knots[:-1]:
            u0, u1, d0, d1 = u(x), u(x + h), du(x), du(x + h)
            rows.append([u0, d0, (3 * (u1 - u0) / h - 2 * d0 - d1) / h, (d0 + d1 - 2 * (u1 - u0) / h) / h ** 2])
        return knots[0], h, np.array(rows)

    FORCE_FIELDS = {
        "lj": LJ,
        "lj_shifted": lambda: md.ForceField([md.lennard_jones(1.2, 0.3, 0.6, shift=True)]),
        "repulsive": lambda: md.ForceField([md.repulsive(1.0, 0.28, 0.6)]),
        "tabulated": lambda: md.ForceField([md.tabulated_pair(*smooth_pair_table())]),
        "lj_plus_tabulated": lambda: md.ForceField([md.lennard_jones(0.5, 0.3, 0.5),
                                                    md.tabulated_pair(*smooth_pair_table())]),
        "stillinger_weber": lambda: md.ForceField([md.stillinger_weber(200.0, 0.14)]),
        "sw_plus_lj_harmonic": lambda: md.ForceField([md.stillinger_weber(200.0, 0.14),
                                                      md.lennard_jones(0.3, 0.2, 0.3),
                                                      md.harmonic(40.0, [0.5, 0.4, 0.6])]),
        "harmonic": lambda: md.ForceField([md.harmonic(150.0, [0.5, 0.4, 0.6])]),
    }

    def configurations(name, rng, replicas=2):
        """Two different configurations (R, N, 3) and their box."""
        if name.startswith("s"):   # distorted diamond, 64 atoms, bonds ~0.155 nm
            sites, box = diamond_lattice(2, 0.357)
            return np.stack([sites + rng.normal(0, 0.01, sites.shape) for _ in range(replicas)]), box
        if name == "harmonic":
            return rng.uniform(-0.5, 1.5, (replicas, 20, 3)), np.ones(3)
        box = np.full(3, 2.2)   # 64 particles, 3 cells per edge
        return np.stack([lattice_positions(4, 2.2, 0.04, rng) for _ in range(replicas)]), box

    def cpu_forces(ff, positions, box):
        positions = np.asarray(positions, np.float64)
        n = len(positions)
        idx, count = np.zeros((n, 4), np.int32), np.zeros(n, np.int32)
        if ff.cutoff > 0:
            idx = neighbors.build(positions, box, ff.cutoff, ff.half_list, idx, count, np.empty_like(positions))
        pairs, systems = ff.kernel_terms(np.float64)
        forces, virial = np.zeros_like(positions), np.zeros((3, 3))
        energy = cpu_engine.compute_forces(pairs, systems, positions, np.asarray(box, np.float64), idx, count,
                                           ff.half_list, forces, virial)
        return energy, forces, virial

    def full_list_pairs(state, r):
        n = state.nbr_count.shape[1]
        listed = [(i, int(j)) for i in range(n) for j in state.nbr_idx[r, i, :state.nbr_count[r, i]]]
        ordered = set(listed)
        assert len(listed) == len(ordered), "a neighbour is listed twice"
        assert all((j, i) in ordered for i, j in ordered), "the full list is not symmetric"
        return {(i, j) for i, j in ordered if i < j}

    @pytest.fixture
    def rng():
        return np.random.default_rng(20261121)

    # ------------------------------------------------------------------ forces

    def assert_forces_energy_virial_equal_cpu(ff, positions, box, masses=1.0):
        """The GPU's energy, forces and virial of configurations (R, N, 3) equal the CPU kernels' to 1e-10."""
        sampler = CudaSampler(ff, md.VelocityVerlet(0.001), skin=0.05, replicas=len(positions), threads=16)
        state = sampler.init_state(positions, box, masses, seed=0, velocities=np.zeros(positions.shape[1:]))
        energy, forces, virial = sampler.evaluate(state)
        for r in range(len(positions)):
            e_cpu, f_cpu, w_cpu = cpu_forces(ff, positions[r], box)
            assert energy[r] == pytest.approx(e_cpu, rel=1e-10, abs=1e-10)
            np.testing.assert_allclose(forces[r], f_cpu, rtol=1e-10, atol=1e-10 * np.abs(f_cpu).max())
            np.testing.assert_allclose(virial[r], w_cpu, rtol=1e-10, atol=1e-10 * np.abs(w_cpu).max())

    @pytest.mark.parametrize("name", FORCE_FIELDS)
    def test_forces_energy_virial_equal_cpu(name, rng):
        positions, box = configurations(name, rng)
        assert_forces_energy_virial_equal_cpu(FORCE_FIELDS[name](), positions, box)

    # ------------------------------------------------------------------ neighbour lists

    @pytest.mark.parametrize("case", ["cells", "all_pairs", "unwrapped_overflow"])
    def test_neighbor_lists_equal_brute_force(case, rng, monkeypatch):
        cutoff, skin = 0.6, 0.1
        if case == "cells":        # 3 x 4 x 3 cells, particles on faces and corners too
            box = np.array([2.2, 2.9, 2.3])
            positions = rng.uniform(0, 1, (2, 90, 3)) * box
            positions[:, :6, 0] = 0.0
            positions[:, 6:10, 0] = box[0]
            positions[:, 10:14, 2] = box[2]
        elif case == "all_pairs":  # fewer than 3 cells per edge
            box = np.full(3, 1.5)
            positions = rng.uniform(0, 1, (2, 60, 3)) * box
        else:                      # unwrapped positions; capacities of 1 force regrowth of both arrays
            box = np.full(3, 2.2)
            positions = rng.uniform(-10, 10, (2, 80, 3))
            monkeypatch.setattr(CudaSampler, "_initial_capacities", lambda self, n, box: (1, 1))
        sampler = CudaSampler(md.ForceField([md.lennard_jones(1.0, 0.3, cutoff)]), md.VelocityVerlet(0.001),
                              skin=skin, replicas=2, threads=16)
        state = sampler.init_state(positions, box, 1.0, seed=0, velocities=np.zeros(positions.shape[1:]))
        for r in range(2):
            assert full_list_pairs(state, r) == brute_force_pairs(positions[r], box, cutoff + skin)
        if case == "unwrapped_overflow":
            assert sampler.relaunches >= 2 and state.nbr_idx.shape[2] > 1 and state.cell_capacity > 1

    # ------------------------------------------------------------------ trajectories

    def cpu_and_gpu_runs(ff, integrator, positions, box, seeds, kT, n_equilibration, n_frames, stride, skin=0.05,
                         masses=12.0, prepare=None, barostat=None):
        """The GPU batch and one CPU run per replica from the same initial state (after prepare(state))."""
        R = len(positions)
        gpu = CudaSampler(ff, integrator, skin=skin, replicas=R, threads=16, barostat=barostat)
        state = gpu.init_state(positions, box, masses, seed=seeds, kT=kT)
        if prepare is not None:
            prepare(state)
        initial = copy.deepcopy(state)
        trajectory, state = gpu.run(state, n_equilibration, n_frames, stride, record_velocities=True)
        cpu = []
        for r in range(R):
            sampler = md.Sampler(ff, integrator, skin=skin, barostat=barostat)
            cpu.append(sampler.run(initial.replica(r, sampler), n_equilibration, n_frames, stride,
                                   record_velocities=True))
        return gpu, (trajectory, state), cpu

    def squeeze_into_fullest_row(state):
        """Capacity = today's largest row, and two particles flying into that row: a rebuild mid-run overflows."""
        state.nbr_idx = state.nbr_idx[:, :, :int(state.nbr_count.max())].copy()
        r, a = np.unravel_index(np.argmax(state.nbr_count), state.nbr_count.shape)
        d = state.positions[r] - state.positions[r, a]
        d -= state.box[r] * np.round(d / state.box[r])
        distance = np.linalg.norm(d, axis=1)
        outside = np.flatnonzero(distance > 0.66)
        for b in outside[np.argsort(distance[outside])[:2]]:
            state.velocities[r, b] = -(distance[b] - 0.6) / 0.04 * d[b] / distance[b]   # inside in < 10 steps

    def assert_same_trajectory(gpu_trajectory, gpu_state, cpu_runs, atol=1e-9):
        for r, (traj, state) in enumerate(cpu_runs):
            np.testing.assert_allclose(gpu_trajectory.positions[r], traj.positions, rtol=0, atol=atol)
            np.testing.assert_allclose(gpu_trajectory.velocities[r], traj.velocities, rtol=0, atol=100 * atol)
            scale = np.abs(traj.potential_energy).max()
            np.testing.assert_allclose(gpu_trajectory.potential_energy[r], traj.potential_energy, rtol=1e-9,
                                       atol=1e-9 * scale)
            np.testing.assert_allclose(gpu_trajectory.kinetic_energy[r], traj.kinetic_energy, rtol=1e-9)
            np.testing.assert_allclose(gpu_trajectory.virial[r], traj.virial, rtol=1e-8,
                                       atol=1e-9 * np.abs(traj.virial).max())
            np.testing.assert_allclose(gpu_state.positions[r], state.positions, rtol=0, atol=atol)
            assert gpu_trajectory.n_neighbor_rebuilds[r] == traj.n_neighbor_rebuilds
            if state.thermostat.size:
                np.testing.assert_allclose(gpu_state.thermostat[r], state.thermostat, rtol=1e-9, atol=1e-12)
            if traj.barostat_moves is not None:
                np.testing.assert_array_equal(gpu_trajectory.barostat_moves[r], traj.barostat_moves)
                np.testing.assert_allclose(gpu_trajectory.box[r], traj.box, rtol=atol, atol=0)
                np.testing.assert_allclose(gpu_state.box[r], state.box, rtol=atol, atol=0)
        assert gpu_state.step == cpu_runs[0][1].step

    @pytest.mark.parametrize("integrator", ["verlet", "langevin"])
    def test_trajectories_equal_cpu_sampler(integrator, rng):
        """20 steps, 2 replicas, neighbour-list rebuilds (and for verlet a capacity overflow mid-run)."""
        positions, box = configurations("lj", rng)
        chosen = {"verlet": md.VelocityVerlet(0.004), "langevin": md.Langevin(0.004, 2.5, 5.0)}[integrator]
        kT = 0.01 if integrator == "verlet" else 2.5
        gpu, (trajectory, state), cpu = cpu_and_gpu_runs(
            LJ(), chosen, positions, box, [3, 7], kT, 4, 4, 4,
            prepare=squeeze_into_fullest_row if integrator == "verlet" else None)
        assert_same_trajectory(trajectory, state, cpu)
        assert np.all(trajectory.n_neighbor_rebuilds > 0) if integrator == "langevin" else trajectory.n_neighbor_rebuilds.max() > 0
        if integrator == "verlet":
            assert gpu.relaunches >= 1, "the tightened list never overflowed"
        assert trajectory.positions.shape == (2, 4, 64, 3)

    def test_stillinger_weber_trajectory_equals_cpu(rng):
        positions, box = configurations("stillinger_weber", rng)
        ff = md.ForceField([md.stillinger_weber(200.0, 0.14)])
        _, (trajectory, state), cpu = cpu_and_gpu_runs(ff, md.VelocityVerlet(0.001), positions, box, [1, 2],
                                                       2.0, 0, 3, 3, skin=0.02, masses=28.0)
        assert_same_trajectory(trajectory, state, cpu)

    def uf3_water_like(rng, replicas=2):
        """UF3 on 64 water-like beads (33 /nm^3, box 1.247 nm): a force field with random coefficients
        (N(0, 0.5) kJ/mol; non-zero lower knots, so the skipped short legs and r_jk are exercised) and
        `replicas` jittered configurations (R, 64, 3) with their box."""
        from difftre import uf3 as uf3_glue
        from difftre.models import uf3 as uf3_model
        spec = uf3_model.UF3Spec(pair_cutoff=0.45, leg_cutoff=0.32, n_pair=6, n_leg=5, n_jk=8, pair_r_min=0.1,
                                 leg_r_min=0.2, jk_r_min=0.25)
        ff = md.ForceField([uf3_glue.uf3_term(spec, rng.normal(0.0, 0.5, spec.n_free))])
        length = (64 / 33.0) ** (1 / 3)
        return ff, np.stack([lattice_positions(4, length, 0.06, rng) for _ in range(replicas)]), np.full(3, length)

    def test_uf3_forces_and_trajectory_equal_cpu(rng):
        """The CUDA engine's UF3 (the per-atom gather uf3_on_atom) equals the CPU kernel: energy, forces and
        virial of two configurations, and a 6-step trajectory with a neighbour-list rebuild, to 1e-10."""
        ff, positions, box = uf3_water_like(rng)
        assert_forces_energy_virial_equal_cpu(ff, positions, box, masses=18.0)
        _, (trajectory, state), cpu = cpu_and_gpu_runs(ff, md.VelocityVerlet(0.002), positions, box, [1, 2], 2.5,
                                                       0, 3, 2, skin=0.01, masses=18.0)
        assert_same_trajectory(trajectory, state, cpu, atol=1e-10)
        assert trajectory.n_neighbor_rebuilds.max() > 0

    def test_nose_hoover_chain_equals_cpu_and_conserves(rng):
        """Segments of a Nose-Hoover run (shifted LJ, started at twice the bath temperature): every segment
        equals the CPU sampler's, and K + U + chain energy stays constant while K + U changes a lot."""
        positions, box = configurations("lj", rng, replicas=1)
        ff = md.ForceField([md.lennard_jones(1.0, 0.3, 0.6, shift=True)])
        integrator = md.NoseHooverChain(0.002, 2.5, 0.02, chain_length=3)
        gpu = CudaSampler(ff, integrator, skin=0.05, replicas=1, threads=16)
        state = gpu.init_state(positions, box, 12.0, seed=5, kT=5.0)
        cpu = md.Sampler(ff, integrator, skin=0.05)
        cpu_state = cpu.init_state(positions[0], box, 12.0, seed=5, velocities=state.velocities[0])
        params = integrator.params(state.dof, np.float64)
        conserved, mechanical = [], []
        for segment in range(6):
            trajectory, state = gpu.run(state, 0, 1, 5)
            cpu_trajectory, cpu_state = cpu.run(cpu_state, 0, 1, 5)
            np.testing.assert_allclose(trajectory.positions[0], cpu_trajectory.positions, rtol=0, atol=1e-9)
            np.testing.assert_allclose(state.thermostat[0], cpu_state.thermostat, rtol=1e-9, atol=1e-12)
            k_plus_u = trajectory.kinetic_energy[0, 0] + trajectory.potential_energy[0, 0]
            mechanical.append(k_plus_u)
            conserved.append(k_plus_u + md.integrators.nose_hoover_chain_energy(state.thermostat[0], params))
        print("Nose-Hoover: K + U", np.round(mechanical, 3), "H", np.round(conserved, 5))
        assert np.ptp(mechanical) > 50.0
        assert np.ptp(conserved) < 2e-4 * np.ptp(mechanical)

    @pytest.mark.parametrize("dim", [1, 2])
    def test_external_potential_langevin_in_1d_and_2d(dim, rng):
        """One-body terms in 1-D/2-D: one Philox call serves 4 // dim particles, an odd N leaves a part-chunk."""
        n = 11
        ff = md.ForceField([md.harmonic(30.0, [0.5] * dim)])
        integrator = md.Langevin(0.01, 1.0, 2.0)
        positions = rng.uniform(0, 1, (2, n, dim))
        gpu, (trajectory, state), cpu = cpu_and_gpu_runs(ff, integrator, positions, np.ones(dim), [21, 22], 1.0,
                                                         3, 3, 3, skin=0.0, masses=2.0)
        assert_same_trajectory(trajectory, state, cpu)

    def test_replicas_are_independent(rng):
        """Replica r of a batch equals a single-replica run from its own state (bit for bit)."""
        positions, box = configurations("lj", rng, replicas=3)
        integrator = md.Langevin(0.004, 2.5, 5.0)
        batch = CudaSampler(LJ(), integrator, skin=0.05, replicas=3, threads=16)
        state = batch.init_state(positions, box, 12.0, seed=[11, 12, 13], kT=2.5)
        trajectory, state = batch.run(state, 2, 3, 3)
        for r in (0, 2):
            single = CudaSampler(LJ(), integrator, skin=0.05, replicas=1, threads=16)
            s = single.init_state(positions[r:r + 1], box, 12.0, seed=[11 + r], kT=2.5)
            t, s = single.run(s, 2, 3, 3)
            np.testing.assert_array_equal(t.positions[0], trajectory.positions[r])
            np.testing.assert_array_equal(t.potential_energy[0], trajectory.potential_energy[r])
            np.testing.assert_array_equal(s.velocities[0], state.velocities[r])

    # ------------------------------------------------------------------ Monte Carlo barostat

    def test_barostat_replicas_equal_cpu_sampler(rng):
        """Each replica's volume moves (same uniform4 draws), boxes, positions, energies, virials and move counts
        are the CPU sampler's with its seed: 27 shifted-LJ atoms squeezed from a 2.2 nm box at a high pressure,
        so that in 40 steps moves are accepted, rejected and refused (edges near 2 (cutoff + skin)), the cell
        grid shrinks to all-pairs, and lists cut to today's longest row overflow in a rebuild and in a trial
        (both relaunch)."""
        positions = np.stack([lattice_positions(3, 2.2, 0.04, rng) for _ in range(2)])
        ff = md.ForceField([md.lennard_jones(1.2, 0.3, 0.6, shift=True)])
        barostat = md.MonteCarloBarostat(100.0, interval=2, max_volume_change=2.0)

        def tighten(state):
            state.nbr_idx = state.nbr_idx[:, :, :int(state.nbr_count.max())].copy()

        gpu, (trajectory, state), cpu = cpu_and_gpu_runs(ff, md.Langevin(0.004, 2.5, 5.0), positions, np.full(3, 2.2),
                                                         [3, 7], 2.5, 0, 10, 4, prepare=tighten, barostat=barostat)
        assert_same_trajectory(trajectory, state, cpu, atol=1e-10)
        attempted, accepted, refused = trajectory.barostat_moves.T
        print("barostat moves (attempted, accepted, refused) per replica:", trajectory.barostat_moves.tolist())
        assert np.all(attempted == 20) and np.all(accepted >= 5) and np.all(refused >= 1)
        assert np.all(accepted + refused <= 15), "too few rejections"
        assert trajectory.box.shape == (2, 10, 3) and not np.allclose(trajectory.box[0], trajectory.box[1])
        assert trajectory.box.min() < 3 * 0.65 and gpu.relaunches >= 2

    def test_barostat_ideal_gas_equals_cpu_sampler():
        """No forces and no neighbour list: each replica's volume chain is the CPU sampler's with its seed."""
        n, length = 10, 11.0 ** (1 / 3)
        positions = np.random.default_rng(0).uniform(0.0, length, (2, n, 3))
        barostat = md.MonteCarloBarostat(1.0, interval=1, max_volume_change=6.0)
        _, (trajectory, state), cpu = cpu_and_gpu_runs(md.ForceField([]), md.Langevin(0.01, 1.0, 1.0), positions,
                                                       np.full(3, length), [1, 2], 1.0, 0, 4, 5, masses=1.0,
                                                       barostat=barostat)
        assert_same_trajectory(trajectory, state, cpu, atol=1e-10)
        assert np.all(trajectory.barostat_moves[:, 0] == 20) and np.all(trajectory.barostat_moves[:, 1] > 0)
        assert not np.allclose(trajectory.box[0], trajectory.box[1])

    @pytest.mark.parametrize("barostat", [None, 100.0])
    def test_grid_mode_equals_replica_mode(barostat, rng):
        """The cooperative-grid layout gives the block layout's trajectory (one block under the simulator,
        4 blocks on a GPU, where sums over blocks may round differently)."""
        positions, box = configurations("lj", rng, replicas=1)
        if barostat is not None:   # pressure (kJ mol^-1 nm^-3): a move every 2 steps
            barostat = md.MonteCarloBarostat(barostat, interval=2, max_volume_change=1.0)
        runs = []
        for mode in ("replicas", "grid"):
            sampler = CudaSampler(LJ(), md.NoseHooverChain(0.004, 2.5, 0.05), skin=0.05, mode=mode, threads=16,
                                  barostat=barostat)
            s = sampler.init_state(positions, box, 12.0, seed=4, kT=2.5)
            runs.append(sampler.run(s, 2, 2, 4))
        if barostat is not None:
            np.testing.assert_array_equal(runs[0][0].barostat_moves, runs[1][0].barostat_moves)
            assert runs[0][0].barostat_moves[0, 1] > 0
            np.testing.assert_allclose(runs[0][0].box, runs[1][0].box, rtol=1e-12)
        np.testing.assert_allclose(runs[0][0].positions, runs[1][0].positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(runs[0][1].thermostat, runs[1][1].thermostat, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(runs[0][0].virial, runs[1][0].virial, rtol=1e-12, atol=1e-12)

    # ------------------------------------------------------------------ precision and errors

    def test_float32_state_and_trajectory(rng):
        positions, box = configurations("lj", rng)
        gpu = CudaSampler(LJ(), md.Langevin(0.004, 2.5, 5.0), skin=0.05, dtype=np.float32, replicas=2, threads=16)
        state = gpu.init_state(positions, box, 12.0, seed=[3, 7], kT=2.5)
        velocities = state.velocities.astype(np.float64)
        trajectory, state = gpu.run(state, 0, 2, 4)
        for array in (state.positions, state.velocities, trajectory.positions, trajectory.potential_energy,
                      trajectory.virial):
            assert array.dtype == np.float32
        cpu = md.Sampler(LJ(), md.Langevin(0.004, 2.5, 5.0), skin=0.05)
        s = cpu.init_state(positions[1], box, 12.0, seed=7, velocities=velocities[1])
        t, s = cpu.run(s, 0, 2, 4)
        np.testing.assert_allclose(trajectory.positions[1], t.positions, atol=2e-5)
        np.testing.assert_allclose(trajectory.potential_energy[1], t.potential_energy, rtol=1e-4)
        with pytest.raises(TypeError, match="float64, but this sampler runs in float32"):
            gpu.run(dataclass_replace(state, velocities=velocities), 0, 1, 1)

    def dataclass_replace(state, **changes):
        import dataclasses
        return dataclasses.replace(state, **changes)

    @pytest.mark.parametrize("failure", ["overlap", "jump"])
    def test_blow_up_reports_replica_step_particle(failure, rng):
        """Same step and particle as the CPU sampler; the healthy replica completes its run."""
        positions, box = configurations("lj", rng)
        velocities = np.zeros(positions.shape)
        if failure == "overlap":    # two particles on top of each other: non-finite forces
            positions[1, 9] = positions[1, 30]
        else:                       # one particle far too fast: moves more than the skin in a step
            velocities[1, 17] = [0.0, 40.0, 0.0]
        gpu = CudaSampler(LJ(), md.VelocityVerlet(0.002), skin=0.05, replicas=2, threads=16)
        state = gpu.init_state(positions, box, 12.0, seed=0, velocities=velocities)
        with pytest.raises(md.SimulationError, match="replica 1: trajectory blew up at step") as gpu_error:
            gpu.run(state, 0, 3, 2)
        cpu = md.Sampler(LJ(), md.VelocityVerlet(0.002), skin=0.05)
        with pytest.raises(md.SimulationError) as cpu_error:
            cpu.run(cpu.init_state(positions[1], box, 12.0, seed=0, velocities=velocities[1]), 0, 3, 2)
        assert (gpu_error.value.step, gpu_error.value.particle) == (cpu_error.value.step, cpu_error.value.particle)
        assert gpu_error.value.replica == 1 and gpu_error.value.failed_replicas == [1]
        kind = "non-finite" if failure == "overlap" else "moved more than"
        assert kind in str(gpu_error.value) and kind in str(cpu_error.value)

    def test_bad_input_is_reported(rng):
        positions, box = configurations("lj", rng)
        sampler = CudaSampler(LJ(), md.VelocityVerlet(0.002), skin=0.05, replicas=2, threads=16)
        bad = positions.copy()
        bad[1, 5, 2] = np.nan
        with pytest.raises(ValueError, match="replica 1: position of particle 5 is not finite"):
            sampler.init_state(bad, box, 12.0, seed=0, kT=1.0)
        with pytest.raises(ValueError, match="must exceed 2"):
            sampler.init_state(positions, np.full(3, 1.0), 12.0, seed=0, kT=1.0)
        with pytest.raises(ValueError, match="replicas"):
            CudaSampler(LJ(), md.VelocityVerlet(0.002), skin=0.05, replicas=2, mode="grid")
        with pytest.raises(ValueError, match="dtype"):
            CudaSampler(LJ(), md.VelocityVerlet(0.002), skin=0.05, dtype=np.float16)

    # ------------------------------------------------------------------ host-stepped mode (JAX forces)

    def jax_model_force_field(dtype=np.float64, blow_up_below=None):
        """A small MLP plus the harmonic prior, all in JAX, as the force field's only term (difftre.bridge)."""
        import jax
        from difftre import bridge
        from difftre.models import mlp, priors
        jax.config.update("jax_enable_x64", True)
        params = mlp.init_mlp(jax.random.PRNGKey(0), [1, 8, 8, 1], dtype)
        prior = priors.harmonic(150.0, [0.5], dtype=dtype)

        def energy(p, state):
            u = mlp.mlp_external_energy(p, state) + prior(p, state)
            if blow_up_below is not None:   # NaN energy and force once a particle passes below the threshold
                u = u + jax.numpy.sum(jax.numpy.sqrt(state.positions - blow_up_below))
            return u
        return md.ForceField([bridge.jax_force_term(energy, params)])

    @pytest.mark.parametrize("integrator", ["langevin", "nose_hoover"])
    def test_jax_forces_host_stepped_equal_cpu_sampler(integrator, rng):
        """JAX forces between per-half kernel launches give the CPU sampler's trajectory (same JAX term)."""
        chosen = {"langevin": md.Langevin(1e-3, 1.0, 2.0),
                  "nose_hoover": md.NoseHooverChain(1e-3, 1.0, 0.05, chain_length=2)}[integrator]
        positions = 0.5 + 0.08 * rng.standard_normal((2, 11, 1))
        gpu, (trajectory, state), cpu = cpu_and_gpu_runs(jax_model_force_field(), chosen, positions, np.ones(1),
                                                         [3, 7], 1.0, 3, 3, 2, skin=0.0, masses=1.0)
        for r, (traj, cpu_state) in enumerate(cpu):
            np.testing.assert_allclose(trajectory.positions[r], traj.positions, rtol=0, atol=1e-12)
            np.testing.assert_allclose(trajectory.velocities[r], traj.velocities, rtol=0, atol=1e-10)
            np.testing.assert_allclose(trajectory.potential_energy[r], traj.potential_energy, rtol=1e-12)
            np.testing.assert_allclose(trajectory.kinetic_energy[r], traj.kinetic_energy, rtol=1e-12)
            np.testing.assert_allclose(state.thermostat[r], cpu_state.thermostat, rtol=1e-12, atol=1e-14)
            assert state.step == cpu_state.step == 9
        assert not np.allclose(trajectory.positions[0], trajectory.positions[1])   # replicas differ
        import jax
        from difftre import bridge
        from difftre.models.state import State
        energy_fn, params = bridge.jax_term_model(gpu.force_field.system_terms[0])
        energies, forces, virial = gpu.evaluate(state)
        for r in range(2):
            energy, gradient = jax.value_and_grad(lambda x: energy_fn(params, State(x, state.box[r])))(
                state.positions[r])
            assert energies[r] == pytest.approx(float(energy), rel=1e-12)
            np.testing.assert_allclose(forces[r], -np.asarray(gradient), rtol=1e-12)
        assert np.all(np.isnan(virial))

    def test_jax_forces_blow_up_names_replica_step_particle(rng):
        positions = 0.5 + 0.02 * rng.standard_normal((2, 6, 1))
        velocities = np.zeros_like(positions)
        velocities[1, 4] = -60.0   # particle 4 of replica 1 crosses x = 0.3 within a few steps
        ff = jax_model_force_field(blow_up_below=0.3)
        integrator = md.VelocityVerlet(1e-3)
        gpu = CudaSampler(ff, integrator, replicas=2, threads=32)
        state = gpu.init_state(positions, np.ones(1), 1.0, seed=0, velocities=velocities)
        before = state.positions.copy()
        with pytest.raises(md.SimulationError, match="replica 1: trajectory blew up at step") as gpu_error:
            gpu.run(state, 0, 2, 5)
        cpu = md.Sampler(ff, integrator)
        with pytest.raises(md.SimulationError) as cpu_error:
            cpu.run(cpu.init_state(positions[1], np.ones(1), 1.0, seed=0, velocities=velocities[1]), 0, 2, 5)
        assert (gpu_error.value.step, gpu_error.value.particle) == (cpu_error.value.step, cpu_error.value.particle)
        assert gpu_error.value.particle == 4 and gpu_error.value.failed_replicas == [1]
        np.testing.assert_array_equal(state.positions, before)   # nothing of the failed run is kept

    def test_jax_forces_bad_set_ups_are_reported():
        import jax
        with pytest.raises(NotImplementedError, match="only term"):
            CudaSampler(md.ForceField([*jax_model_force_field().system_terms, md.harmonic(1.0, [0.5])]),
                        md.VelocityVerlet(1e-3))
        with pytest.raises(ValueError, match="mode 'replicas'"):
            CudaSampler(jax_model_force_field(), md.VelocityVerlet(1e-3), mode="grid")
        gpu = CudaSampler(jax_model_force_field(dtype=np.float32), md.VelocityVerlet(1e-3), dtype=np.float64)
        state = gpu.init_state(np.full((3, 1), 0.5), np.ones(1), 1.0, seed=0, kT=1.0)
        with pytest.raises(TypeError, match="computes in float32, float64, the sampler in float64"):
            gpu.run(state, 0, 1, 1)
        assert jax.config.jax_enable_x64

    # ------------------------------------------------------------------ DiffTRe training on the CUDA sampler

    def small_double_well(device):
        from difftre import runner
        from difftre.experiments import double_well
        _, config = runner.resolve("double-well", overrides={
            "system.n_particles": 12, "sampling.n_equilibration": 20, "sampling.n_frames": 4, "sampling.stride": 5,
            "sampling.device": device,
            "training.resample_threshold": 1.0, "training.chunk_size": 4})   # re-sample at every update after the first
        built = double_well.build(config)
        return built.trainer, built.params, built.positions

    @pytest.mark.parametrize("replicas", [1, 2])
    def test_training_on_the_cuda_sampler_equals_cpu_training(replicas):
        """Three double-well updates (two re-sampled): the CUDA sampler continues the CPU state and random
        stream, so losses, parameters and sampler states equal CPU training's (replicas: batched in one
        launch on the GPU, jobs of the executor on the CPU)."""
        runs = {}
        for device in ("cpu", "cuda"):
            trainer, params, positions = small_double_well(device)
            trainer.sampling = dataclasses.replace(trainer.sampling, replicas=replicas)
            state = trainer.init(params, positions, seed=4)
            metrics = [trainer.update(state) for _ in range(3)]
            runs[device] = (state, metrics)
        (cpu_state, cpu_metrics), (gpu_state, gpu_metrics) = runs["cpu"], runs["cuda"]
        assert [m["resampled"] for m in gpu_metrics] == [False, True, True]
        np.testing.assert_allclose([m["loss"] for m in gpu_metrics], [m["loss"] for m in cpu_metrics], rtol=1e-10)
        np.testing.assert_allclose(np.asarray(gpu_state.params), np.asarray(cpu_state.params), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(gpu_state.states.positions), np.asarray(cpu_state.states.positions), atol=1e-12)
        assert gpu_state.states.positions.shape[0] == 4 * replicas
        for gpu_replica, cpu_replica in zip(gpu_state.sampler_states, cpu_state.sampler_states, strict=True):
            np.testing.assert_allclose(gpu_replica.velocities, cpu_replica.velocities, atol=1e-10)
            assert gpu_replica.step == cpu_replica.step == 3 * (20 + 4 * 5)

    def test_continue_from_refuses_replicas_at_different_steps():
        sampler = CudaSampler(md.ForceField([md.harmonic(30.0, [0.5])]), md.Langevin(0.01, 1.0, 1.0), replicas=2)
        cpu = md.Sampler(md.ForceField([md.harmonic(30.0, [0.5])]), md.Langevin(0.01, 1.0, 1.0))
        states = [cpu.init_state(np.full((3, 1), 0.5), np.ones(1), 1.0, seed=s) for s in (0, 1)]
        states[1].step = 7
        with pytest.raises(ValueError, match="share the step counter"):
            sampler.continue_from(states)
        with pytest.raises(ValueError, match="need 2 states"):
            sampler.continue_from(states[:1])
