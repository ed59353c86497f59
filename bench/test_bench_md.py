"""MD steps/s: difftre (Numba, float64) against JAX MD and LAMMPS on the same systems.

Every engine of a case starts from the same equilibrated state (a difftre
Langevin run from the lattice, memoised per case), runs one untimed warm-up
(compile, set-up), then `rounds` timed rounds of `steps` steps that continue
the trajectory. Reported per engine in benchmark.extra_info: steps_per_second
(steps / median round), atom_steps_per_second, compile_seconds and, for the
peers, ratio_difftre_over_peer (difftre runs first in each case).

    python -m pytest bench -q --benchmark-only
"""
import statistics
import time

import numpy as np
import pytest

from difftre.benchmarks import BenchmarkUnavailable, md_speed

CASES = [("lj", 1000), ("lj", 8000), ("sw", 1000)]
ENGINES = ("difftre", "jaxmd", "lammps")

# timed steps per round, about 1 s a round on one core (JAX MD: one jit chunk per round)
STEPS = {("lj", 1000): {"difftre": 1000, "lammps": 1000, "jaxmd": 100},
         ("lj", 8000): {"difftre": 200, "lammps": 200, "jaxmd": 20},
         ("sw", 1000): {"difftre": 1000, "lammps": 1000, "jaxmd": 100}}
ROUNDS = {"difftre": 5, "lammps": 5, "jaxmd": 3}
EQUILIBRATION = 1000


def _params():
    return [pytest.param(potential, n, engine, id=f"{potential}-{n}-{engine}")
            for potential, n in CASES for engine in ENGINES]


@pytest.mark.parametrize("potential, n, engine", _params())
def test_md_steps_per_second(benchmark, md_results, md_options, potential, n, engine):
    steps = max(1, int(round(STEPS[potential, n][engine] * md_options["scale"])))
    rounds = md_options["rounds"] or ROUNDS[engine]
    system = md_speed.equilibrate(md_speed.make_system(potential, n), EQUILIBRATION)

    start = time.perf_counter()
    try:
        runner = md_speed.make_runner(engine, system, np.float64, chunk=steps if engine == "jaxmd" else None)
    except BenchmarkUnavailable as error:
        pytest.skip(str(error))
    runner.run(steps if engine == "jaxmd" else 1)          # compile / set-up
    compile_seconds = time.perf_counter() - start
    runner.run(steps)                                       # warm-up

    walls = []

    def one_round():
        t0 = time.perf_counter()
        runner.run(steps)
        walls.append(time.perf_counter() - t0)

    benchmark.group = f"md-{potential}-{n}"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    temperature = system.temperature(runner.velocities())
    if hasattr(runner, "close"):
        runner.close()

    result = md_speed.describe(system, engine, steps, np.float64, "cpu", 1)
    result.update(md_speed.timing(system, steps, 1, statistics.median(walls)))
    result.update(compile_seconds=compile_seconds, rounds=len(walls), neighbor_rebuilds=runner.neighbor_rebuilds,
                  temperature=temperature)
    assert np.isfinite(result["temperature"]) and result["temperature"] > 0
    case = md_results.setdefault((potential, n), {})
    case[engine] = result
    info = {k: result[k] for k in ("engine", "potential", "n", "steps", "steps_per_second", "atom_steps_per_second",
                                   "compile_seconds", "neighbor_rebuilds", "temperature")}
    if engine != "difftre" and "difftre" in case:
        info["difftre_steps_per_second"] = case["difftre"]["steps_per_second"]
        info["ratio_difftre_over_peer"] = case["difftre"]["steps_per_second"] / result["steps_per_second"]
    benchmark.extra_info.update(info)
