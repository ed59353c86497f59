"""The force field's sum over its terms (Numba): the one force evaluation of the MD loop
(`difftre.kernels.sampler`) and of the barostat's trial volumes (`difftre.kernels.barostat`).

Force field: pair_terms, a tuple of (pair_fn, params, cutoff) (see
`difftre.kernels.pair`), and system_terms, a tuple of (fn, params) of whole-system
functions (many-body and external, see `difftre.kernels.manybody`).
"""
from numba import literal_unroll

from difftre.kernels.jit import kernel
from difftre.kernels.pair import pair_forces


@kernel
def compute_forces(pair_terms, system_terms, positions, box, nbr_idx, nbr_count, half_list, forces, virial):
    """Zero and fill forces (kJ/mol/nm) and virial (kJ/mol); return the potential energy (kJ/mol)."""
    forces[:] = 0.0
    virial[:] = 0.0
    energy = 0.0
    if len(pair_terms) > 0:
        for term in literal_unroll(pair_terms):
            energy += pair_forces(term[0], term[1], term[2], positions, box, nbr_idx, nbr_count, half_list,
                                  forces, virial)
    if len(system_terms) > 0:
        for term in literal_unroll(system_terms):
            energy += term[0](term[1], positions, box, nbr_idx, nbr_count, forces, virial)
    return energy
