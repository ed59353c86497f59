"""pytest-benchmark suite: difftre vs JAX MD vs LAMMPS on the same systems (see bench/README.md)."""
import pytest

_RESULTS = {}   # (potential, n) -> {engine: result dict}; difftre runs first in each case


def pytest_addoption(parser):
    parser.addoption("--md-steps-scale", type=float, default=1.0,
                     help="multiply every timed step count of bench/test_bench_md.py (default 1)")
    parser.addoption("--md-rounds", type=int, default=None,
                     help="timed rounds per engine (default: 5 for difftre and LAMMPS, 3 for JAX MD)")


@pytest.fixture(scope="session")
def md_results():
    return _RESULTS


@pytest.fixture(scope="session")
def md_options(request):
    return {"scale": request.config.getoption("--md-steps-scale"),
            "rounds": request.config.getoption("--md-rounds")}


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    from difftre.benchmarks import machine_info
    info = machine_info()
    write = terminalreporter.write_line
    terminalreporter.section("MD steps per second (median round; ratio = difftre / peer)")
    write(f"machine: {info['cpu_model']}, {info['cpu_cores']} cores, load average {info.get('load_average_1min')}")
    write("| system | N | difftre | JAX MD | LAMMPS | difftre/JAX MD | difftre/LAMMPS |")
    write("|---|---:|---:|---:|---:|---:|---:|")
    for (potential, n), engines in _RESULTS.items():
        own = engines.get("difftre", {}).get("steps_per_second")

        def cell(engine):
            result = engines.get(engine)
            return f"{result['steps_per_second']:.1f}" if result else "skipped"

        def ratio(engine):
            result = engines.get(engine)
            return f"{own / result['steps_per_second']:.2f}" if own and result else "-"

        write(f"| {potential.upper()} | {n} | {cell('difftre')} | {cell('jaxmd')} | {cell('lammps')} | "
              f"{ratio('jaxmd')} | {ratio('lammps')} |")
