"""The learned CG-water model as a LAMMPS simulation: potential files, a data file and an input script.

``export_lammps(out_dir, config, theta)`` writes, for the ``spline`` model (UF3 pair + three-body on
the eps (sigma/r)^12 prior):

  cg_water.uf3      the UF3 spline (``pair_style uf3 3``, ``difftre.uf3.write_lammps_uf3``)
  prior.table       the prior eps (sigma/r)^12, truncated (not shifted) at model.pair_cutoff like
                    ``md.repulsive``, as a ``pair_style table`` (5000 points evenly spaced in r^2, as
                    LAMMPS interpolates it: energies and virials equal difftre's to ~1e-11)
  cg_water.data     the starting configuration (and velocities, when given)
  in.cg_water       units metal; ``pair_style hybrid/overlay uf3 3 table spline``; the experiment's
                    Nose-Hoover chain (``fix nvt ... tchain``), time step and neighbour skin;
                    sampling.n_equilibration steps, then sampling.n_frames x sampling.stride steps of
                    production (the timestep restarts at 0) that write
  positions.lammpstrj   the positions every stride steps (production steps stride, 2 stride, ...:
                        difftre's frames)
  pressure.dat          the pressure (bar) of each frame (thermo press: kinetic + virial)

Run it with ``cd OUT_DIR && lmp -in in.cg_water`` (LAMMPS >= 27Jun2024 with the ML-UF3 package).
``read_positions_dump`` and ``read_pressure`` read the two outputs back in difftre's units; the RDF of
the frames is ``difftre.observables.rdf_of_trajectory(frames, box, centers)``.

LAMMPS units metal: Angstrom (= 0.1 nm), eV (= 96.485 kJ/mol), ps, g/mol, K, bar (= 0.0602214 kJ mol^-1
nm^-3). LAMMPS counts 3 N - 3 degrees of freedom (momentum conserved), as difftre's sampler does.
"""
import pathlib

import numpy as np

from difftre import md, uf3
from difftre.experiments.cg_water import starting_configuration, uf3_spec

UNITS = "metal"
EV_PER_KJ_PER_MOL = 1.0 / uf3.KJ_PER_MOL_PER_ENERGY_UNIT[UNITS]
ANGSTROM_PER_NM = uf3.ANGSTROM_PER_NM
ELEMENT = "X"                   # the bead's name in cg_water.uf3
PRIOR_TABLE_POINTS = 5000       # points of prior.table and of LAMMPS's spline table made from it
PRIOR_TABLE_INNER_KT = 1000.0   # prior.table starts where the prior reaches this many kT (closer: a LAMMPS error)
SNAPSHOT_HEADER_LINES = 9       # lines before the atoms of one snapshot of a LAMMPS custom dump


