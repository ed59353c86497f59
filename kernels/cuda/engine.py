"""The CUDA MD engine: a whole trajectory segment in one kernel launch.

Layout: every state array has a leading replica axis (R independent systems of
the same size). Two launch modes share one kernel source:

- ``"replicas"``: one thread block per replica; phases are separated by
  ``cuda.syncthreads()``.
- ``"grid"``: one system spread over a cooperative grid of blocks (for large
  N); phases are separated by ``cuda.cg.this_grid().sync()``.

Thread t of a group of T owns the chunks c = t, t + T, ... of GROUP = 4 // dim
particles (the integrator moves them and their per-particle state; one Philox
call serves a chunk, as on the CPU) and computes the forces on particles
i = t, t + T, ...

Per step (as the CPU loop, `difftre.kernels.sampler.run`): first half of the
integrator, blow-up check (no particle moved more than max_step in the step),
skin check, neighbour-list rebuild if needed, forces, non-finite check, second
half, frame recording. Reductions (energy, virial, kinetic energy) are block
tree reductions in shared memory, then a sum over the group's block partials.

Neighbour lists are full lists (both i->j and j->i; a thread computes the
whole force on its own particles, no atomics on forces, deterministic). They
are built from a cell list (fixed capacity per cell, members sorted so the
neighbour order is deterministic) when every box edge holds >= 3 cells, else by
an all-pairs search. A capacity overflow (neighbours or cell members) is never
silent: the replica stops where it is (after the first half of the step),
reports the capacity it needs, the host regrows the arrays and relaunches, and
the replica resumes with the rebuild of the same step.

Monte Carlo barostat (an engine built with ``barostat``): after every step whose
global counter is a multiple of the replica's interval, the group makes the CPU
loop's volume move (`difftre.kernels.barostat.volume_move`): the same proposal,
random numbers, refusal and acceptance test (the ported `propose`,
`scale_positions`, `accepted`), with the trial (positions, full neighbour list,
forces) in trial buffers spread over the group like the state, both energies
summed by one group reduction, and the trial copied into the state when
accepted. Each replica has its own box, cell grid (at most the launch's cells
per edge, fewer when the box shrinks), interval and move counts. A trial list
that overflows its capacity stops the replica likewise; it resumes with the
same volume move.

The physics comes from the CPU engine's functions via
`difftre.kernels.cuda.port` (pair functions, spline tables, minimum image, the
neighbour test, cell index, integrator halves, Philox, the Nose-Hoover chain,
the many-body potentials' per-atom gathers `manybody.stillinger_weber_on_atom` and
`uf3.uf3_on_atom`, the barostat's proposal and acceptance test);
what the GPU adds is the per-particle organisation.
"""
import linecache
import math

import numpy as np
from numba import cuda

from difftre.kernels import external, integrators, manybody, neighbors, random, space, uf3
from difftre.kernels import barostat as volume_moves
from difftre.kernels.cuda.port import SIMULATOR, cuda_numpy, device_function, rebuild

STATUS_OK = 0
STATUS_NONFINITE = 1        # same codes as difftre.kernels.sampler
STATUS_DISPLACEMENT = 2
STATUS_OVERFLOW = 3         # internal: the host regrows and relaunches

# status columns (int64): code, step, particle, needed neighbour capacity, needed cell capacity
ST_CODE, ST_STEP, ST_PARTICLE, ST_NEED_NBR, ST_NEED_CELL = range(5)
N_STATUS = 5
# flags columns (int32): rebuild requested (two slots, by step parity), blow-up, non-finite, overflow,
# volume move accepted
FL_DISP, FL_NONFINITE, FL_OVERFLOW, FL_ACCEPTED = 2, 3, 4, 5
N_FLAGS = 6
# resume (int32) per replica: where a relaunch picks up a replica stopped by an overflow
RESUME_NONE, RESUME_BUILD, RESUME_MOVE = 0, 1, 2   # nothing; the step's list rebuild; the step's volume move
# scalars columns (dtype): largest displacement of a blow-up, Nose-Hoover velocity scale
SC_DMAX, SC_SCALE = 0, 1
N_SCALARS = 2

# system terms the GPU knows: per-particle (one-body) functions are called on a
# one-particle slice; a many-body kernel (a kind of its own) has a per-atom gather version
# with the signature (i, positions, box, inv_box, nbr_idx, nbr_count, params, force, virial) -> energy.
ONE_BODY = {external.harmonic, external.spline_1d}
MANY_BODY = {manybody.stillinger_weber: "stillinger_weber", uf3.uf3: "uf3"}
ON_ATOM = {"stillinger_weber": manybody.stillinger_weber_on_atom, "uf3": uf3.uf3_on_atom}


