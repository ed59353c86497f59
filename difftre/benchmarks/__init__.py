"""Benchmarks: difftre against other MD engines, and DiffTRe against direct AD.

Nothing in the core imports this package; ``difftre bench`` (`difftre.cli`) and
the pytest-benchmark suite in ``bench/`` do.

- `md_speed`: MD steps per second of an LJ liquid or SW silicon (``difftre bench md``);
- `peers`: the same systems run by JAX MD and LAMMPS (loading LAMMPS's MPI library);
- ``difftre bench grad`` is `difftre.speedup`.
"""
import os
import platform

import numpy as np


class BenchmarkUnavailable(RuntimeError):
    """An engine or device that this machine cannot run (missing package or hardware)."""


def machine_info():
    """CPU model, cores, platform and versions (for the JSON and the results table)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu_model": model, "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable,
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        pass
    return info

