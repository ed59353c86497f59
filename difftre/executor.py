"""Sampling jobs and the executors that run them: in this process, or on a Dask cluster.

A `SamplingJob` is everything one trajectory segment needs (force field, integrator,
the state to continue from, the steps); `run_job` runs it with the CPU `md.Sampler`
on a copy of the state. Several state points, each with R independent replicas
(`replica_states`), are sampled at once by an executor's ``map(jobs)``, which returns
the (Trajectory, final state) pairs in job order, and the replicas' frames are then
pooled (`pool_trajectories`).

- `InProcessExecutor` (the default) runs the jobs in a thread pool of this process:
  the compiled MD loop (`difftre.kernels.sampler.run`) is compiled with ``nogil=True``,
  so two jobs use two cores.
- `DaskExecutor` sends them to a ``dask.distributed`` cluster (a scheduler address, or
  a `LocalCluster` of worker processes it owns), with Dask's retries and its
  rescheduling of the tasks of a lost worker. Needs ``pip install difftre[cluster]``.

Results do not depend on the executor: the engine's random stream is keyed by the
state's seed and step counter, so a job gives the same trajectory bit for bit in any
thread or process that runs the same compiled code (same CPU kind; the workers load
the kernels from the on-disk cache of `difftre.kernels.jit`, keyed by source and CPU).
A `md.SimulationError` (a blow-up) is returned by the worker as data, not raised there:
Dask would retry it (it is deterministic) and could not unpickle it (its ``__init__``
takes step and particle); ``map`` raises it, with its step and particle, for the
first failed job in job order.
"""
import concurrent.futures
import copy
import dataclasses
import os
import re
from typing import Any

import numpy as np

from difftre import config, md
from difftre.kernels import parallel

PER_FRAME_FIELDS = ("positions", "velocities", "potential_energy", "kinetic_energy", "virial")
RUN_COUNTS = ("n_neighbor_rebuilds", "barostat_moves")   # Trajectory fields that count events of a run


@dataclasses.dataclass(frozen=True)
class SamplingJob:
    """One trajectory segment: continue ``state`` with a CPU `md.Sampler` of these settings.

    skin in nm; n_equilibration, n_frames and stride in steps as in `md.Sampler.run`;
    barostat: passed to `md.Sampler` only when given.
    """
    force_field: md.ForceField
    integrator: md.Integrator
    skin: float
    dtype: Any
    state: md.MDState
    n_equilibration: int
    n_frames: int
    stride: int
    record_velocities: bool = False
    barostat: Any = None


def job_sampler(job):
    """The CPU `md.Sampler` that runs ``job``."""
    options = {} if job.barostat is None else {"barostat": job.barostat}
    return md.Sampler(job.force_field, job.integrator, skin=job.skin, dtype=job.dtype, **options)


def run_job(job):
    """(md.Trajectory, md.MDState) of ``job``, run on a copy of its state (``job.state`` is left as
    it was). Raises md.SimulationError (with step and particle) on a blow-up."""
    return job_sampler(job).run(copy.deepcopy(job.state), job.n_equilibration, job.n_frames, job.stride,
                                record_velocities=job.record_velocities)


def replica_states(sampler, positions, box, masses, seed, n_replicas):
    """R = n_replicas independent initial states of ``sampler`` from the same positions (N, 3) nm,
    box (3,) nm and masses (u): replica r has seed ``seed + r`` (as the GPU samplers number their
    replicas), which draws its Maxwell-Boltzmann velocities and keys its random stream; each state
    carries its own seed and step counter, so it continues its own stream over later jobs.
    Independent state points need seeds at least n_replicas apart."""
    if int(n_replicas) != n_replicas or n_replicas < 1:
        raise ValueError(f"n_replicas must be a positive integer, got {n_replicas}")
    return [sampler.init_state(positions, box, masses, seed + r) for r in range(int(n_replicas))]


