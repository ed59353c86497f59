"""difftre: Differentiable Trajectory Reweighting.

Numba kernels (``difftre.kernels``) make trajectories; JAX energy models
(``difftre.models``) and observables (``difftre.observables``) give the loss
and its gradient by reweighting (Thaler & Zavadlav, Nat. Commun. 12, 6884 (2021)).

Numba's on-disk cache goes to a per-user folder, ``$XDG_CACHE_HOME/difftre/numba``
(default ``~/.cache/difftre/numba``), never into the installed package; a
NUMBA_CACHE_DIR set by the user wins. It is set here, before any kernel is defined.
"""
import os
import sys


def _use_user_cache_folder():
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(cache_home, "difftre", "numba")
    if "numba.core.config" in sys.modules:   # numba was imported first: make it read the variable again
        sys.modules["numba.core.config"].reload_config()


_use_user_cache_folder()

__version__ = "0.1.0"