def export_lammps(out_dir, config, theta, positions=None, velocities=None):
    """Write the LAMMPS files of the CG-water ``spline`` model with parameters theta (module docstring).

    Args:
      out_dir: folder (created if needed); the script names the other files relative to it.
      config: the validated cg-water configuration (``difftre.runner.resolve("cg-water", ...)[1]``):
        system (mass u, temperature K, configuration, seed), model (prior and UF3 spec) and sampling
        (chain_length, tau ps, dt ps, skin nm, n_equilibration, n_frames, stride).
      theta: (n_free,) UF3 coefficients, kJ/mol.
      positions: (N, 3) nm starting positions; default the configuration's.
      velocities: (N, 3) nm/ps starting velocities; default drawn by LAMMPS (``velocity create`` at the
        temperature, seed system.seed + 1, zero total momentum).

    Returns:
      {"script", "data", "uf3", "prior_table"}: the paths written (pathlib.Path).
    """
    system, model, sampling = config["system"], config["model"], config["sampling"]
    if model["kind"] != "spline":
        raise ValueError(f"export_lammps writes the UF3 'spline' model, got model.kind = {model['kind']!r}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, box = starting_configuration(system["configuration"])
    positions = start if positions is None else np.asarray(positions, np.float64)
    uf3_path, _ = uf3.write_lammps_uf3(out_dir / "cg_water", uf3_spec(model), theta, units=UNITS, element=ELEMENT)
    kT = md.kT_from_temperature(system["temperature"])
    r_inner = model["prior_sigma"] * (model["prior_epsilon"] / (PRIOR_TABLE_INNER_KT * kT)) ** (1 / 12)
    paths = {"uf3": pathlib.Path(uf3_path),
             "prior_table": write_prior_table(out_dir / "prior.table", model["prior_epsilon"], model["prior_sigma"],
                                              model["pair_cutoff"], r_inner),
             "data": write_data_file(out_dir / "cg_water.data", positions, box, system["mass"], velocities)}
    script = out_dir / "in.cg_water"
    script.write_text(input_script(system, model, sampling, {k: p.name for k, p in paths.items()},
                                   draw_velocities=velocities is None))
    return {"script": script, **paths}


def write_prior_table(path, epsilon, sigma, cutoff, r_inner, n_points=PRIOR_TABLE_POINTS, keyword="PRIOR"):
    """Write eps (sigma/r)^12 (epsilon kJ/mol; sigma, cutoff, r_inner nm) as a ``pair_style table`` section
    ``keyword``: n_points evenly spaced in r^2 from r_inner to the cut-off (``RSQ``), lines
    ``index r E F`` (Angstrom, eV, F = -dE/dr eV/Angstrom) and the exact dF/dr at both ends (``FPRIME``).
    LAMMPS sets the energy to zero beyond the cut-off given in pair_coeff: truncated, as md.repulsive.
    Returns the path."""
    r = np.sqrt(np.linspace(r_inner ** 2, cutoff ** 2, n_points)) * ANGSTROM_PER_NM
    scale = epsilon * EV_PER_KJ_PER_MOL * (sigma * ANGSTROM_PER_NM) ** 12
    energy, force = scale / r ** 12, 12.0 * scale / r ** 13
    slope = -156.0 * scale / r[[0, -1]] ** 14
    (r_first, r_last), (slope_first, slope_last) = r[[0, -1]].tolist(), slope.tolist()
    lines = [f"# eps (sigma/r)^12: eps = {epsilon!r} kJ/mol, sigma = {sigma!r} nm (units metal), by difftre", "",
             keyword, f"N {n_points} RSQ {r_first!r} {r_last!r} FPRIME {slope_first!r} {slope_last!r}", ""]
    lines += [f"{k + 1} {x!r} {e!r} {f!r}" for k, (x, e, f) in enumerate(zip(r.tolist(), energy.tolist(),
                                                                              force.tolist()))]
    path = pathlib.Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_data_file(path, positions, box, mass, velocities=None):
    """Write a LAMMPS data file (atom_style atomic, one type) of positions (N, 3) nm wrapped into the
    orthorhombic box (3,) nm, mass u, and velocities (N, 3) nm/ps if given. Returns the path."""
    positions, box = np.asarray(positions, np.float64), np.asarray(box, np.float64)
    wrapped = (positions - box * np.floor(positions / box)) * ANGSTROM_PER_NM
    edges = box * ANGSTROM_PER_NM
    lines = ["CG water by difftre (units metal: Angstrom, g/mol, Angstrom/ps)", "", f"{len(positions)} atoms",
             "1 atom types", ""]
    lines += [f"0.0 {edge!r} {axis}lo {axis}hi" for edge, axis in zip(edges.tolist(), "xyz")]
    lines += ["", "Masses", "", f"1 {float(mass)!r}", "", "Atoms # atomic", ""]
    lines += [f"{i + 1} 1 {x!r} {y!r} {z!r}" for i, (x, y, z) in enumerate(wrapped.tolist())]
    if velocities is not None:
        lines += ["", "Velocities", ""]
        scaled = np.asarray(velocities, np.float64) * ANGSTROM_PER_NM
        lines += [f"{i + 1} {x!r} {y!r} {z!r}" for i, (x, y, z) in enumerate(scaled.tolist())]
    path = pathlib.Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def input_script(system, model, sampling, files, draw_velocities):
    """The text of in.cg_water (configuration sections system, model, sampling; files: the names of the
    "data", "uf3" and "prior_table" files)."""
    temperature, stride = system["temperature"], sampling["stride"]
    cutoff = model["pair_cutoff"] * ANGSTROM_PER_NM
    velocity = ([f"velocity all create {temperature!r} {system['seed'] + 1} dist gaussian mom yes rot no"]
                if draw_velocities else [])   # (LAMMPS seeds are positive)
    lines = ["# CG water learned by difftre: UF3 pair + three-body splines on the eps (sigma/r)^12 prior.",
             "# Run: lmp -in in.cg_water (units metal: Angstrom, eV, ps, bar)",
             f"units {UNITS}", "atom_style atomic", "boundary p p p", f"read_data {files['data']}",
             f"pair_style hybrid/overlay uf3 3 table spline {PRIOR_TABLE_POINTS}",
             f"pair_coeff * * uf3 {files['uf3']} {ELEMENT}",
             f"pair_coeff 1 1 table {files['prior_table']} PRIOR {cutoff!r}",
             f"neighbor {sampling['skin'] * ANGSTROM_PER_NM!r} bin", "neigh_modify every 1 delay 0 check yes",
             f"timestep {sampling['dt']!r}", *velocity,
             f"fix thermostat all nvt temp {temperature!r} {temperature!r} {sampling['tau']!r} "
             f"tchain {sampling['chain_length']}",
             "thermo_style custom step temp pe press", f"thermo {stride}",
             "# equilibration", f"run {sampling['n_equilibration']}",
             "# production: frames every stride steps (not the equilibrated start at step 0)", "reset_timestep 0",
             f"dump positions all custom {stride} positions.lammpstrj id x y z",
             "dump_modify positions sort id delay 1",
             f"variable next_frame equal {stride}*(floor(step/{stride})+1)",
             'fix pressure all print v_next_frame "$(step) $(press)" file pressure.dat screen no '
             'title "# step pressure (bar)"',
             f"run {sampling['n_frames'] * stride}"]
    return "\n".join(lines) + "\n"


def read_positions_dump(path):
    """(timesteps (S,) int, frames (S, N, 3) nm) of a LAMMPS custom dump ``id x y z`` sorted by id
    (positions.lammpstrj; positions in Angstrom, wrapped into the box)."""
    lines = pathlib.Path(path).read_text().splitlines()
    n_atoms = int(lines[3])
    snapshot = SNAPSHOT_HEADER_LINES + n_atoms
    starts = range(0, len(lines), snapshot)
    steps = np.array([int(lines[s + 1]) for s in starts])
    atoms = np.array([line.split() for s in starts for line in lines[s + SNAPSHOT_HEADER_LINES:s + snapshot]],
                     np.float64)
    return steps, atoms[:, 1:].reshape(len(steps), n_atoms, 3) / ANGSTROM_PER_NM


def read_pressure(path):
    """(timesteps (S,) int, pressure (S,) kJ mol^-1 nm^-3) of pressure.dat (fix print, bar)."""
    step, bar = np.loadtxt(path, ndmin=2).T
    return step.astype(np.int64), bar * md.BAR
