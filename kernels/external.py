"""External (one-body) potentials, any dimension (Numba).

They are system terms (see ``difftre.kernels.sampler``): functions
``fn(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy``
that add their forces and virial. External potentials act on the coordinate
wrapped into [0, L); their virial is W = sum_i F_i (x) x_i with that coordinate.
"""
import numpy as np
from difftre.kernels.jit import kernel

from difftre.kernels.space import wrap
from difftre.kernels.spline import spline_value_and_slope


@kernel
def harmonic(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """U = sum_i 0.5 k |x_i - c|^2; params = [k, c_0, ..., c_{dim-1}] (k in kJ/mol/nm^2)."""
    k = params[0]
    energy = 0.0
    n, dim = positions.shape
    for i in range(n):
        for a in range(dim):
            d = wrap(positions[i, a], box[a]) - params[1 + a]
            energy += 0.5 * k * d * d
            forces[i, a] -= k * d
            for b in range(dim):
                virial[a, b] -= k * d * wrap(positions[i, b], box[b])
    return energy


@kernel
def spline_1d(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """U = sum_i u(x_i) with u a packed cubic spline table (1-D systems)."""
    energy = 0.0
    for i in range(positions.shape[0]):
        x = wrap(positions[i, 0], box[0])
        u, du_dx = spline_value_and_slope(x, params)
        energy += u
        forces[i, 0] -= du_dx
        virial[0, 0] -= du_dx * x
    return energy
