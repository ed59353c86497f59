"""Observables: JAX functions of stored states, reweightable with per-state weights.

Each observable is a pure function of one state (positions, box, neighbour
list, possibly velocities and an energy function closing over the parameters);
``weighted_average`` turns it into the (re)weighted ensemble average
sum_i w_i O(S_i) with bounded memory. ``dynamics`` (diffusion, phonon DOS) and
``stress_strain`` (elastic constants from explicit strains) hold NumPy
post-processing that is not differentiated.
"""
from difftre.observables.averages import weighted_average
from difftre.observables.density import density_profile, density_profile_uniform
from difftre.observables.dynamics import (
    dos_of_vacf,
    dos_peaks,
    mean_squared_displacement,
    nm2_per_ps_to_cm2_per_s,
    phonon_dos,
    phonon_dos_with_error,
    self_diffusion,
    velocity_autocorrelation,
)
from difftre.observables.errors import block_jackknife, block_standard_error, blocking_curve, optimal_block_count
from difftre.observables.elastic import born_stiffness, born_terms, cubic_constants, fluctuation_stiffness
from difftre.observables.geometry import dense_neighbor_list, minimum_image, neighbor_displacements, volume
from difftre.observables.order import tetrahedral_order, tetrahedral_order_parameters
from difftre.observables.stress import (
    born_stress,
    kinetic_tensor,
    pressure,
    strain_deformation,
    stress_tensor,
)
from difftre.observables.structure import (
    adf,
    adf_list_cutoff,
    adf_of_trajectory,
    bin_centers,
    load_adf_target,
    load_rdf_target,
    rdf,
    rdf_list_cutoff,
    rdf_of_trajectory,
)

__all__ = [
    "adf", "adf_list_cutoff", "adf_of_trajectory", "bin_centers", "block_jackknife", "block_standard_error",
    "blocking_curve",
    "born_stiffness", "born_stress", "born_terms", "cubic_constants",
    "dense_neighbor_list", "density_profile", "density_profile_uniform", "dos_of_vacf", "dos_peaks",
    "fluctuation_stiffness", "kinetic_tensor",
    "load_adf_target", "load_rdf_target", "mean_squared_displacement", "minimum_image",
    "neighbor_displacements", "nm2_per_ps_to_cm2_per_s", "optimal_block_count", "phonon_dos",
    "phonon_dos_with_error", "pressure", "rdf",
    "rdf_list_cutoff", "rdf_of_trajectory",
    "self_diffusion", "strain_deformation", "stress_tensor", "tetrahedral_order",
    "tetrahedral_order_parameters", "velocity_autocorrelation", "volume", "weighted_average",
]