def system_term_kind(function, per_particle=False):
    """'one_body' or the many-body name the engine evaluates `function` as; NotImplementedError if none."""
    if function in MANY_BODY:
        return MANY_BODY[function]
    if per_particle or function in ONE_BODY:
        return "one_body"
    raise NotImplementedError(
        f"the CUDA engine has no version of system term {getattr(function, '__name__', function)!r}: it runs "
        f"Stillinger-Weber, UF3 and per-particle (one-body) terms")


# ============================================================================ device templates
# Plain Python; `build_engine` recompiles them (port.rebuild) in one namespace
# holding the constants (DTYPE, DIM, THREADS, ...) and the ported CPU functions.

# --- the group of threads that simulates one replica

def group_index_replicas():
    return cuda.blockIdx.x


def group_rank_replicas():
    return cuda.threadIdx.x


def group_size_replicas():
    return cuda.blockDim.x


def group_block_replicas():
    return 0


def group_sync_replicas():
    cuda.syncthreads()


def group_index_grid():
    return 0


def group_rank_grid():
    return cuda.grid(1)


def group_size_grid():
    return cuda.gridsize(1)


def group_block_grid():
    return cuda.blockIdx.x


def group_sync_grid():
    cuda.cg.this_grid().sync()


def group_reduce(sh, nvals, partials):
    """Sum sh[:, :nvals] over the block into partials[block]; ends with a group sync."""
    tid = cuda.threadIdx.x
    s = THREADS // 2
    while s > 0:
        cuda.syncthreads()
        if tid < s:
            for q in range(nvals):
                sh[tid, q] += sh[tid + s, q]
        s = s // 2
    cuda.syncthreads()
    if tid == 0:
        b = group_block()
        for q in range(nvals):
            partials[b, q] = sh[0, q]
    group_sync()


def group_total(partials, q):
    total = 0.0
    for b in range(partials.shape[0]):
        total += partials[b, q]
    return total


# --- forces

def pair_sum_on(i, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, f2, w2):
    """Pair forces on particle i from its full neighbour row; returns its half of the pair energies."""
    e = 0.0
    fx = 0.0
    fy = 0.0
    fz = 0.0
    wxx = 0.0
    wyy = 0.0
    wzz = 0.0
    wxy = 0.0
    wxz = 0.0
    wyz = 0.0
    for jj in range(cnt[i]):
        j = nbr[i, jj]
        dx, dy, dz, r2 = displacement(pos, j, i, box, inv_box)   # r_i - r_j
        u, g = pair_terms(r2, pp, plen, pcut2)
        e += u
        gx = g * dx
        gy = g * dy
        gz = g * dz
        fx += gx
        fy += gy
        fz += gz
        wxx += gx * dx
        wyy += gy * dy
        wzz += gz * dz
        wxy += gx * dy
        wxz += gx * dz
        wyz += gy * dz
    f2[0, 0] += fx
    f2[0, 1] += fy
    f2[0, 2] += fz
    # each pair is seen from both ends: half of W = sum f_ij (x) r_ij per end
    w2[0, 0] += 0.5 * wxx
    w2[1, 1] += 0.5 * wyy
    w2[2, 2] += 0.5 * wzz
    w2[0, 1] += 0.5 * wxy
    w2[1, 0] += 0.5 * wxy
    w2[0, 2] += 0.5 * wxz
    w2[2, 0] += 0.5 * wxz
    w2[1, 2] += 0.5 * wyz
    w2[2, 1] += 0.5 * wyz
    return 0.5 * e


def own_forces(t, T, n, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, sp, slen, frc, f2, w2, wacc):
    """Forces on this thread's particles; returns their energy, their virial in wacc."""
    e = 0.0
    for q in range(DIM * DIM):
        wacc[q] = 0.0
    for i in range(t, n, T):
        e += particle_forces(i, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, sp, slen, f2, w2)
        for a in range(DIM):
            frc[i, a] = f2[0, a]
            for b in range(DIM):
                wacc[a * DIM + b] += w2[a, b]
    return e


def own_twice_kinetic(t, T, n, vel, invm):
    """sum m v^2 over this thread's chunks."""
    ke = 0.0
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        ke += twice_kinetic_energy(vel[a:b], invm[a:b])
    return ke


# --- neighbour list

def cell_of(x, y, z, box, ncell):
    return (cell_index(x, box[0], ncell[0]) * ncell[1] + cell_index(y, box[1], ncell[1])) * ncell[2] \
        + cell_index(z, box[2], ncell[2])


