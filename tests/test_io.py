"""Trajectories written through ASE read back unchanged."""
import numpy as np
import pytest

from difftre import md
from difftre.io import write_trajectory


def test_extended_xyz_round_trip(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    rng = np.random.default_rng(0)
    trajectory = md.Trajectory(rng.uniform(0, 3, (4, 10, 3)), rng.normal(size=(4, 10, 3)), rng.normal(size=4),
                               rng.uniform(1, 2, 4), np.zeros((4, 3, 3)), np.array([3.0, 3.1, 3.2]))
    path = tmp_path / "traj.extxyz"
    assert write_trajectory(path, trajectory) == 4
    frames = ase_io.read(str(path), index=":")
    assert len(frames) == 4
    for f, atoms in enumerate(frames):
        np.testing.assert_allclose(atoms.positions / 10.0, trajectory.positions[f], rtol=1e-7)
        np.testing.assert_allclose(atoms.cell.lengths() / 10.0, trajectory.box)
        assert atoms.get_potential_energy() == pytest.approx(trajectory.potential_energy[f])
    with pytest.raises(ValueError, match="no frames"):
        write_trajectory(tmp_path / "empty.extxyz", md.Trajectory(np.empty((0, 10, 3)), np.empty((0, 10, 3)),
                                                                  np.empty(0), np.empty(0), np.empty((0, 3, 3)),
                                                                  np.ones(3)))


# --- reading: .gro configurations and two-column tables -------------------------------------------------

from difftre.io import InputFileError, read_gro, read_xy_table  # noqa: E402

GRO_ATOMS = ["    1SOL     OW    1   0.100   0.200   0.300  0.1000 -0.2000  0.3000",
             "    2SOL     OW    2   1.000   2.000   2.900 -0.5000  0.0000  0.2500"]


def _write(tmp_path, lines, name="conf.gro"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _gro(tmp_path, count="2", atoms=GRO_ATOMS, box="   3.00000   3.10000   3.20000"):
    return _write(tmp_path, ["two beads", count, *atoms, box])


def test_read_gro_values_and_shipped_file(tmp_path):
    structure = read_gro(_gro(tmp_path), expected_atoms=2)
    np.testing.assert_allclose(structure.positions, [[0.1, 0.2, 0.3], [1.0, 2.0, 2.9]], rtol=1e-15)  # ASE: x10, here /10
    np.testing.assert_array_equal(structure.box, [3.0, 3.1, 3.2])
    assert list(structure.names) == ["OW", "OW"]
    without_velocities = read_gro(_gro(tmp_path, atoms=[line[:44] for line in GRO_ATOMS]))
    np.testing.assert_array_equal(without_velocities.positions, structure.positions)
    assert structure.positions.dtype == np.float64
    # 9-value box with zero off-diagonals is orthorhombic; blank lines after the box are ignored
    zero_tilt = _write(tmp_path, ["t", "2", *GRO_ATOMS, "3 3.1 3.2 0 0 0 0 0 0", "", ""], "tilt0.gro")
    np.testing.assert_array_equal(read_gro(zero_tilt).box, [3.0, 3.1, 3.2])
    from importlib import resources
    water = read_gro(resources.files("difftre") / "data" / "cg_water" / "water_901_cg.gro", expected_atoms=901)
    assert water.positions.shape == (901, 3)
    np.testing.assert_array_equal(water.box, [3.0, 3.0, 3.0])
    np.testing.assert_allclose(water.positions[0], [0.028, 2.011, 1.671], rtol=1e-15)   # the file's first atom line


@pytest.mark.parametrize("lines, expected_atoms, match", [
    (["t", "3", *GRO_ATOMS, "3 3 3"], None, r"line 2 announces 3 atoms.*ends at line 5"),
    (["t", "2", GRO_ATOMS[0]], None, r"truncated"),
    (["t", "1", *GRO_ATOMS, "3 3 3"], None, r"line 5: unexpected content after the box line 4"),
    (["t", "2", *GRO_ATOMS, "3 3 3"], 3, r"line 2: the file holds 2 atoms, expected 3"),
    (["t", "two", *GRO_ATOMS, "3 3 3"], None, r"line 2: the atom count 'two' is not an integer"),
    (["t", "0", "3 3 3"], None, r"line 2: the atom count is 0"),
    (["t", "2", *GRO_ATOMS, "3 3 3 0 0 0.5 0 0 0"], None, r"line 5: non-orthorhombic box"),
    (["t", "2", *GRO_ATOMS, "3 3"], None, r"line 5: the box line has 2 values"),
    (["t", "2", *GRO_ATOMS, "3 -3 3"], None, r"line 5: box edges .* must be positive"),
    (["t", "2", *GRO_ATOMS, "3 nan 3"], None, r"line 5: box value is nan"),
    (["t", "2", GRO_ATOMS[0], GRO_ATOMS[1].replace("   2.000", "     nan"), "3 3 3"], None,
     r"line 4: y position is nan"),
    (["t", "2", GRO_ATOMS[0], GRO_ATOMS[1].replace("   2.000", "   2.0x0"), "3 3 3"], None,
     r"line 4: y position '2.0x0' is not a number"),
    (["t", "2", GRO_ATOMS[0], GRO_ATOMS[1][:30], "3 3 3"], None, r"line 4: atom line too short"),
    (["t", "2", GRO_ATOMS[0].replace("-0.2000", "  -inf "), GRO_ATOMS[1], "3 3 3"], None,
     r"line 3: y velocity is -inf"),
    (["t"], None, r"needs a title line and the atom count"),
    (["t", "2", GRO_ATOMS[0], GRO_ATOMS[1][:44], "3 3 3"], None, r"line 4: velocities missing here but present on"),
    (["t", "2", GRO_ATOMS[0][:44], GRO_ATOMS[1], "3 3 3"], None, r"line 4: velocities present here but missing on"),
    (["t", "2", GRO_ATOMS[0], GRO_ATOMS[1][:60], "3 3 3"], None, r"line 4: incomplete velocity"),
    (["t", "2", GRO_ATOMS[0], "    x" + GRO_ATOMS[1][5:], "3 3 3"], None, r"line 4: residue number 'x'"),
    (["t", "2", GRO_ATOMS[0], GRO_ATOMS[1][:10] + "     " + GRO_ATOMS[1][15:], "3 3 3"], None,
     r"line 4: empty atom name"),
])
def test_read_gro_bad_files_name_file_and_line(tmp_path, lines, expected_atoms, match):
    path = _write(tmp_path, lines)
    with pytest.raises(InputFileError, match=match) as error:
        read_gro(path, expected_atoms=expected_atoms)
    assert str(path) in str(error.value) and isinstance(error.value, ValueError)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_gro(tmp_path / "missing.gro")
    with pytest.raises(InputFileError, match="not a regular file"):
        read_xy_table(tmp_path)
    binary = tmp_path / "latin1.gro"
    binary.write_bytes(b"title\n  1\n\xe9\n")
    with pytest.raises(InputFileError, match=r"line 3: not UTF-8 text \(byte 10 is 0xe9\)") as error:
        read_gro(binary)
    assert error.value.line == 3 and error.value.path == str(binary)


def test_read_xy_table(tmp_path):
    path = _write(tmp_path, ["# r g", "0.0 0", "", "0.5  1.5e0", "1.0\t1.0"], "t.csv")
    x, y = read_xy_table(path, lower=0.0, upper=1.0)
    np.testing.assert_array_equal(x, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(y, [0.0, 1.5, 1.0])


@pytest.mark.parametrize("lines, match", [
    (["0 1", "0.5 1 2"], r"line 2: expected 2 columns"),
    (["0 1", "0.5 one"], r"line 2: cannot parse '0.5 one'"),
    (["0 1", "0.5 1", "0.5 2"], r"line 3: abscissa 0.5 does not increase \(previous row: 0.5\)"),
    (["0 1", "0.5 1", "0.4 2"], r"line 3: abscissa 0.4 does not increase"),
    (["-0.1 1", "0.5 1"], r"line 1: abscissa -0.1 outside \[0.0, 1.0\]"),
    (["0 1", "# comment", "1.5 1"], r"line 3: abscissa 1.5 outside"),
    (["0 1", "nan 1"], r"line 2: abscissa nan outside"),
    (["0 1", "0.5 inf"], r"line 2: value inf is not finite"),
    (["0 1"], r"at least 2 rows, found 1"),
])
def test_read_xy_table_bad_tables_name_the_line(tmp_path, lines, match):
    path = _write(tmp_path, lines, "bad.csv")
    with pytest.raises(InputFileError, match=match) as error:
        read_xy_table(path, lower=0.0, upper=1.0)
    assert str(path) in str(error.value)


def test_target_loaders_use_the_checked_reader(tmp_path):
    from difftre.observables.structure import bin_centers, load_rdf_target
    good = _write(tmp_path, ["0 0", "0.5 2", "1 1"], "rdf.csv")
    np.testing.assert_allclose(load_rdf_target(np.array([0.25, 0.75]), good), [1.0, 1.5])
    bad = _write(tmp_path, ["0 0", "0.5 2", "0.4 1"], "rdf_bad.csv")
    with pytest.raises(InputFileError, match=r"rdf_bad.csv, line 3: abscissa 0.4 does not increase"):
        load_rdf_target(bin_centers(0, 1, 10), bad)
    negative = _write(tmp_path, ["-0.01 0", "1 1"], "rdf_negative.csv")
    with pytest.raises(InputFileError, match=r"line 1: abscissa -0.01 outside \[0.0, inf\]"):
        load_rdf_target(bin_centers(0, 1, 10), negative)
