"""Isotropic Monte Carlo barostat (Numba): volume moves inside the compiled MD loop.

Every `interval` steps the MD loop (`difftre.kernels.sampler.run`) calls
`volume_move`: it proposes V' = V + dV with dV uniform in [-max_dV, max_dV], scales
the box edges and all positions about the origin by s = (V'/V)^(1/dim), and accepts
with probability

    min(1, exp(-beta (U' - U + P (V' - V)) + N ln(V'/V))),

which samples the isothermal-isobaric ensemble p(V, x) ~ V^N exp(-beta (P V + U))
over the volume and the N scaled positions x (Frenkel & Smit, Understanding
Molecular Simulation, 2nd ed., sec. 5.4); together with a thermostatted integrator
for the particles, (N, P, T). An ideal gas samples p(V) ~ V^N exp(-beta P V).
The proposal is a random walk in V (not in ln V): symmetric, so no Hastings factor,
with one step size for the whole run. Velocities are not changed (their Maxwell
distribution does not depend on V). Positions are unwrapped: scaling an unwrapped
position scales its wrapped image and adds whole new box vectors, the same
configuration. The acceptance uses the potential energy and the MD the forces: they
must belong to the same potential, so a truncated pair potential must be shifted to
zero at its cut-off (``lennard_jones(..., shift=True)``); an unshifted one jumps
there, its forces are those of the shifted one, and the two moves would sample
different ensembles.

The trial (positions, box, neighbour list, forces, virial, energy) is built in
separate buffers and copied into the state only when accepted, so a rejection leaves
the state exactly as it was. V' <= 0 is rejected (zero probability). A box edge that
would not exceed twice the neighbour-list cut-off (the minimum-image condition) is
rejected as well and counted as refused: the ensemble sampled is then the one
restricted to larger boxes, so a non-zero refusal count means the system is too small
for its cut-off at this pressure.

Random numbers: stream BAROSTAT_STREAM of `difftre.kernels.random.uniform4` with
counter 0, keyed by (seed, step) (the Langevin noise draws stream 0), so a trajectory
stays a function of its seed and step counter.

params = [pressure P (kJ mol^-1 nm^-3), max_dV (nm^3), kT (kJ/mol), interval (steps;
0: no barostat)]; counts (int64[3]) accumulates (attempted, accepted, refused) moves.
"""
import numpy as np

from difftre.kernels import neighbors
from difftre.kernels.forces import compute_forces
from difftre.kernels.jit import kernel
from difftre.kernels.random import uniform4

BAROSTAT_STREAM = 1
ATTEMPTED, ACCEPTED, REFUSED = 0, 1, 2     # the columns of counts
PROPOSED, NON_POSITIVE, TOO_SMALL = 0, 1, 2   # outcomes of `propose`


@kernel
def box_volume(box):
    """Volume (nm^dim) of an orthorhombic box, in float64."""
    volume = 1.0
    for a in range(box.shape[0]):
        volume *= np.float64(box[a])
    return volume


@kernel
def propose(params, seed, step, box, list_cutoff, trial_box):
    """Draw the move of `step`; return (outcome, scale, u_accept) and fill trial_box (nm) with the box scaled by
    scale = (V'/V)^(1/dim). outcome PROPOSED: a trial to evaluate; NON_POSITIVE: V' <= 0 (rejected, trial_box
    untouched); TOO_SMALL: an edge would not exceed 2 list_cutoff (nm; 0: no list), refused. u_accept: the
    uniform number of the acceptance test (`accepted`)."""
    max_volume_change = np.float64(params[1])
    u_volume, u_accept, _, _ = uniform4(seed, step, 0, BAROSTAT_STREAM)
    volume = box_volume(box)
    proposed = volume + max_volume_change * (2.0 * u_volume - 1.0)
    if not proposed > 0.0:
        return NON_POSITIVE, 1.0, u_accept
    scale = (proposed / volume) ** (1.0 / box.shape[0])
    for a in range(box.shape[0]):
        trial_box[a] = box[a] * scale
        if list_cutoff > 0.0 and not trial_box[a] > 2.0 * list_cutoff:
            return TOO_SMALL, scale, u_accept
    return PROPOSED, scale, u_accept


@kernel
def scale_positions(positions, scale, trial_positions):
    """trial_positions = scale * positions (nm, about the origin), particle by particle."""
    for i in range(positions.shape[0]):
        for a in range(positions.shape[1]):
            trial_positions[i, a] = positions[i, a] * scale


@kernel
def accepted(params, u_accept, energy, trial_energy, box, trial_box, n):
    """The Metropolis test of the trial (energies in kJ/mol, boxes in nm, n particles): True when accepted;
    a NaN trial energy is rejected."""
    pressure, kT = np.float64(params[0]), np.float64(params[2])
    volume = box_volume(box)
    proposed = box_volume(trial_box)   # the volume of the box as stored (float32 rounds the edges)
    log_acceptance = -(trial_energy - energy + pressure * (proposed - volume)) / kT + n * np.log(proposed / volume)
    return np.log(u_accept) < log_acceptance


@kernel
def volume_move(pair_terms, system_terms, params, seed, step, positions, forces, virial, box, energy,
                nbr_idx, nbr_count, reference_positions, previous_positions, list_cutoff, half_list,
                trial, counts):
    """One Monte Carlo volume move at `step`; return (nbr_idx, potential energy) of the state after it.

    On acceptance positions, forces, virial, box, nbr_count, reference_positions (the skin check's
    build positions) and previous_positions (the one-step displacement check's) are overwritten
    with the trial's and the trial's nbr_idx and energy are returned; otherwise nothing changes.
    trial = (positions, forces, reference positions, box, virial) buffers shaped as the state's.
    """
    trial_positions, trial_forces, trial_reference, trial_box, trial_virial = trial
    counts[ATTEMPTED] += 1
    outcome, scale, u_accept = propose(params, seed, step, box, list_cutoff, trial_box)
    if outcome != PROPOSED:
        if outcome == TOO_SMALL:
            counts[REFUSED] += 1
        return nbr_idx, energy
    scale_positions(positions, scale, trial_positions)
    uses_neighbors = list_cutoff > 0.0
    trial_idx = nbr_idx
    trial_count = nbr_count
    if uses_neighbors:
        trial_count = np.empty_like(nbr_count)
        trial_idx = neighbors.build(trial_positions, trial_box, list_cutoff, half_list, np.empty_like(nbr_idx),
                                    trial_count, trial_reference)
    trial_energy = compute_forces(pair_terms, system_terms, trial_positions, trial_box, trial_idx, trial_count,
                                  half_list, trial_forces, trial_virial)
    if not accepted(params, u_accept, energy, trial_energy, box, trial_box, positions.shape[0]):
        return nbr_idx, energy
    counts[ACCEPTED] += 1
    positions[:] = trial_positions
    previous_positions[:] = trial_positions
    forces[:] = trial_forces
    virial[:] = trial_virial
    box[:] = trial_box
    if uses_neighbors:
        reference_positions[:] = trial_reference
        nbr_count[:] = trial_count
    return trial_idx, trial_energy
