"""The compiled MD loop: equilibration and production in one Numba call.

`run` advances a state for n_equilibration + n_frames * stride steps and
records every stride-th production state into preallocated buffers. Nothing
returns to Python between steps. The loop stops early, with a status, when a
position or the energy stops being finite or a particle moves farther than
max_step_displacement in one step (a blow-up); the Python front end
(`difftre.md`) turns that into an error naming the step and the particle. A
non-finite force with a finite energy shows up one step later as a non-finite
position.

Force field: pair_terms, a tuple of (pair_fn, params, cutoff) (see
`difftre.kernels.pair`), and system_terms, a tuple of (fn, params) of whole-system
functions (many-body and external, see `difftre.kernels.manybody`); their sum is
`difftre.kernels.forces.compute_forces`.

With a barostat (barostat_params[3] = interval > 0) the loop makes a Monte Carlo
volume move after every step whose global counter is a multiple of the interval
(`difftre.kernels.barostat`); the box then changes and is recorded per frame.
"""
import numpy as np

from difftre.kernels.jit import kernel

from difftre.kernels import barostat, neighbors
from difftre.kernels.forces import compute_forces
from difftre.kernels.integrators import twice_kinetic_energy

STATUS_OK = 0
STATUS_NONFINITE = 1
STATUS_DISPLACEMENT = 2


@kernel
def frame_energies_and_virials(pair_terms, system_terms, frames, box, list_cutoff, half_list, energies, virials):
    """energies[f] (kJ/mol) and virials[f] (3, 3) kJ/mol of every frame (S, N, 3) nm, each with its own
    neighbour list for list_cutoff (nm; none when 0), regrown as needed."""
    n = frames.shape[1]
    nbr_idx = np.empty((n, 16), np.int32)
    nbr_count = np.zeros(n, np.int32)
    forces = np.empty((n, 3))
    for f in range(frames.shape[0]):
        positions = frames[f]
        if list_cutoff > 0.0:
            nbr_idx = neighbors.build(positions, box, list_cutoff, half_list, nbr_idx, nbr_count,
                                      np.empty_like(positions))
        energies[f] = compute_forces(pair_terms, system_terms, positions, box, nbr_idx, nbr_count, half_list,
                                     forces, virials[f])


@kernel
def first_nonfinite_particle(positions, forces):
    """Index of the first particle with a non-finite position or force (0 if none)."""
    for i in range(positions.shape[0]):
        for a in range(positions.shape[1]):
            if not (np.isfinite(positions[i, a]) and np.isfinite(forces[i, a])):
                return i
    return 0


@kernel(nogil=True)
def run(pair_terms, system_terms, first_half, second_half, integrator_params, dt,
        positions, velocities, forces, virial, inv_masses, box, thermostat, seed, step,
        nbr_idx, nbr_count, reference_positions, previous_positions, list_cutoff, skin, half_list,
        max_step_displacement, n_equilibration, n_frames, stride,
        frame_positions, frame_velocities, frame_potential, frame_kinetic, frame_virial, frame_box, status,
        barostat_params, barostat_trial, barostat_counts):
    """Advance the state; fill the frame buffers; return (nbr_idx, potential energy, n_rebuilds).

    status (int64[3]) receives (code, step, particle) with STATUS_* codes; the
    state arrays hold the last completed step (or the failing one on error).
    `step` is the global step counter the random stream is keyed by.
    frame_box (n_frames, dim), or (0, dim) to record no box. barostat_params,
    barostat_trial (the trial buffers) and barostat_counts: see
    `difftre.kernels.barostat.volume_move`; interval 0 is no barostat.
    """
    uses_neighbors = list_cutoff > 0.0
    barostat_interval = np.uint64(barostat_params[3])
    record_box = frame_box.shape[0] > 0
    half_skin_sq = 0.25 * skin * skin
    max_step_sq = max_step_displacement * max_step_displacement
    record_velocities = frame_velocities.shape[0] > 0
    n_steps = n_equilibration + n_frames * stride
    status[0] = STATUS_OK
    n_rebuilds = 0
    energy = compute_forces(pair_terms, system_terms, positions, box, nbr_idx, nbr_count, half_list, forces, virial)
    previous_positions[:] = positions
    if not np.isfinite(energy):
        status[0] = STATUS_NONFINITE
        status[1] = step
        status[2] = first_nonfinite_particle(positions, forces)
        return nbr_idx, energy, n_rebuilds
    for k in range(n_steps):
        first_half(positions, velocities, forces, inv_masses, dt, integrator_params, thermostat, seed, step)
        moved_sq, who, drift_sq = neighbors.check_motion(positions, previous_positions, reference_positions,
                                                         uses_neighbors)
        if not moved_sq <= max_step_sq:  # also catches NaN
            status[0] = STATUS_NONFINITE if moved_sq != moved_sq else STATUS_DISPLACEMENT
            status[1] = step
            status[2] = who
            return nbr_idx, energy, n_rebuilds
        if uses_neighbors:
            if drift_sq > half_skin_sq:
                nbr_idx = neighbors.build(positions, box, list_cutoff, half_list, nbr_idx, nbr_count,
                                          reference_positions)
                n_rebuilds += 1
        energy = compute_forces(pair_terms, system_terms, positions, box, nbr_idx, nbr_count, half_list,
                                forces, virial)
        if not np.isfinite(energy):
            status[0] = STATUS_NONFINITE
            status[1] = step
            status[2] = first_nonfinite_particle(positions, forces)
            return nbr_idx, energy, n_rebuilds
        second_half(positions, velocities, forces, inv_masses, dt, integrator_params, thermostat, seed, step)
        step += 1
        if barostat_interval > 0 and step % barostat_interval == 0:
            nbr_idx, energy = barostat.volume_move(pair_terms, system_terms, barostat_params, seed, step, positions,
                                                   forces, virial, box, energy, nbr_idx, nbr_count,
                                                   reference_positions, previous_positions, list_cutoff, half_list,
                                                   barostat_trial, barostat_counts)
        produced = k + 1 - n_equilibration
        if produced > 0 and produced % stride == 0:
            f = produced // stride - 1
            frame_positions[f] = positions
            if record_velocities:
                frame_velocities[f] = velocities
            frame_potential[f] = energy
            frame_kinetic[f] = 0.5 * twice_kinetic_energy(velocities, inv_masses)
            frame_virial[f] = virial
            if record_box:
                frame_box[f] = box
    return nbr_idx, energy, n_rebuilds
