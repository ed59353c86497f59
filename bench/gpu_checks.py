"""One-shot checks of the CUDA engine on a machine with a GPU (not a pytest file: never collected).

    python bench/gpu_checks.py                 # everything, JSON lines on stdout
    python bench/gpu_checks.py --quick         # fewer steps (a smoke run)
    python bench/gpu_checks.py --skip-tests --only lj64000

1. ``device_tests``: the CUDA engine tests of tests/test_cuda_sim.py on the device
   (DIFFTRE_CUDA_DEVICE_TESTS=1) instead of the simulator: forces/energies/virials
   of every kernel against the CPU kernels, neighbour lists against brute force
   with forced overflow, Verlet/Langevin/Nose-Hoover trajectories against the CPU
   sampler, replica independence, the cooperative-grid path (4 blocks), blow-ups;
   and tests/test_bridge_gpu.py: zero-copy numba-cuda / CuPy <-> JAX on the device.
2. ``agreement``: large systems through the multi-block cooperative-grid path
   against the CPU sampler (float64, velocity Verlet, 20 steps): LJ N = 64 000, SW N = 1000.
3. ``throughput``: velocity Verlet (NVE) after a GPU Langevin equilibration:
   LJ liquid rho* = 0.8442, rc = 2.5, skin 0.3, dt 0.005 (difftre.benchmarks.md_speed.lj_system):
   N = 64 000 single system (grid mode) and N = 1000 x 100 replicas (replica mode);
   SW silicon N = 1000, 300 K, skin 0.03 nm, dt 1 fs (difftre.benchmarks.md_speed.sw_system),
   single system in both layouts; float32 and float64. steps_per_second counts every
   replica's steps (replicas * steps / s), atom_steps_per_second = N times that.
4. ``jax_forces``: the host-stepped mode (integrator halves as kernels, JAX forces
   between them through difftre.bridge, no copies): the speed-up study's double
   well (MLP 1-100-100-1 + harmonic prior, Langevin dt 1e-3, friction 0.1), N = 1000
   x 1 and x 100 replicas; steps/s and the largest position difference from the
   CPU sampler with the same JAX term after 200 steps (replica 0, float64).
5. ``training``: the README's main job with sampling on the GPU (`difftre run double-well
   --device cuda`, default configuration, 200 updates): final loss, largest U error,
   seconds per re-sampled update; and the first 5 updates' losses on GPU and CPU (they
   continue the same random stream, so they agree up to rounding).
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def emit(record):
    print(json.dumps(record), flush=True)


def device_name():
    from numba import cuda
    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def run_device_tests():
    env = dict(os.environ, DIFFTRE_CUDA_DEVICE_TESTS="1", NUMBA_ENABLE_CUDASIM="0")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             os.path.join(REPO, "tests", "test_cuda_sim.py"),
                             os.path.join(REPO, "tests", "test_bridge_gpu.py")],
                            cwd=REPO, env=env, capture_output=True, text=True)
    lines = (result.stdout + result.stderr).strip().splitlines()
    failures = [line for line in lines if line.startswith("FAILED") or line.startswith("ERROR")]
    emit({"check": "device_tests", "returncode": result.returncode, "summary": lines[-1] if lines else "",
          "failures": failures, "seconds": round(time.perf_counter() - start, 1)})
    if result.returncode != 0:
        sys.stderr.write("\n".join(lines[-200:]) + "\n")


def systems(name):
    from difftre.benchmarks import md_speed
    if name.startswith("lj"):
        return md_speed.lj_system(int(name[2:]))
    return md_speed.sw_system(int(name[2:]))


def sampler_for(system, integrator, dtype, replicas=1, mode="auto"):
    from difftre import md_cuda
    from difftre.benchmarks import md_speed
    return md_cuda.CudaSampler(md_speed.difftre_force_field(system.potential), integrator, skin=system.skin,
                               dtype=dtype, replicas=replicas, mode=mode)


def equilibrated(system, steps, seed=0):
    """The system after `steps` GPU Langevin steps at its target kT (float64), positions wrapped."""
    from difftre import md
    if steps <= 0:
        return system
    sampler = sampler_for(system, md.Langevin(dt=system.dt, kT=system.kT, friction=system.friction), np.float64)
    state = sampler.init_state(system.positions, system.box, system.mass, seed, velocities=system.velocities)
    sampler.run(state, n_equilibration=steps, n_frames=0, stride=1)
    positions = state.positions[0] - system.box * np.floor(state.positions[0] / system.box)
    import dataclasses
    return dataclasses.replace(system, positions=positions, velocities=state.velocities[0].copy())


def agreement(name, steps=20):
    """Max |x_gpu - x_cpu| after `steps` Verlet steps, GPU cooperative-grid path vs the CPU sampler."""
    from difftre import md
    from difftre.benchmarks import md_speed
    system = equilibrated(systems(name), 200)
    integrator = md.VelocityVerlet(dt=system.dt)
    gpu = sampler_for(system, integrator, np.float64, mode="grid")
    state = gpu.init_state(system.positions, system.box, system.mass, 0, velocities=system.velocities)
    trajectory, state = gpu.run(state, 0, 1, steps)
    cpu = md.Sampler(md_speed.difftre_force_field(system.potential), integrator, skin=system.skin)
    cpu_state = cpu.init_state(system.positions, system.box, system.mass, 0, velocities=system.velocities)
    cpu_trajectory, cpu_state = cpu.run(cpu_state, 0, 1, steps)
    emit({"check": "agreement", "system": name, "mode": "grid", "n": system.n, "steps": steps,
          "max_position_difference": float(np.abs(state.positions[0] - cpu_state.positions).max()),
          "potential_energy_relative_difference": float(abs(trajectory.potential_energy[0, 0]
                                                            - cpu_trajectory.potential_energy[0])
                                                        / abs(cpu_trajectory.potential_energy[0])),
          "virial_max_difference": float(np.abs(trajectory.virial[0, 0] - cpu_trajectory.virial[0]).max()),
          "neighbor_rebuilds": [int(trajectory.n_neighbor_rebuilds[0]), int(cpu_trajectory.n_neighbor_rebuilds)]})


def throughput(name, replicas, mode, dtype, steps, equilibration):
    from difftre import md
    system = equilibrated(systems(name), equilibration)
    sampler = sampler_for(system, md.VelocityVerlet(dt=system.dt), dtype, replicas=replicas, mode=mode)
    start = time.perf_counter()
    state = sampler.init_state(system.positions, system.box, system.mass, 0, velocities=system.velocities)
    sampler.run(state, n_equilibration=10, n_frames=0, stride=1)     # compiles
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    frames, state = sampler.run(state, n_equilibration=steps, n_frames=0, stride=1)
    seconds = time.perf_counter() - start
    n_mode, threads = sampler._layout(system.n)
    kT = system.mass * float(np.mean(np.sum(state.velocities.astype(np.float64) ** 2, axis=(1, 2)))) \
        / (3 * system.n - 3)
    emit({"check": "throughput", "system": name, "potential": system.potential, "n": system.n,
          "replicas": replicas, "mode": n_mode, "threads_per_block": threads,
          "dtype": np.dtype(dtype).name, "steps": steps, "seconds": round(seconds, 4),
          "steps_per_second": replicas * steps / seconds,
          "atom_steps_per_second": replicas * steps * system.n / seconds,
          "compile_seconds": round(compile_seconds, 2),
          "neighbor_rebuilds_per_replica": float(np.mean(frames.n_neighbor_rebuilds)),
          "neighbor_capacity": int(state.nbr_idx.shape[2]), "final_kT": kT, "device": device_name()})


def jax_forces(n, replicas, dtype, steps):
    """Host-stepped double-well MLP sampling on the GPU: throughput and agreement with the CPU sampler."""
    import jax
    from difftre import bridge, md, md_cuda
    from difftre.models import mlp, priors
    jax.config.update("jax_enable_x64", True)
    params = mlp.init_mlp(jax.random.PRNGKey(0), [1, 100, 100, 1], dtype)
    prior = priors.harmonic(150.0, [0.5], dtype=dtype)

    def energy(p, state):
        return mlp.mlp_external_energy(p, state) + prior(p, state)

    ff = md.ForceField([bridge.jax_force_term(energy, params)])
    integrator = md.Langevin(dt=1e-3, kT=1.0, friction=0.1)
    positions = (0.5 + 0.08 * np.random.default_rng(0).standard_normal((n, 1))) % 1.0
    gpu = md_cuda.CudaSampler(ff, integrator, dtype=dtype, replicas=replicas)
    state = gpu.init_state(positions, np.ones(1), 1.0, seed=0, kT=1.0)
    initial = copy.deepcopy(state)
    gpu.run(state, 10, 0, 1)                                   # compiles
    start = time.perf_counter()
    gpu.run(state, steps, 0, 1)
    seconds = time.perf_counter() - start
    record = {"check": "jax_forces", "n": n, "replicas": replicas, "dtype": np.dtype(dtype).name, "steps": steps,
              "seconds": round(seconds, 3), "steps_per_second": replicas * steps / seconds,
              "ms_per_step": 1e3 * seconds / steps, "device": device_name()}
    if dtype == np.float64:
        check_steps = 200
        gpu_state = copy.deepcopy(initial)
        gpu.run(gpu_state, check_steps, 0, 1)
        cpu = md.Sampler(ff, integrator, dtype=dtype)
        _, cpu_state = cpu.run(initial.replica(0, cpu), check_steps, 0, 1)
        record["max_position_difference_vs_cpu"] = float(np.abs(gpu_state.positions[0] - cpu_state.positions).max())
    emit(record)


def training(out_dir, n_updates):
    """Double-well DiffTRe training with the CUDA sampler; the first updates against CPU sampling."""
    from difftre.experiments import double_well
    start = time.perf_counter()
    summary = double_well.run(os.path.join(out_dir, "double_well_cuda"), progress=False,
                              overrides={"sampling.device": "cuda", "training.n_updates": n_updates})
    record = {"check": "training", "device": device_name(), "updates": n_updates,
              "seconds": round(time.perf_counter() - start, 1)}
    record.update({k: summary[k] for k in ("final_loss", "potential_max_error_kT", "n_resampled",
                                           "mean_update_time_resampled_s", "mean_update_time_reused_s")})
    losses = {}
    for device in ("cuda", "cpu"):
        path = os.path.join(out_dir, f"double_well_first_updates_{device}")
        double_well.run(path, progress=False, overrides={"sampling.device": device, "training.n_updates": 5})
        with open(os.path.join(path, "metrics.jsonl")) as handle:
            losses[device] = [json.loads(line)["loss"] for line in handle]
    record["first_losses_cuda"], record["first_losses_cpu"] = losses["cuda"], losses["cpu"]
    emit(record)


CASES = {   # name: (system, replicas, mode, steps)
    "lj64000": ("lj64000", 1, "grid", 2000),
    "lj1000x100": ("lj1000", 100, "replicas", 2000),
    "sw1000": ("sw1000", 1, "replicas", 2000),
    "sw1000grid": ("sw1000", 1, "grid", 4000),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps")
    parser.add_argument("--skip-tests", action="store_true", help="no device tests")
    parser.add_argument("--skip-agreement", action="store_true", help="no large-system CPU comparison")
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(CASES), help="throughput cases")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--equilibration", type=int, default=500, help="GPU Langevin steps before timing")
    parser.add_argument("--skip-jax", action="store_true", help="no host-stepped JAX-forces runs")
    parser.add_argument("--skip-training", action="store_true", help="no double-well training on the GPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_runs"),
                        help="folder for the training runs (default: $OUT)")
    args = parser.parse_args(argv)
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    from numba import cuda
    if not cuda.is_available():
        emit({"check": "device", "error": "no CUDA device available"})
        return 1
    emit({"check": "device", "name": device_name()})
    if not args.skip_tests:
        run_device_tests()
    if not args.skip_agreement:
        for name in ("lj64000", "sw1000"):
            try:
                agreement(name)
            except Exception as error:  # noqa: BLE001 - report and go on with the other checks
                emit({"check": "agreement", "system": name, "error": f"{type(error).__name__}: {error}"})
    for case in args.only or CASES:
        name, replicas, mode, steps = CASES[case]
        steps = max(10, steps // 10) if args.quick else steps
        for dtype in args.dtypes:
            try:
                throughput(name, replicas, mode, np.dtype(dtype).type, steps, args.equilibration)
            except Exception as error:  # noqa: BLE001
                emit({"check": "throughput", "system": case, "dtype": dtype,
                      "error": f"{type(error).__name__}: {error}"})
    if not args.skip_jax:
        for replicas in (1, 100):
            for dtype in args.dtypes:
                try:
                    jax_forces(1000, replicas, np.dtype(dtype).type, 200 if args.quick else 2000)
                except Exception as error:  # noqa: BLE001
                    emit({"check": "jax_forces", "replicas": replicas, "dtype": dtype,
                          "error": f"{type(error).__name__}: {error}"})
    if not args.skip_training:
        try:
            training(args.out, 20 if args.quick else 200)
        except Exception as error:  # noqa: BLE001
            emit({"check": "training", "error": f"{type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
