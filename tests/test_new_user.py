"""What a new user meets first: where Numba's cache goes, compile time, warnings.

Each check runs a fresh Python process (as a user's script would), with its own
XDG_CACHE_HOME so that the per-user kernel cache starts empty.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import difftre
import difftre.kernels

PACKAGE_FOLDERS = [pathlib.Path(difftre.__file__).parent, pathlib.Path(difftre.kernels.__file__).parent]
COMPILE_NOTE = "difftre: compiling kernels"

# a small sampler run: a pair term, a system term and a thermostat, i.e. the sampler and pair loops that take
# kernels as arguments; prints whether the sampler loop was compiled or loaded from the cache
SAMPLER_RUN = textwrap.dedent("""
    import numpy as np
    from difftre import md, systems
    from difftre.kernels import sampler as engine
    positions, box, _ = systems.lattice_start(200, 0.8)
    sampler = md.Sampler(md.ForceField([md.lennard_jones(1.0, 1.0, 2.5), md.harmonic(0.1, [3.0, 3.0, 3.0])]),
                         md.Langevin(dt=0.002, kT=1.0, friction=1.0), skin=0.3)
    state = sampler.init_state(positions, box, 1.0, seed=0)
    sampler.run(state, n_equilibration=10, n_frames=2, stride=5)
    print("loaded from cache:", sum(engine.run.stats.cache_hits.values()),
          "compiled:", sum(engine.run.stats.cache_misses.values()))
""")


def run_python(code, cache_home, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(cache_home), **(extra_env or {}))
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def numba_cache_files(folders):
    return {path: path.stat().st_mtime_ns for folder in folders for pattern in ("*.nbi", "*.nbc")
            for path in pathlib.Path(folder).rglob(pattern)}


def test_kernels_cache_in_the_user_folder_load_in_the_next_process_and_warn_nothing(tmp_path):
    before = numba_cache_files(PACKAGE_FOLDERS)
    first = run_python(SAMPLER_RUN, tmp_path)
    second = run_python(SAMPLER_RUN, tmp_path)
    # nothing written into the installed package; the cache is in $XDG_CACHE_HOME/difftre/numba
    assert numba_cache_files(PACKAGE_FOLDERS) == before
    assert numba_cache_files([tmp_path / "difftre" / "numba"])
    # the first process compiles and says so once; the second loads the sampler loop and compiles nothing
    assert "loaded from cache: 0 compiled: 1" in first.stdout
    assert first.stderr.count(COMPILE_NOTE) == 1, first.stderr
    assert "loaded from cache: 1 compiled: 0" in second.stdout
    assert COMPILE_NOTE not in second.stderr, second.stderr
    # Numba's note on first-class function types is filtered where the kernels are defined (run with -W always)
    for result in (first, second):
        assert "Warning" not in result.stderr, result.stderr


def test_a_user_cache_folder_wins_and_numba_imported_first_follows(tmp_path):
    code = ("import numba, difftre, os; from numba.core import config; "
            "print(os.environ['NUMBA_CACHE_DIR']); print(config.CACHE_DIR)")
    default = run_python(code, tmp_path).stdout.split()
    assert default == [str(tmp_path / "difftre" / "numba")] * 2
    own = run_python(code, tmp_path, {"NUMBA_CACHE_DIR": str(tmp_path / "mine")}).stdout.split()
    assert own == [str(tmp_path / "mine")] * 2


@pytest.mark.parametrize("quiet", [False, True])
def test_the_compile_note_is_said_once_or_not_at_all(tmp_path, quiet):
    (tmp_path / "tiny_kernels.py").write_text(textwrap.dedent("""
        from difftre.kernels.jit import kernel

        @kernel(cache=False)
        def add_one(x):
            return x + 1.0

        @kernel(cache=False)
        def add_two(x):
            return x + 2.0
    """))
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from difftre.kernels import jit; "
            f"jit.compile_notice({not quiet}); import tiny_kernels; "
            "print(tiny_kernels.add_one(1.0) + tiny_kernels.add_two(1.0))")
    result = run_python(code, tmp_path)
    assert result.stdout.split() == ["5.0"]
    assert result.stderr.count(COMPILE_NOTE) == (0 if quiet else 1), result.stderr


def test_a_changed_kernel_argument_is_recompiled_never_loaded_stale(tmp_path):
    """A cached kernel taking a kernel argument: loaded when nothing changed, recompiled when the argument's
    source changed (its identity changes; the old cache entry is never matched and never breaks the index)."""
    (tmp_path / "user_apply.py").write_text(textwrap.dedent("""
        from difftre.kernels.jit import kernel

        @kernel
        def apply(fn, x):
            return fn(x)
    """))
    increment = tmp_path / "user_increment.py"
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import user_apply, user_increment; "
            "print(user_apply.apply(user_increment.increment, 1.0), "
            "sum(user_apply.apply.stats.cache_hits.values()), sum(user_apply.apply.stats.cache_misses.values()))")
    runs = []
    for step in (1.0, 1.0, 2.0, 2.0):
        increment.write_text(f"from difftre.kernels.jit import kernel\n\n\n@kernel\ndef increment(x):\n"
                             f"    return x + {step}\n")
        runs.append(run_python(code, tmp_path).stdout.split())
    # (result, loaded, compiled): compile, load, recompile after the edit, load
    assert runs == [["2.0", "0", "1"], ["2.0", "1", "0"], ["3.0", "0", "1"], ["3.0", "1", "0"]]
