"""Sampling jobs and executors: replicas are independent and reproducible, the executors (threads in
this process, a Dask cluster of worker processes) give the same trajectories bit for bit, a lost
worker's job is run again elsewhere, blow-ups and bad configurations are clear errors."""
import copy
import dataclasses
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from difftre import executor, md, systems

FIELD = md.ForceField([md.lennard_jones(1.0, 1.0, 2.0)])
LANGEVIN = md.Langevin(dt=0.005, kT=1.0, friction=1.0)
SKIN = 0.3


def lj_start(n=108):
    """n LJ atoms on a lattice at the triple-point density (reduced units)."""
    positions, box, _ = systems.lattice_start(n, 0.8442)
    return positions, box


def replica_jobs(n_replicas=2, steps=(200, 10, 20), seed=7, n_atoms=108):
    sampler = md.Sampler(FIELD, LANGEVIN, skin=SKIN)
    states = executor.replica_states(sampler, *lj_start(n_atoms), 1.0, seed, n_replicas)
    return [executor.SamplingJob(FIELD, LANGEVIN, SKIN, np.float64, state, *steps, record_velocities=True)
            for state in states]


def blow_up_job():
    positions, box = lj_start()
    positions[17] = positions[42] + 0.05        # nearly on top of each other: enormous repulsion
    state = md.Sampler(FIELD, LANGEVIN, skin=SKIN).init_state(positions, box, 1.0, seed=0)
    return executor.SamplingJob(FIELD, LANGEVIN, SKIN, np.float64, state, 10, 1, 1)


def assert_same_states(a, b):
    """Equal bit for bit; the neighbour lists in their used entries (the rest of a list is scratch)."""
    for field in dataclasses.fields(md.MDState):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "nbr_idx":
            x, y = md.dense_neighbor_list(x, a.nbr_count), md.dense_neighbor_list(y, b.nbr_count)
        assert np.array_equal(x, y), field.name


def assert_same_results(results, expected):
    assert len(results) == len(expected)
    for (trajectory, state), (trajectory_ref, state_ref) in zip(results, expected):
        for field in dataclasses.fields(md.Trajectory):
            assert np.array_equal(getattr(trajectory, field.name), getattr(trajectory_ref, field.name)), field.name
        assert_same_states(state, state_ref)


@pytest.fixture(scope="module")
def jobs():
    return replica_jobs()


@pytest.fixture(scope="module")
def in_process(jobs):
    with executor.InProcessExecutor() as runner:
        return runner.map(jobs)


def test_replicas_in_threads_equal_serial_samplers_and_differ(jobs, in_process):
    before = [copy.deepcopy(job.state) for job in jobs]
    results = executor.InProcessExecutor(n_threads=2).map(jobs)
    for job, state in zip(jobs, before):
        assert_same_states(job.state, state)                      # the job's state is not mutated
    serial = [md.Sampler(FIELD, LANGEVIN, skin=SKIN).run(copy.deepcopy(job.state), 200, 10, 20,
                                                          record_velocities=True) for job in jobs]
    assert_same_results(results, serial)
    assert_same_results(in_process, serial)
    assert [job.state.seed for job in jobs] == [7, 8]
    assert not np.array_equal(results[0][0].positions, results[1][0].positions)
    assert not np.array_equal(jobs[0].state.velocities, jobs[1].state.velocities)


def test_two_jobs_in_a_row_equal_one_long_run(jobs):
    first, state = executor.run_job(jobs[0])
    second, state = executor.run_job(dataclasses.replace(jobs[0], state=state, n_equilibration=0))
    long_run, long_state = md.Sampler(FIELD, LANGEVIN, skin=SKIN).run(copy.deepcopy(jobs[0].state), 200, 20, 20,
                                                                      record_velocities=True)
    assert np.array_equal(np.concatenate([first.positions, second.positions]), long_run.positions)
    assert np.array_equal(np.concatenate([first.virial, second.virial]), long_run.virial)
    assert_same_states(state, long_state)


def test_pool_trajectories_keeps_replica_boundaries(in_process):
    trajectories = [trajectory for trajectory, _ in in_process]
    pooled, replica_of_frame = executor.pool_trajectories(trajectories)
    assert pooled.positions.shape == (20, 108, 3) and pooled.velocities.shape == (20, 108, 3)
    assert np.array_equal(replica_of_frame, np.repeat([0, 1], 10))
    for r, trajectory in enumerate(trajectories):
        for name in executor.PER_FRAME_FIELDS:
            assert np.array_equal(getattr(pooled, name)[replica_of_frame == r], getattr(trajectory, name))
    assert np.array_equal(pooled.box, trajectories[0].box)
    assert pooled.n_neighbor_rebuilds == sum(t.n_neighbor_rebuilds for t in trajectories)
    other_box = dataclasses.replace(trajectories[1], box=trajectories[1].box * 1.01)
    assert executor.pool_trajectories([trajectories[0], other_box])[0].box.shape == (20, 3)
    without_velocities = dataclasses.replace(trajectories[1], velocities=trajectories[1].velocities[:0])
    with pytest.raises(ValueError, match="velocities"):
        executor.pool_trajectories([trajectories[0], without_velocities])


