"""Input and output files: trajectories and .gro configurations through ASE, two-column tables.

Writing: extended XYZ (also any format ASE writes, chosen by the suffix) keeps
the periodic cell, positions, velocities and per-frame energies, and is read by
OVITO, VMD, ASE and MDAnalysis. Positions are written in Angstrom (the format's
unit) converted from nm; 1-D and 2-D systems are padded with zero coordinates.

Reading: ``read_gro`` (a GROMACS configuration) and ``read_xy_table`` (a target
such as an RDF) check their input and raise ``InputFileError``, a ValueError
whose message names the file and, where known, the line.
"""
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

NM_TO_ANGSTROM = 10.0


def write_trajectory(path, trajectory, symbol="X", length_unit=NM_TO_ANGSTROM):
    """Write an md.Trajectory (positions (n_frames, N, dim) in nm) to `path`; returns the frame count."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    positions = np.asarray(trajectory.positions, np.float64)
    n_frames, n, dim = positions.shape
    if n_frames == 0:
        raise ValueError(f"{path}: the trajectory has no frames to write")
    pad = lambda a: np.concatenate([a, np.zeros(a.shape[:-1] + (3 - dim,))], axis=-1)
    cell = np.diag(pad(np.asarray(trajectory.box, np.float64)[None])[0] * length_unit)
    frames = []
    for f in range(n_frames):
        atoms = Atoms(symbol * n if len(symbol) == 1 else symbol, positions=pad(positions[f]) * length_unit,
                      cell=cell, pbc=[True] * dim + [False] * (3 - dim))
        if len(trajectory.velocities):
            atoms.info["velocities_nm_per_ps"] = True
            atoms.set_array("vel", pad(np.asarray(trajectory.velocities[f], np.float64)))
        atoms.calc = SinglePointCalculator(atoms, energy=float(trajectory.potential_energy[f]))
        atoms.info["kinetic_energy"] = float(trajectory.kinetic_energy[f])
        frames.append(atoms)
    write(str(path), frames)
    return n_frames


class InputFileError(ValueError):
    """A file that cannot be used as input; the message names the file and, where known, the line.

    Attributes: ``path`` (str) and ``line`` (1-based line number, or None).
    """

    def __init__(self, path, message, line=None):
        self.path = str(path)
        self.line = line
        super().__init__(f"{self.path}{'' if line is None else f', line {line}'}: {message}")


def _read_text(path):
    """The UTF-8 text of `path` (a path or an importlib Traversable); InputFileError if unusable."""
    source = path if hasattr(path, "read_bytes") else Path(path)
    if not source.is_file():
        exists = source.exists() if hasattr(source, "exists") else source.is_dir()
        raise InputFileError(path, "not a regular file" if exists else "no such file")
    data = source.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFileError(path, f"not UTF-8 text (byte {error.start} is {data[error.start]:#04x})",
                             line=data[:error.start].count(b"\n") + 1) from None


class GroStructure(NamedTuple):
    """A configuration read from a GROMACS .gro file (nm)."""
    positions: np.ndarray   # (N, 3) float64, nm
    box: np.ndarray         # (3,) float64, orthorhombic edge lengths, nm
    names: np.ndarray       # (N,) str, atom names (columns 11-15)


def _gro_field(path, line_number, text, what):
    try:
        value = float(text)
    except ValueError:
        raise InputFileError(path, f"{what} {text.strip()!r} is not a number", line=line_number) from None
    if not np.isfinite(value):
        raise InputFileError(path, f"{what} is {text.strip()} (must be finite)", line=line_number)
    return value


def read_gro(path, expected_atoms=None):
    """Read one configuration from a GROMACS .gro file through ASE.

    The text is checked first (ASE's own errors on bad files are poor): line 2
    holds the atom count N; N atom lines follow, positions in the fixed columns
    21-44 (three fields of 8 characters, nm), optional velocities in 45-68; the
    last line is the box, 3 values (orthorhombic) or 9 whose six off-diagonal
    values must be zero. Blank lines after the box are ignored. The checked
    lines are then parsed by ``ase.io.read(..., format='gromacs')``.

    Args:
      path: the .gro file.
      expected_atoms: if given, the atom count the file must hold.

    Returns:
      GroStructure(positions (N, 3) nm, box (3,) nm, names (N,) atom names).

    Raises:
      InputFileError (a ValueError) naming the file and line: missing file or not
      UTF-8; a count that is not a positive integer or differs from
      ``expected_atoms``; a truncated file (fewer atom lines than the count);
      lines after the box; a residue number that is not an integer, an empty
      atom name, velocities on some atom lines only; a coordinate, velocity or
      box value that is not a finite number; a box that is not orthorhombic or
      not positive.
    """
    from ase.io import read

    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise InputFileError(path, f"a .gro file needs a title line and the atom count on line 2; "
                                   f"the file has {len(lines)} line(s)")
    try:
        n_atoms = int(lines[1])
    except ValueError:
        raise InputFileError(path, f"the atom count {lines[1].strip()!r} is not an integer", line=2) from None
    if n_atoms < 1:
        raise InputFileError(path, f"the atom count is {n_atoms} (must be positive)", line=2)
    if expected_atoms is not None and n_atoms != expected_atoms:
        raise InputFileError(path, f"the file holds {n_atoms} atoms, expected {expected_atoms}", line=2)
    box_line = n_atoms + 3
    if len(lines) < box_line:
        raise InputFileError(path, f"truncated: line 2 announces {n_atoms} atoms, so the box is on line "
                                   f"{box_line}, but the file ends at line {len(lines)}")
    if len(lines) > box_line:
        raise InputFileError(path, f"unexpected content after the box line {box_line} (line 2 announces "
                                   f"{n_atoms} atoms; wrong atom count?)", line=box_line + 1)
    first_has_velocities = None
    for number in range(3, box_line):
        line = lines[number - 1]
        if len(line) < 44:
            raise InputFileError(path, f"atom line too short ({len(line)} characters; the positions "
                                       f"occupy columns 21-44)", line=number)
        try:
            int(line[:5])
        except ValueError:
            raise InputFileError(path, f"residue number {line[:5].strip()!r} (columns 1-5) is not an integer",
                                 line=number) from None
        if not line[10:15].strip():
            raise InputFileError(path, "empty atom name (columns 11-15)", line=number)
        for axis, start in enumerate(range(20, 44, 8)):
            _gro_field(path, number, line[start:start + 8], f"{'xyz'[axis]} position")
        velocity_fields = [line[start:start + 8] for start in range(44, 68, 8)]
        has_velocities = any(field.strip() for field in velocity_fields)
        if has_velocities and not all(field.strip() for field in velocity_fields):
            raise InputFileError(path, "incomplete velocity (columns 45-68 hold three fields of 8)", line=number)
        if first_has_velocities is None:
            first_has_velocities = has_velocities
        elif has_velocities != first_has_velocities:
            raise InputFileError(path, f"velocities {'missing' if first_has_velocities else 'present'} here but "
                                       f"{'present' if first_has_velocities else 'missing'} on line 3", line=number)
        for axis, field in enumerate(velocity_fields if has_velocities else []):
            _gro_field(path, number, field, f"{'xyz'[axis]} velocity")
    box_fields = lines[-1].split()
    if len(box_fields) not in (3, 9):
        raise InputFileError(path, f"the box line has {len(box_fields)} values (3 or 9 expected)", line=box_line)
    box_values = [_gro_field(path, box_line, field, "box value") for field in box_fields]
    if any(value != 0.0 for value in box_values[3:]):
        raise InputFileError(path, f"non-orthorhombic box (off-diagonal values {box_fields[3:]}); only "
                                   f"orthorhombic boxes are supported", line=box_line)
    if min(box_values[:3]) <= 0.0:
        raise InputFileError(path, f"box edges {box_fields[:3]} must be positive", line=box_line)

    atoms = read(io.StringIO("\n".join(lines) + "\n"), format="gromacs")
    return GroStructure(positions=atoms.positions / NM_TO_ANGSTROM,
                        box=np.diag(atoms.cell.array) / NM_TO_ANGSTROM,
                        names=np.asarray(atoms.arrays["atomtypes"], dtype=str))


def read_xy_table(path, lower=-np.inf, upper=np.inf):
    """Read a two-column whitespace table (abscissa, value), e.g. an RDF target (r nm, g(r)).

    Blank lines and lines starting with '#' are skipped. Checks: every other line
    holds exactly two numbers; there are at least two rows; abscissae are finite,
    strictly increasing and within [lower, upper] (inclusive); values are finite.

    Returns:
      (x, y): two float64 arrays of the same length.

    Raises:
      InputFileError (a ValueError) naming the file and the offending line.
    """
    rows, line_numbers = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise InputFileError(path, f"expected 2 columns (abscissa, value), found {len(fields)}", line=number)
        try:
            rows.append((float(fields[0]), float(fields[1])))
        except ValueError:
            raise InputFileError(path, f"cannot parse {line.strip()!r} as two numbers", line=number) from None
        line_numbers.append(number)
    if len(rows) < 2:
        raise InputFileError(path, f"a table needs at least 2 rows, found {len(rows)}")
    x, y = np.array(rows, dtype=np.float64).T
    for k, number in enumerate(line_numbers):
        if not np.isfinite(x[k]) or not lower <= x[k] <= upper:
            raise InputFileError(path, f"abscissa {float(x[k])!r} outside [{lower}, {upper}]", line=number)
        if k > 0 and not x[k] > x[k - 1]:
            raise InputFileError(path, f"abscissa {float(x[k])!r} does not increase (previous row: "
                                       f"{float(x[k - 1])!r})", line=number)
        if not np.isfinite(y[k]):
            raise InputFileError(path, f"value {y[k]} is not finite", line=number)
    return x, y