def pool_trajectories(trajectories):
    """The replicas' trajectories as one: (md.Trajectory, replica_of_frame).

    Frames (positions, velocities, energies, virials) are concatenated in replica order;
    replica_of_frame (n_frames_total,) int gives the replica of each frame (a block of a
    block-error estimate that spans two replicas joins two independent pieces; the trainer blocks
    the pooled states as they are). The box stays (dim,) when
    all replicas share it (NVT); otherwise, and when the boxes are already per frame, it
    becomes (n_frames_total, dim). The run counts (RUN_COUNTS: neighbour-list rebuilds, barostat
    moves) are summed.
    """
    if not trajectories:
        raise ValueError("pool_trajectories needs at least one trajectory")
    frame_counts = [len(t.potential_energy) for t in trajectories]
    replica_of_frame = np.repeat(np.arange(len(trajectories)), frame_counts)
    if len({t.velocities.shape[0] == 0 for t in trajectories}) > 1:
        raise ValueError("some trajectories recorded velocities and others did not; they cannot be pooled")
    pooled = {name: np.concatenate([getattr(t, name) for t in trajectories]) for name in PER_FRAME_FIELDS}
    boxes = [np.asarray(t.box) for t in trajectories]
    if all(b.ndim == 1 for b in boxes) and all(np.array_equal(b, boxes[0]) for b in boxes):
        pooled["box"] = boxes[0].copy()
    else:
        pooled["box"] = np.concatenate([np.broadcast_to(b, (n, b.shape[-1])) for b, n in zip(boxes, frame_counts)])
    names = {f.name for f in dataclasses.fields(md.Trajectory)}
    for name in names.intersection(RUN_COUNTS):
        values = [getattr(t, name) for t in trajectories]
        if len({value is None for value in values}) > 1:
            raise ValueError(f"some trajectories have {name} and others do not; they cannot be pooled")
        pooled[name] = None if values[0] is None else sum(values)
    unknown = names - set(pooled)
    if unknown:
        raise ValueError(f"pool_trajectories does not know how to pool Trajectory fields {sorted(unknown)}")
    return md.Trajectory(**pooled), replica_of_frame


# ----------------------------------------------------------------------------- executors

