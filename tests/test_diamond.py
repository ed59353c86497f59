"""The diamond experiment through the runner, on its quick preset (64 atoms)."""
import numpy as np
import pytest

from difftre import runner
from difftre.experiments.diamond import GPA, crystal


def test_crystal_has_the_requested_density():
    positions, box = crystal(5, 3512.0, 12.011)
    assert len(positions) == 1000
    np.testing.assert_allclose(box, 1.78412, atol=5e-6)                  # paper-setup section 4
    mass_kg = 1000 * 12.011e-3 / 6.02214076e23
    assert mass_kg / np.prod(box * 1e-9) == pytest.approx(3512.0, rel=1e-12)


@pytest.mark.slow
def test_quick_preset_reports_prior_elastic_constants_with_errors(tmp_path):
    """The Stillinger-Weber prior alone (theta = 0 at the first update): its pressure is about +18 GPa
    and C11, C12 near the 541 / 290 GPa the paper reports (LAMMPS born/matrix: 548.5 / 277.8)."""
    summary = runner.run("diamond", tmp_path / "diamond", preset="quick", overrides={"training.n_updates": 1},
                         progress=False)
    assert 530 < summary["c11_gpa"] < 570 and 260 < summary["c12_gpa"] < 300
    assert summary["c11_standard_error_gpa"] > 0 and summary["c44_standard_error_gpa"] > 0
    pressure = -np.trace(np.asarray(summary["stress_gpa"])) / 3
    assert 17 < pressure < 20
    assert (tmp_path / "diamond" / "elastic.png").exists() and (tmp_path / "diamond" / "uf3_coefficients.npz").exists()
    assert GPA == pytest.approx(602.2137)
