"""The one Numba decorator the kernels use, and how their compiled code is cached.

``error_model="numpy"``: a division by zero gives inf/nan instead of a Python
exception check on every division (which costs several times the arithmetic);
non-finite values are caught by the sampler (`difftre.kernels.sampler`).
User kernels may use it too: ``@kernel`` or ``@kernel(inline="always")``.

On-disk cache. Numba keys the compiled code of a function that takes other
kernels as arguments (the sampler loop, the pair loop) on the identity of those
arguments, which by default is a random id drawn anew in every process, so
such code could never be loaded from disk. Every kernel made here at module
level of a source file gets a stable identity instead: its module, name and a
digest of the kernels' sources (this package's files, and the kernel's own file
when it lies outside) and of the environment variables that choose code at
import (DIFFTRE_PARALLEL). A changed source or setting gives a new identity,
and every cache entry is keyed on that digest too (Numba alone checks only a
function's own file), so nothing stale is loaded. The sampler loop with, say, LJ and velocity Verlet
then compiles once per machine, not once per process. A closure (a new
function per call, e.g. the JAX force term of `difftre.bridge`) keeps a random
identity; code taking it as an argument is compiled in every process and is
never written to disk (`_KernelCache`). Where the cache lives: `difftre`
(its ``__init__``) points NUMBA_CACHE_DIR at a per-user folder.

When a kernel is compiled (not loaded), one line "difftre: compiling kernels..."
goes to stderr, once per process; ``compile_notice(False)`` silences it.
"""
import functools
import hashlib
import inspect
import os
import sys
import warnings
import weakref

from numba import njit
from numba.core import event, types
from numba.core.caching import FunctionCache
from numba.core.errors import NumbaExperimentalFeatureWarning

# Kernels are passed to kernels as first-class functions; Numba notes each time that the feature is
# experimental. Only that note, for that feature, is silenced.
warnings.filterwarnings("ignore", message="First-class function type feature is experimental",
                        category=NumbaExperimentalFeatureWarning)

CONFIGURATION_VARIABLES = ("DIFFTRE_PARALLEL",)   # read by the kernels at import to choose code
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_KERNELS = weakref.WeakSet()                      # every dispatcher made by `kernel`
_STABLE = weakref.WeakSet()                       # those with a stable identity
_NOTICE = {"enabled": True, "shown": False}


@functools.lru_cache(maxsize=None)
def _file_digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@functools.lru_cache(maxsize=None)
def _package_digest():
    """Digest of every source file of difftre.kernels and of CONFIGURATION_VARIABLES."""
    digest = hashlib.sha256()
    for folder, _, names in sorted(os.walk(_PACKAGE)):
        for name in sorted(n for n in names if n.endswith(".py")):
            digest.update(f"{os.path.relpath(os.path.join(folder, name), _PACKAGE)}:".encode())
            digest.update(_file_digest(os.path.join(folder, name)).encode())
    for variable in CONFIGURATION_VARIABLES:
        digest.update(f"{variable}={os.environ.get(variable, '')}".encode())
    return digest.hexdigest()


def _stable_identity(function):
    """'difftre-kernel:module.name:digest' for a module-level function in a source file, else None."""
    if function.__closure__ is not None or "<locals>" in function.__qualname__:
        return None
    try:
        path = os.path.abspath(inspect.getfile(function))
    except TypeError:
        return None
    digest = _package_digest()
    if not path.startswith(_PACKAGE + os.sep):
        if not os.path.isfile(path):
            return None
        digest = hashlib.sha256((digest + _file_digest(path)).encode()).hexdigest()
    return f"difftre-kernel:{function.__module__}.{function.__qualname__}:{digest[:32]}"


def _names_unstable_kernel(numba_types):
    """Whether Numba argument types name a function without a stable identity (also inside tuples)."""
    for numba_type in numba_types:
        if isinstance(numba_type, types.Dispatcher) and numba_type.dispatcher not in _STABLE:
            return True
        if isinstance(numba_type, types.BaseTuple) and _names_unstable_kernel(numba_type.types):
            return True
    return False


def _identity_key(numba_types):
    """The argument types with every kernel replaced by its identity string (also inside tuples)."""
    return tuple(("kernel", t.dispatcher._uuid) if isinstance(t, types.Dispatcher)
                 else (type(t).__name__, _identity_key(t.types)) if isinstance(t, types.BaseTuple)
                 else t for t in numba_types)


class _KernelCache(FunctionCache):
    """Numba's on-disk cache, keyed on the identities of kernel arguments, not on the kernel objects.

    Numba's own index key holds the kernel objects themselves; loading an index
    whose entries name kernels of an older source would rebuild (and compile)
    those old kernels, and saving it again fails once they are gone. Identity
    strings are plain data: an old entry is merely never matched. Signatures
    that name a kernel without a stable identity are neither loaded nor saved
    (such an entry could never be loaded again and would only fill the index).
    """

    def _index_key(self, sig, codegen):
        """Numba's key (target, bytecode) with kernel identities for kernel arguments, plus the digest of
        the kernels' sources: Numba checks only the function's own file, so without it a kernel calling
        a changed kernel of another module would load the old code."""
        _, *rest = super()._index_key(sig, codegen)
        return (_identity_key(getattr(sig, "args", sig)), *rest, _package_digest())

    def load_overload(self, sig, target_context):
        if _names_unstable_kernel(getattr(sig, "args", sig)):
            return None
        return super().load_overload(sig, target_context)

    def save_overload(self, sig, data):
        if not _names_unstable_kernel(getattr(sig, "args", sig)):
            super().save_overload(sig, data)


def kernel(function=None, **options):
    """numba.njit with error_model='numpy' and the on-disk cache (``cache=False`` to opt out), plus any
    other njit options."""
    if function is None:
        return functools.partial(kernel, **options)
    cache = options.pop("cache", True)
    dispatcher = njit(**{"error_model": "numpy", **options})(function)
    _KERNELS.add(dispatcher)
    identity = _stable_identity(function)
    if identity is not None:
        dispatcher._set_uuid(identity)
        _STABLE.add(dispatcher)
    if cache:
        dispatcher._cache = _KernelCache(function)
    return dispatcher


def compile_notice(enabled):
    """Say (True, the default) or not (False) "compiling kernels..." when a kernel compiles."""
    _NOTICE["enabled"] = bool(enabled)


class _CompileNotice(event.Listener):
    """Prints the note when a kernel made by `kernel` compiles (not when it loads) for the first time
    in this process."""

    def on_start(self, ev):
        if _NOTICE["enabled"] and not _NOTICE["shown"] and ev.data["dispatcher"] in _KERNELS:
            _NOTICE["shown"] = True
            print("difftre: compiling kernels... (10-20 s, once per machine for each set of force-field terms, "
                  "integrator and dtype; code with a JAX force term compiles in every process)",
                  file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


event.register("numba:compile", _CompileNotice())