def build_list(r, t, T, n, pos, box, inv_box, nbr, cnt, ref, cellc, cellm, ncell, list_cut2, status, flags):
    """Group-collective full-list build; False (after recording the capacity needed) on overflow."""
    cap = nbr.shape[1]
    largest = 0
    nx = ncell[0]
    ny = ncell[1]
    nz = ncell[2]
    if nx >= 3 and ny >= 3 and nz >= 3:
        total = nx * ny * nz
        ccap = cellm.shape[1]
        for c in range(t, total, T):
            cellc[c] = 0
        group_sync()
        for i in range(t, n, T):
            c = cell_of(pos[i, 0], pos[i, 1], pos[i, 2], box, ncell)
            slot = cuda.atomic.add(cellc, c, 1)
            if slot < ccap:
                cellm[c, slot] = i
            else:
                cuda.atomic.max(status, (r, ST_NEED_CELL), slot + 1)
                status[r, ST_CODE] = STATUS_OVERFLOW
                flags[r, FL_OVERFLOW] = 1
        group_sync()
        if flags[r, FL_OVERFLOW] != 0:
            return False
        for c in range(t, total, T):   # sort each cell: the neighbour order does not depend on timing
            m = cellc[c]
            for a in range(1, m):
                v = cellm[c, a]
                b = a - 1
                while b >= 0 and cellm[c, b] > v:
                    cellm[c, b + 1] = cellm[c, b]
                    b -= 1
                cellm[c, b + 1] = v
        group_sync()
        for i in range(t, n, T):
            c = cell_of(pos[i, 0], pos[i, 1], pos[i, 2], box, ncell)
            cz = c % nz
            cy = (c // nz) % ny
            cx = c // (ny * nz)
            count = 0
            for ox in range(-1, 2):
                mx = (cx + ox + nx) % nx
                for oy in range(-1, 2):
                    my = (cy + oy + ny) % ny
                    for oz in range(-1, 2):
                        nc = (mx * ny + my) * nz + (cz + oz + nz) % nz
                        for s in range(cellc[nc]):
                            j = cellm[nc, s]
                            if j != i:
                                count = try_add(pos, box, inv_box, i, j, list_cut2, nbr, count)
            cnt[i] = min(count, cap)
            largest = max(largest, count)
            for a in range(DIM):
                ref[i, a] = pos[i, a]
    else:
        for i in range(t, n, T):
            count = 0
            for j in range(n):
                if j != i:
                    count = try_add(pos, box, inv_box, i, j, list_cut2, nbr, count)
            cnt[i] = min(count, cap)
            largest = max(largest, count)
            for a in range(DIM):
                ref[i, a] = pos[i, a]
    if largest > cap:
        cuda.atomic.max(status, (r, ST_NEED_NBR), largest)
        status[r, ST_CODE] = STATUS_OVERFLOW
        flags[r, FL_OVERFLOW] = 1
    group_sync()
    return flags[r, FL_OVERFLOW] == 0


# --- integrators: the CPU halves applied to this thread's chunks of GROUP particles
# (GROUP = 4 // DIM: one Philox call serves GROUP particles, so a chunk draws what the whole system draws)

def normal4_in_precision(seed, step, counter, stream):
    """normal4 (float64 by definition, identical on CPU and GPU), cast to the working precision."""
    g0, g1, g2, g3 = normal4(seed, step, counter, stream)
    return CAST(g0), CAST(g1), CAST(g2), CAST(g3)


def first_half_verlet(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars):
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        verlet_first_half(pos[a:b], vel[a:b], frc[a:b], invm[a:b], dt, iparams, thermo, seed, step)


def second_half_verlet(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars):
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        verlet_second_half(pos[a:b], vel[a:b], frc[a:b], invm[a:b], dt, iparams, thermo, seed, step)


def first_half_langevin(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars):
    chunk_params = cuda.local.array(N_IPARAMS, DTYPE)
    for q in range(N_IPARAMS):
        chunk_params[q] = iparams[q]
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        chunk_params[FIRST_PARTICLE] = a   # keys the random stream by the chunk's place in the system
        baoab_first_half(pos[a:b], vel[a:b], frc[a:b], invm[a:b], dt, chunk_params, thermo, seed, step)


def second_half_langevin(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars):
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        baoab_second_half(pos[a:b], vel[a:b], frc[a:b], invm[a:b], dt, iparams, thermo, seed, step)


def nose_hoover_scale(t, T, n, vel, invm, thermo, iparams, dt, sh, partials, scalars):
    sh[cuda.threadIdx.x, 0] = own_twice_kinetic(t, T, n, vel, invm)
    group_reduce(sh, 1, partials)
    if t == 0:
        scalars[SC_SCALE] = nose_hoover_chain_scale(group_total(partials, 0), dt, iparams, thermo)
    group_sync()
    return scalars[SC_SCALE]


def first_half_nose_hoover(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars):
    # nose_hoover_first_half: chain (scales all velocities), kick, drift
    scale = nose_hoover_scale(t, T, n, vel, invm, thermo, iparams, dt, sh, partials, scalars)
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        for i in range(a, b):
            for d in range(DIM):
                vel[i, d] *= scale
        kick(vel[a:b], frc[a:b], invm[a:b], 0.5 * dt)
        drift(pos[a:b], vel[a:b], dt)


def second_half_nose_hoover(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars):
    # nose_hoover_second_half: kick, chain
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        a = c * GROUP
        b = min(a + GROUP, n)
        kick(vel[a:b], frc[a:b], invm[a:b], 0.5 * dt)
    scale = nose_hoover_scale(t, T, n, vel, invm, thermo, iparams, dt, sh, partials, scalars)
    for c in range(t, (n + GROUP - 1) // GROUP, T):
        for i in range(c * GROUP, min(c * GROUP + GROUP, n)):
            for d in range(DIM):
                vel[i, d] *= scale


# --- Monte Carlo barostat

def trial_cells(box, list_cut, ncell, tncell):
    """Cells per edge of the trial box (nm): at most the current ones (the launch allocated no more), and no
    cell narrower than the list cut-off list_cut (nm)."""
    for a in range(3):
        tncell[a] = min(ncell[a], int(math.floor(np.float64(box[a]) / np.float64(list_cut))))


def volume_move(r, t, T, n, step, seed, bparams, list_cut, list_cut2, pos, frc, box, inv_box, nbr, cnt, ref, prev,
                ncell, tpos, tfrc, tnbr, tcnt, tref, cellc, cellm, pp, plen, pcut2, sp, slen, e, wacc, f2, w2, sh,
                partials, moves, status, flags):
    """Replica r's volume move at `step` (see difftre.kernels.barostat.volume_move) by its group; e and wacc:
    this thread's energy (kJ/mol) and virial, replaced by the trial's when accepted. Returns (ok, e); ok False:
    the trial list overflowed its capacity (recorded in status), the state and counts are untouched."""
    tbox = cuda.local.array(DIM, DTYPE)
    outcome, scale, u_accept = propose(bparams, seed, step, box, list_cut, tbox)
    if outcome != PROPOSED:
        if t == 0:
            moves[ATTEMPTED] += 1
            if outcome == TOO_SMALL:
                moves[REFUSED] += 1
        return True, e
    tinv_box = cuda.local.array(DIM, DTYPE)
    for a in range(DIM):
        tinv_box[a] = 1.0 / tbox[a]
    scale_positions(pos[t:n:T], scale, tpos[t:n:T])
    group_sync()
    tncell = cuda.local.array(3, np.int64)
    if USES_NEIGHBORS:
        trial_cells(tbox, list_cut, ncell, tncell)
        if not build_list(r, t, T, n, tpos, tbox, tinv_box, tnbr, tcnt, tref, cellc, cellm, tncell, list_cut2,
                          status, flags):
            return False, e
    twacc = cuda.local.array(DIM2, DTYPE)
    te = own_forces(t, T, n, tpos, tbox, tinv_box, tnbr, tcnt, pp, plen, pcut2, sp, slen, tfrc, f2, w2, twacc)
    sh[cuda.threadIdx.x, 0] = e
    sh[cuda.threadIdx.x, 1] = te
    group_reduce(sh, 2, partials)
    if t == 0:
        moves[ATTEMPTED] += 1
        flags[r, FL_ACCEPTED] = 0
        if accepted(bparams, u_accept, group_total(partials, 0), group_total(partials, 1), box, tbox, n):
            flags[r, FL_ACCEPTED] = 1
            moves[ACCEPTED] += 1
    group_sync()
    if flags[r, FL_ACCEPTED] == 0:
        return True, e
    for i in range(t, n, T):
        for a in range(DIM):
            pos[i, a] = tpos[i, a]
            prev[i, a] = tpos[i, a]
            frc[i, a] = tfrc[i, a]
        if USES_NEIGHBORS:
            for a in range(DIM):
                ref[i, a] = tref[i, a]
            cnt[i] = tcnt[i]
            for jj in range(tcnt[i]):
                nbr[i, jj] = tnbr[i, jj]
    for a in range(DIM):
        inv_box[a] = tinv_box[a]
    for q in range(DIM2):
        wacc[q] = twacc[q]
    if t == 0:
        for a in range(DIM):
            box[a] = tbox[a]
        if USES_NEIGHBORS:
            for a in range(3):
                ncell[a] = tncell[a]
    group_sync()
    return True, te


# --- the kernel

def md_loop(pos_all, vel_all, frc_all, invm_all, box_all, thermo_all, seeds, step0, iparams, dt,
            pp, plen, pcut2, sp, slen,
            nbr_all, cnt_all, ref_all, prev_all, cellc_all, cellm_all, ncell_all,
            list_cut, list_cut2, half_skin_sq, max_step_sq,
            n_equil, n_frames, stride, record_vel,
            fpos_all, fvel_all, fpot_all, fkin_all, fvir_all,
            progress, resume, force_rebuild, status, flags, partials_all, scalars_all, rebuilds, start_out,
            bparams_all, tpos_all, tfrc_all, tnbr_all, tcnt_all, tref_all, fbox_all, moves_all):
    r = group_index()
    t = group_rank()
    T = group_size()
    tb = cuda.threadIdx.x
    n = pos_all.shape[1]
    n_chunks = (n + GROUP - 1) // GROUP   # per-particle state is owned by chunks, as the integrator moves it
    n_steps = n_equil + n_frames * stride
    k = progress[r]
    phase = resume[r]
    finished = status[r, ST_CODE] != STATUS_OK or (k >= n_steps and phase == RESUME_NONE and force_rebuild[r] == 0
                                                   and k > 0)
    group_sync()   # every thread has read the control words before anyone writes them
    if finished:
        return
    pos = pos_all[r]
    vel = vel_all[r]
    frc = frc_all[r]
    invm = invm_all[r]
    box = box_all[r]
    thermo = thermo_all[r]
    seed = seeds[r]
    nbr = nbr_all[r]
    cnt = cnt_all[r]
    ref = ref_all[r]
    prev = prev_all[r]
    cellc = cellc_all[r]
    cellm = cellm_all[r]
    ncell = ncell_all[r]
    partials = partials_all[r]
    scalars = scalars_all[r]
    sh = cuda.shared.array((THREADS, NRED), DTYPE)
    f2 = cuda.local.array((1, DIM), DTYPE)
    w2 = cuda.local.array((DIM, DIM), DTYPE)
    wacc = cuda.local.array(DIM2, DTYPE)
    inv_box = cuda.local.array(DIM, DTYPE)
    for a in range(DIM):
        inv_box[a] = 1.0 / box[a]
    interval = np.uint64(bparams_all[r, 3])   # steps between volume moves (barostat)
    e = 0.0
    if phase == RESUME_NONE:
        if USES_NEIGHBORS and force_rebuild[r] != 0:
            if not build_list(r, t, T, n, pos, box, inv_box, nbr, cnt, ref, cellc, cellm, ncell, list_cut2,
                              status, flags):
                return
        e = own_forces(t, T, n, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, sp, slen, frc, f2, w2, wacc)
        for c in range(t, n_chunks, T):
            for i in range(c * GROUP, min(c * GROUP + GROUP, n)):
                for a in range(DIM):
                    prev[i, a] = pos[i, a]
        sh[tb, 0] = e
        sh[tb, 1] = own_twice_kinetic(t, T, n, vel, invm)
        for q in range(DIM * DIM):
            sh[tb, 2 + q] = wacc[q]
        group_reduce(sh, NRED, partials)
        if t == 0:
            for q in range(NRED):
                start_out[r, q] = group_total(partials, q)
    elif phase == RESUME_MOVE:   # this thread's energy and virial of the state (the stopped launch held them)
        e = own_forces(t, T, n, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, sp, slen, frc, f2, w2, wacc)
    while k < n_steps or phase == RESUME_MOVE:
        if phase == RESUME_MOVE:
            phase = RESUME_NONE   # resuming after an overflow of the trial list: the step is done
        else:
            step = step0 + np.uint64(k)
            need = True
            if phase == RESUME_BUILD:
                phase = RESUME_NONE   # resuming after an overflow: the first half of this step is done
            else:
                first_half(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars)
                for c in range(t, n_chunks, T):
                    for i in range(c * GROUP, min(c * GROUP + GROUP, n)):
                        d2 = 0.0
                        d2ref = 0.0
                        for a in range(DIM):
                            d = pos[i, a] - prev[i, a]
                            d2 += d * d
                            d = pos[i, a] - ref[i, a]
                            d2ref += d * d
                        if d2 > max_step_sq:
                            cuda.atomic.max(scalars, SC_DMAX, d2)
                            status[r, ST_CODE] = STATUS_DISPLACEMENT
                            status[r, ST_STEP] = step
                            flags[r, FL_DISP] = 1
                        if d2ref > half_skin_sq:
                            flags[r, k % 2] = 1
                group_sync()
                if flags[r, FL_DISP] != 0:
                    for c in range(t, n_chunks, T):   # report the particle that moved farthest (as the CPU does)
                        for i in range(c * GROUP, min(c * GROUP + GROUP, n)):
                            d2 = 0.0
                            for a in range(DIM):
                                d = pos[i, a] - prev[i, a]
                                d2 += d * d
                            if d2 == scalars[SC_DMAX]:
                                cuda.atomic.min(status, (r, ST_PARTICLE), i)
                    return
                for c in range(t, n_chunks, T):
                    for i in range(c * GROUP, min(c * GROUP + GROUP, n)):
                        for a in range(DIM):
                            prev[i, a] = pos[i, a]
                need = USES_NEIGHBORS and flags[r, k % 2] != 0
                if t == 0:
                    flags[r, (k + 1) % 2] = 0
            if need:
                if not build_list(r, t, T, n, pos, box, inv_box, nbr, cnt, ref, cellc, cellm, ncell, list_cut2,
                                  status, flags):
                    if t == 0:
                        progress[r] = k
                        resume[r] = RESUME_BUILD
                    return
                if t == 0:
                    rebuilds[r] += 1
            e = own_forces(t, T, n, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, sp, slen, frc, f2, w2, wacc)
            if not math.isfinite(e):
                status[r, ST_CODE] = STATUS_NONFINITE
                status[r, ST_STEP] = step
                flags[r, FL_NONFINITE] = 1
            for i in range(t, n, T):
                for a in range(DIM):
                    if not (math.isfinite(pos[i, a]) and math.isfinite(frc[i, a])):
                        cuda.atomic.min(status, (r, ST_PARTICLE), i)
                        status[r, ST_CODE] = STATUS_NONFINITE
                        status[r, ST_STEP] = step
                        flags[r, FL_NONFINITE] = 1
            group_sync()
            if flags[r, FL_NONFINITE] != 0:
                return
            second_half(t, T, n, pos, vel, frc, invm, thermo, seed, step, iparams, dt, sh, partials, scalars)
            k += 1
        if BAROSTAT and (step0 + np.uint64(k)) % interval == 0:
            ok, e = volume_move(r, t, T, n, step0 + np.uint64(k), seed, bparams_all[r], list_cut, list_cut2, pos, frc,
                                box, inv_box, nbr, cnt, ref, prev, ncell, tpos_all[r], tfrc_all[r], tnbr_all[r],
                                tcnt_all[r], tref_all[r], cellc, cellm, pp, plen, pcut2, sp, slen, e, wacc, f2, w2,
                                sh, partials, moves_all[r], status, flags)
            if not ok:
                if t == 0:
                    progress[r] = k
                    resume[r] = RESUME_MOVE
                return
        produced = k - n_equil
        if produced > 0 and produced % stride == 0:
            fr = produced // stride - 1
            for c in range(t, n_chunks, T):
                for i in range(c * GROUP, min(c * GROUP + GROUP, n)):
                    for a in range(DIM):
                        fpos_all[r, fr, i, a] = pos[i, a]
                        if record_vel != 0:
                            fvel_all[r, fr, i, a] = vel[i, a]
            sh[tb, 0] = e
            sh[tb, 1] = own_twice_kinetic(t, T, n, vel, invm)
            for q in range(DIM * DIM):
                sh[tb, 2 + q] = wacc[q]
            group_reduce(sh, NRED, partials)
            if t == 0:
                fpot_all[r, fr] = group_total(partials, 0)
                fkin_all[r, fr] = 0.5 * group_total(partials, 1)
                for a in range(DIM):
                    for b in range(DIM):
                        fvir_all[r, fr, a, b] = group_total(partials, 2 + a * DIM + b)
                if BAROSTAT:
                    for a in range(DIM):
                        fbox_all[r, fr, a] = box[a]
    if t == 0:
        progress[r] = k
        resume[r] = RESUME_NONE


# --- the host-stepped mode: one integrator half per launch, one block per replica. The host
# evaluates the forces between the halves (a JAX model through difftre.bridge).

def half_step_launch(pos_all, vel_all, frc_all, invm_all, thermo_all, seeds, step, iparams, dt, partials_all,
                     scalars_all, first):
    """The integrator's first half (first != 0) or second half of every replica; one block per replica."""
    r = group_index()
    t = group_rank()
    T = group_size()
    n = pos_all.shape[1]
    sh = cuda.shared.array((THREADS, NRED), DTYPE)
    if first != 0:
        first_half(t, T, n, pos_all[r], vel_all[r], frc_all[r], invm_all[r], thermo_all[r], seeds[r], step,
                   iparams, dt, sh, partials_all[r], scalars_all[r])
    else:
        second_half(t, T, n, pos_all[r], vel_all[r], frc_all[r], invm_all[r], thermo_all[r], seeds[r], step,
                    iparams, dt, sh, partials_all[r], scalars_all[r])


TEMPLATES = (group_reduce, group_total, pair_sum_on, own_forces, own_twice_kinetic, cell_of,
             build_list, normal4_in_precision, nose_hoover_scale, trial_cells, volume_move)
MODE_TEMPLATES = {
    "replicas": dict(group_index=group_index_replicas, group_rank=group_rank_replicas,
                     group_size=group_size_replicas, group_block=group_block_replicas,
                     group_sync=group_sync_replicas),
    "grid": dict(group_index=group_index_grid, group_rank=group_rank_grid, group_size=group_size_grid,
                 group_block=group_block_grid, group_sync=group_sync_grid),
}
INTEGRATOR_TEMPLATES = {
    "verlet": (first_half_verlet, second_half_verlet),
    "langevin": (first_half_langevin, second_half_langevin),
    "nose_hoover": (first_half_nose_hoover, second_half_nose_hoover),
}


# ============================================================================ code generation

def _generated(name, source, namespace, dtype, wrap):
    filename = f"<difftre.kernels.cuda generated {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scratch = {}
    exec(compile(source, filename, "exec"), scratch)
    return wrap(rebuild(scratch[name], dtype, namespace=namespace, convert_calls=False))


def _pair_terms_source(n_pairs):
    lines = ["def pair_terms(r2, pp, plen, pcut2):",
             "    u = 0.0",
             "    g = 0.0"]
    for s in range(n_pairs):
        lines += [f"    if r2 < pcut2[{s}]:",
                  f"        a, b = pair_{s}(r2, pp[{s}, :plen[{s}]])",
                  "        u += a",
                  "        g += b"]
    lines.append("    return u, g")
    return "\n".join(lines) + "\n"


def _particle_forces_source(n_pairs, system_kinds):
    lines = ["def particle_forces(i, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, sp, slen, f2, w2):",
             "    for a in range(DIM):",
             "        f2[0, a] = 0.0",
             "        for b in range(DIM):",
             "            w2[a, b] = 0.0",
             "    e = 0.0"]
    if n_pairs:
        lines.append("    e += pair_sum_on(i, pos, box, inv_box, nbr, cnt, pp, plen, pcut2, f2, w2)")
    for s, kind in enumerate(system_kinds):
        if kind in ON_ATOM:
            lines.append(f"    e += {kind}_on_atom(i, pos, box, inv_box, nbr, cnt, sp[{s}, :slen[{s}]], f2[0], w2)")
        else:
            lines.append(f"    e += system_{s}(sp[{s}, :slen[{s}]], pos[i:i + 1], box, nbr[i:i + 1], "
                         f"cnt[i:i + 1], f2, w2)")
    lines.append("    return e")
    return "\n".join(lines) + "\n"


class Engine:
    """The compiled kernel of one (precision, force field, integrator, layout) combination."""

    def __init__(self, dtype, pair_functions, system_terms, integrator, integrator_params, dim, threads, mode,
                 uses_neighbors, barostat=False):
        """system_terms: (function, kind) pairs (see system_term_kind); integrator: its kind (a key of
        INTEGRATOR_TEMPLATES, the integrator's ``kind``); integrator_params: the names of its params in
        order (the integrator's ``PARAMS``); barostat: whether the loop makes Monte Carlo volume moves."""
        if threads < 1 or threads & (threads - 1):
            raise ValueError(f"threads per block must be a power of two, got {threads}")
        if mode not in MODE_TEMPLATES:
            raise ValueError(f"mode must be one of {sorted(MODE_TEMPLATES)}, got {mode!r}")
        if integrator not in INTEGRATOR_TEMPLATES:
            raise ValueError(f"integrator must be one of {sorted(INTEGRATOR_TEMPLATES)}, got {integrator!r}")
        if (pair_functions or any(kind != "one_body" for _, kind in system_terms)) and dim != 3:
            raise ValueError(f"pair and many-body kernels need 3-D positions, got dim {dim}")
        self.dtype = dtype = np.dtype(dtype).type
        self.dim, self.threads, self.mode = dim, threads, mode
        self.n_reduce = 2 + dim * dim
        device = (lambda f: f) if SIMULATOR else cuda.jit(device=True)
        if integrator == "langevin" and "first_particle" not in integrator_params:
            raise ValueError("the Langevin integrator's params must carry the index of the first particle "
                             "('first_particle') to key the random stream per chunk")
        first_particle = list(integrator_params).index("first_particle") if integrator == "langevin" else 0
        ns = dict(cuda=cuda, math=math, np=np if SIMULATOR else cuda_numpy,
                  GROUP=max(1, 4 // dim), N_IPARAMS=max(1, len(integrator_params)), FIRST_PARTICLE=first_particle,
                  DTYPE=dtype, CAST=dtype, DIM=dim, DIM2=dim * dim, THREADS=threads, NRED=self.n_reduce, INF=dtype(np.inf),
                  USES_NEIGHBORS=bool(uses_neighbors), BAROSTAT=bool(barostat),
                  PROPOSED=volume_moves.PROPOSED, TOO_SMALL=volume_moves.TOO_SMALL, ATTEMPTED=volume_moves.ATTEMPTED,
                  ACCEPTED=volume_moves.ACCEPTED, REFUSED=volume_moves.REFUSED,
                  RESUME_NONE=RESUME_NONE, RESUME_BUILD=RESUME_BUILD, RESUME_MOVE=RESUME_MOVE,
                  STATUS_OK=STATUS_OK, STATUS_NONFINITE=STATUS_NONFINITE, STATUS_DISPLACEMENT=STATUS_DISPLACEMENT,
                  STATUS_OVERFLOW=STATUS_OVERFLOW,
                  ST_STEP=ST_STEP, ST_CODE=ST_CODE, ST_PARTICLE=ST_PARTICLE, ST_NEED_NBR=ST_NEED_NBR,
                  ST_NEED_CELL=ST_NEED_CELL, FL_DISP=FL_DISP, FL_NONFINITE=FL_NONFINITE,
                  FL_OVERFLOW=FL_OVERFLOW, FL_ACCEPTED=FL_ACCEPTED, SC_DMAX=SC_DMAX, SC_SCALE=SC_SCALE)
        port = lambda f, **kw: device_function(f, dtype, **kw)   # noqa: E731
        ns.update(displacement=port(space.displacement), try_add=port(neighbors._try_add),
                  cell_index=port(neighbors._cell_index), twice_kinetic_energy=port(integrators.twice_kinetic_energy),
                  normal4=port(random.normal4), kick=port(integrators.kick), drift=port(integrators.drift),
                  verlet_first_half=port(integrators.verlet_first_half),
                  verlet_second_half=port(integrators.verlet_second_half),
                  baoab_second_half=port(integrators.baoab_second_half),
                  nose_hoover_chain_scale=port(integrators.nose_hoover_chain_scale),
                  propose=port(volume_moves.propose), scale_positions=port(volume_moves.scale_positions),
                  accepted=port(volume_moves.accepted))
        for s, fn in enumerate(pair_functions):
            ns[f"pair_{s}"] = port(fn)
        kinds = [kind for _, kind in system_terms]
        for s, (fn, kind) in enumerate(system_terms):
            if kind == "one_body":
                ns[f"system_{s}"] = port(fn)
            else:
                ns[f"{kind}_on_atom"] = port(ON_ATOM[kind])
        for name, template in MODE_TEMPLATES[mode].items():
            ns[name] = device(rebuild(template, dtype, namespace=ns, convert_calls=False))
        for template in TEMPLATES:
            ns[template.__name__] = device(rebuild(template, dtype, namespace=ns, convert_calls=False))
        first, second = INTEGRATOR_TEMPLATES[integrator]
        ns["first_half"] = device(rebuild(first, dtype, namespace=ns, convert_calls=False))
        ns["second_half"] = device(rebuild(second, dtype, namespace=ns, convert_calls=False))
        ns["baoab_first_half"] = port(integrators.baoab_first_half,
                                      overrides={"normal4": ns["normal4_in_precision"]})
        ns["pair_terms"] = _generated("pair_terms", _pair_terms_source(len(pair_functions)), ns, dtype, device)
        ns["particle_forces"] = _generated("particle_forces", _particle_forces_source(len(pair_functions), kinds),
                                           ns, dtype, device)
        loop = rebuild(md_loop, dtype, namespace=ns, convert_calls=False)
        self.kernel = cuda.jit(loop)
        self.namespace = ns
        self._half_step = None

    def half_step_kernel(self):
        """The integrator's halves as a kernel of their own, one block per replica (host-stepped mode).

        Arguments (pos, vel, frc, invm, thermo, seeds, step, iparams, dt, partials (R, 1, n_reduce),
        scalars (R, N_SCALARS), first): first != 0 runs the first half, 0 the second; the forces
        between them come from the caller.
        """
        if self.mode != "replicas":
            raise ValueError("the host-stepped half-step kernel runs one block per replica (mode 'replicas')")
        if self._half_step is None:
            self._half_step = cuda.jit(rebuild(half_step_launch, self.dtype, namespace=self.namespace,
                                               convert_calls=False))
        return self._half_step

    def max_cooperative_blocks(self, args, threads):
        """Most blocks of `threads` a cooperative launch of the kernel with these arguments may use."""
        if SIMULATOR:
            return 1
        compiled = self.kernel.compile(tuple(self.kernel.typeof_pyval(a) for a in args))
        return compiled.max_cooperative_grid_blocks(threads)


_engines = {}


def get_engine(dtype, pair_functions, system_terms, integrator, integrator_params, dim, threads, mode,
               uses_neighbors, barostat=False):
    """The (cached) Engine for this combination; arguments as Engine's."""
    key = (np.dtype(dtype).type, tuple(pair_functions), tuple(system_terms), integrator, tuple(integrator_params),
           dim, threads, mode, bool(uses_neighbors), bool(barostat))
    if key not in _engines:
        _engines[key] = Engine(*key)
    return _engines[key]
