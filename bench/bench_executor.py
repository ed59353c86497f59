"""Time one sampling round of R replicas of an LJ liquid in this process and on a local Dask cluster.

A round is what the trainer does per state point: R jobs (`difftre.executor.SamplingJob`, one per
replica, own seed) sampled at once, results gathered. Prints (reduced LJ units, Langevin, float64):
- the in-process round with one thread (serial) and one thread per core (the MD loop releases the GIL);
- the Dask cluster's start, the first and a second job on the same worker (import + kernel load
  from the on-disk cache vs warm), and a round on W worker processes;
- the gather cost per stored state (pickled bytes, seconds of `client.gather` once all jobs are done);
- the projected round time on W one-core workers: ceil(R / W) * (time of one replica) + gather time.
Usage:

    python bench/bench_executor.py --replicas 4 --workers 2 [--atoms 4000] [--steps 3000] [--frames 100]
"""
import argparse
import math
import os
import pickle
import time

import numpy as np

from difftre import executor, md, systems

CUTOFF, SKIN, DENSITY = 2.5, 0.3, 0.8442


def make_jobs(n_atoms, n_replicas, n_steps, n_frames, seed=0):
    """R jobs of n_steps steps each (a quarter equilibration), n_frames stored states per replica."""
    field = md.ForceField([md.lennard_jones(1.0, 1.0, CUTOFF)])
    langevin = md.Langevin(dt=0.005, kT=1.0, friction=1.0)
    positions, box, _ = systems.lattice_start(n_atoms, DENSITY)
    states = executor.replica_states(md.Sampler(field, langevin, skin=SKIN), positions, box, 1.0, seed, n_replicas)
    stride = max(1, (3 * n_steps // 4) // n_frames)
    return [executor.SamplingJob(field, langevin, SKIN, np.float64, state, n_steps - n_frames * stride, n_frames,
                                 stride) for state in states]


def timed(function, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def gather_cost(runner, jobs):
    """(bytes, seconds) per stored state of moving finished results from the workers to the client."""
    import distributed
    futures = runner.client.map(executor.run_job_remote, jobs, pure=False)
    distributed.wait(futures)
    seconds, results = timed(runner.client.gather, futures)
    n_states = sum(len(trajectory.potential_energy) for trajectory, _ in results)
    n_bytes = sum(len(pickle.dumps(result, protocol=5)) for result in results)
    return n_bytes / n_states, seconds / n_states


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--atoms", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=3000, help="steps per replica and round")
    parser.add_argument("--frames", type=int, default=100, help="stored states per replica and round")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          f"(a shared machine: other jobs take CPU time)")
    jobs = make_jobs(args.atoms, args.replicas, args.steps, args.frames)
    warm = make_jobs(args.atoms, 1, 10, 1)
    executor.run_job(warm[0])                                 # compile or load the kernels
    print(f"{args.replicas} replicas x {args.atoms} LJ atoms x {args.steps} steps, {args.frames} states each")

    serial, reference = timed(executor.InProcessExecutor(n_threads=1).map, jobs)
    threads, _ = timed(executor.InProcessExecutor().map, jobs)
    per_replica = serial / args.replicas
    print(f"in process, serial:             {serial:7.2f} s per round ({per_replica:.2f} s per replica)")
    print(f"in process, {executor.InProcessExecutor().threads_for(len(jobs))} threads:            "
          f"{threads:7.2f} s per round")

    start, runner = timed(executor.DaskExecutor, n_workers=args.workers, threads_per_worker=1)
    with runner:
        worker = next(iter(runner.client.scheduler_info()["workers"]))
        first, _ = timed(runner.client.submit(executor.run_job, warm[0], workers=[worker], pure=False).result)
        second, _ = timed(runner.client.submit(executor.run_job, warm[0], workers=[worker], pure=False).result)
        rounds = [timed(runner.map, jobs) for _ in range(2)]
        same = all(np.array_equal(a[0].positions, b[0].positions) and np.array_equal(a[1].velocities, b[1].velocities)
                   for a, b in zip(rounds[-1][1], reference))
        state_bytes, state_seconds = gather_cost(runner, jobs)
    print(f"dask: LocalCluster of {args.workers} processes up in {start:.2f} s; a 10-step job on a fresh worker "
          f"{first:.2f} s, again on the same worker {second:.3f} s")
    print(f"dask, {args.workers} workers:              " + ", ".join(f"{t:7.2f} s" for t, _ in rounds)
          + f" per round (first, second); bit for bit equal to in-process: {same}")
    n_states = args.replicas * args.frames
    gather = n_states * state_seconds
    print(f"gather: {state_bytes / 1e3:.1f} kB and {state_seconds * 1e3:.3f} ms per stored state "
          f"({gather:.3f} s for the round's {n_states} states)")
    print(f"projected round on W one-core workers, ceil({args.replicas} / W) x {per_replica:.2f} s + gather:")
    for n_workers in (1, 2, 4, 8, 16):
        print(f"  W = {n_workers:2d}: {math.ceil(args.replicas / n_workers) * per_replica + gather:7.2f} s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