def test_barostat_jobs_pool_per_frame_boxes(jobs):
    if not hasattr(md, "MonteCarloBarostat"):
        pytest.skip("difftre.md has no barostat yet")
    barostat = md.MonteCarloBarostat(pressure=1.0, interval=10, max_volume_change=0.5)
    npt = [dataclasses.replace(job, barostat=barostat) for job in jobs]
    results = executor.InProcessExecutor(n_threads=2).map(npt)
    expected = md.Sampler(FIELD, LANGEVIN, skin=SKIN, barostat=barostat).run(copy.deepcopy(jobs[0].state), 200, 10,
                                                                             20, record_velocities=True)
    assert_same_results(results[:1], [expected])
    pooled, _ = executor.pool_trajectories([trajectory for trajectory, _ in results])
    assert pooled.box.shape == (20, 3)
    assert np.array_equal(pooled.barostat_moves, results[0][0].barostat_moves + results[1][0].barostat_moves)


def test_blow_up_propagates_from_threads(jobs):
    with pytest.raises(md.SimulationError, match=r"step 0: particle (17|42)") as error:
        executor.InProcessExecutor(n_threads=2).map([jobs[0], blow_up_job()])
    assert error.value.step == 0 and error.value.particle in (17, 42)


@pytest.mark.parametrize("section, field", [
    ({"kind": "slurm"}, "executor.kind"),
    ({"kind": "inprocess", "n_threads": -1}, "executor.n_threads"),
    ({"kind": "inprocess", "n_workers": 2}, "executor.n_workers"),
    ({"kind": "dask", "n_workers": 1.5}, "executor.n_workers"),
    ({"kind": "dask", "threads_per_worker": 0}, "executor.threads_per_worker"),
    ({"kind": "dask", "retries": "2"}, "executor.retries"),
    ({"kind": "dask", "address": "my cluster"}, "executor.address"),
    ({"kind": "dask", "address": "tcp://node1:8786", "n_workers": 2}, "executor.n_workers"),
])
def test_bad_config_names_the_field(section, field):
    with pytest.raises(ValueError, match=field):
        executor.executor_from_config(section)


def test_config_builds_the_in_process_executor_and_bad_arguments_are_refused():
    built = executor.executor_from_config({"kind": "inprocess", "n_threads": 3})
    assert isinstance(built, executor.InProcessExecutor) and built.n_threads == 3
    assert executor.executor_from_config({}).n_threads is None
    with pytest.raises(ValueError, match="n_threads"):
        executor.InProcessExecutor(n_threads=0)
    with pytest.raises(ValueError, match="n_replicas"):
        executor.replica_states(md.Sampler(FIELD, LANGEVIN, skin=SKIN), *lj_start(), 1.0, 0, 0)


def test_missing_dask_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed -> ImportError
    with pytest.raises(ImportError, match=r"pip install difftre\[cluster\]"):
        executor.executor_from_config({"kind": "dask"})


# ----------------------------------------------------------------------------- Dask (LocalCluster of processes)

@pytest.fixture(scope="module")
def dask_executor():
    pytest.importorskip("distributed")
    with executor.executor_from_config({"kind": "dask", "n_workers": 2, "threads_per_worker": 1}) as runner:
        yield runner


def test_dask_equals_in_process_bit_for_bit(dask_executor, jobs, in_process):
    assert len(dask_executor.client.scheduler_info()["workers"]) == 2
    assert_same_results(dask_executor.map(jobs), in_process)


def test_blow_up_propagates_from_dask(dask_executor, jobs):
    with pytest.raises(md.SimulationError, match=r"step 0: particle (17|42)") as error:
        dask_executor.map([jobs[0], blow_up_job()])
    assert error.value.step == 0 and error.value.particle in (17, 42)


def executing_worker(client, timeout=60.0):
    """Address of a worker that is running a task now (its call stack is in the sampler)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for worker, stacks in client.call_stack().items():
            if any("_run_chunk" in "".join(stack) for stack in stacks.values()):
                return worker
        time.sleep(0.05)
    raise TimeoutError("no worker started the job")


def test_killed_worker_job_is_run_again_with_the_same_result(dask_executor):
    job = replica_jobs(1, steps=(30000, 10, 100))[0]           # about 1-3 s on one core
    expected = executor.run_job(job)
    results = {}
    mapping = threading.Thread(target=lambda: results.update(out=dask_executor.map([job])))
    mapping.start()
    client = dask_executor.client
    worker = executing_worker(client)
    pid = client.run(os.getpid, workers=[worker])[worker]
    os.kill(pid, signal.SIGKILL)
    assert mapping.is_alive()                                   # killed mid-job: no result yet
    mapping.join(timeout=120)
    assert not mapping.is_alive() and "out" in results
    assert_same_results(results["out"], [expected])
    assert worker not in client.scheduler_info()["workers"]