class _Executor:
    """``map(jobs)`` -> [(Trajectory, MDState)] in job order; ``close()``; a context manager."""

    def map(self, jobs):
        raise NotImplementedError

    def close(self):
        """Release what the executor holds (nothing for the in-process one)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class InProcessExecutor(_Executor):
    """Runs the jobs in this process, in a pool of n_threads threads (default: one per job, up to the
    number of cores). With DIFFTRE_PARALLEL=1 the jobs run one after another: the force loops then
    use Numba's threads, and Numba's default 'workqueue' threading layer must not be entered from
    two threads at once."""

    def __init__(self, n_threads=None):
        if n_threads is not None and (int(n_threads) != n_threads or n_threads < 1):
            raise ValueError(f"n_threads must be a positive integer or None, got {n_threads}")
        self.n_threads = n_threads

    def threads_for(self, n_jobs):
        """How many threads run n_jobs jobs."""
        if parallel.ENABLED:
            return 1
        return max(1, min(n_jobs, self.n_threads or os.cpu_count() or 1))

    def map(self, jobs):
        jobs = list(jobs)
        threads = self.threads_for(len(jobs))
        if threads == 1:
            return [run_job(job) for job in jobs]
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(run_job, jobs))


@dataclasses.dataclass(frozen=True)
class _Blowup:
    """A md.SimulationError as plain data, to cross a process boundary."""
    message: str
    step: int
    particle: int
    attributes: dict

    def error(self):
        error = md.SimulationError(self.message, self.step, self.particle)
        error.__dict__.update(self.attributes)
        return error


def run_job_remote(job):
    """`run_job` for a Dask worker: a blow-up comes back as a _Blowup value (not retried)."""
    try:
        return run_job(job)
    except md.SimulationError as error:
        attributes = {k: v for k, v in vars(error).items() if k not in ("step", "particle")}
        return _Blowup(str(error), error.step, error.particle, attributes)


def import_distributed():
    """The dask.distributed module, or an ImportError telling how to install it."""
    try:
        import distributed
    except ImportError as error:
        raise ImportError("the Dask executor needs dask.distributed: pip install difftre[cluster]") from error
    return distributed


class DaskExecutor(_Executor):
    """Runs the jobs on a dask.distributed cluster.

    address: a running scheduler's address ("tcp://host:8786"; a SLURM cluster made with
    dask-jobqueue, see README), or None for a LocalCluster of n_workers worker processes
    (default: Dask's choice, one per core) with threads_per_worker threads each, owned and
    closed by this executor. retries: how often a job that raised (other than a blow-up) is
    run again; a job whose worker is lost is rescheduled on another worker by the scheduler
    (up to its distributed.scheduler.allowed-failures, default 3).
    """

    def __init__(self, address=None, n_workers=None, threads_per_worker=1, retries=2):
        distributed = import_distributed()
        self.retries = int(retries)
        self.cluster = None
        if address:
            self.client = distributed.Client(address)
        else:
            self.cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                                    processes=True, dashboard_address=None)
            self.client = distributed.Client(self.cluster)

    def map(self, jobs):
        futures = self.client.map(run_job_remote, list(jobs), pure=False, retries=self.retries)
        results = self.client.gather(futures)
        for result in results:
            if isinstance(result, _Blowup):
                raise result.error()
        return results

    def close(self):
        """Close the client, and the local cluster when this executor made it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ----------------------------------------------------------------------------- configuration

_COUNT = config.in_range(0, 10 ** 6)
_ADDRESS = config.Rule(lambda value: value == "" or re.fullmatch(r"([a-z]+://)?\S+:\d+", value) is not None,
                       '"" (a local cluster) or a scheduler address such as "tcp://host:8786"')
# {kind: {field: (type, rule, default)}}; a count of 0 means "the default" (see executor_from_config)
EXECUTOR_FIELDS = {
    "inprocess": {"n_threads": (int, _COUNT, 0)},
    "dask": {"address": (str, _ADDRESS, ""), "n_workers": (int, _COUNT, 0),
             "threads_per_worker": (int, config.in_range(1, 10 ** 4), 1), "retries": (int, config.in_range(0, 100), 2)},
}


def checked_section(section, source="config"):
    """An ``[executor]`` config section (a dict) validated and completed with the defaults of its kind:

    {"kind": "inprocess", "n_threads": 0}   (0: one thread per job, up to the cores)
    {"kind": "dask", "address": "", "n_workers": 0, "threads_per_worker": 1, "retries": 2}
        (address "": a LocalCluster of n_workers processes, 0: one per core; else the scheduler's
        address, and n_workers must stay 0)

    Bad values are a difftre.config.ConfigError (a ValueError) naming the field.
    """
    section = dict(section)
    kind = section.pop("kind", "inprocess")
    if kind not in EXECUTOR_FIELDS:
        raise config.refuse(source, "executor.kind", kind, f"one of {sorted(EXECUTOR_FIELDS)}")
    fields = EXECUTOR_FIELDS[kind]
    values = {name: section.get(name, default) for name, (_, _, default) in fields.items()}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise config.ConfigError(f"{source}: unknown field executor.{unknown[0]} for kind {kind!r} "
                                 f"(expected kind and {sorted(fields)})")
    schema = {"executor": {name: (kind_, rule) for name, (kind_, rule, _) in fields.items()}}
    config.validate({"executor": values}, schema, source)
    if kind == "dask" and values["address"] and values["n_workers"]:
        raise config.ConfigError(f"{source}: field executor.n_workers applies to a local cluster only "
                                 f"(executor.address is {values['address']!r})")
    return {"kind": kind, **values}


def executor_from_config(section, source="config"):
    """The executor of an ``[executor]`` config section (see ``checked_section``); a Dask one connects to
    its scheduler or starts its local cluster now."""
    values = checked_section(section, source)
    if values["kind"] == "inprocess":
        return InProcessExecutor(values["n_threads"] or None)
    return DaskExecutor(values["address"] or None, values["n_workers"] or None, values["threads_per_worker"],
                        values["retries"])
