"""Iterative Boltzmann inversion: PMF, update, pressure correction and table export against hand-computed values."""
import numpy as np
import pytest

from difftre import ibi, md
from difftre.kernels.spline import pack_spline_table, spline_value_and_slope


def test_potential_of_mean_force_with_linear_core():
    r = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    g = np.array([0.0, 0.0, np.exp(-2.0), np.exp(-1.0), 1.0])
    # tail: -2 ln g = 4, 2, 0; core: the line through (0.2, 4), (0.3, 2), slope -20 kJ/mol/nm
    np.testing.assert_allclose(ibi.potential_of_mean_force(r, g, kT=2.0), [8.0, 6.0, 4.0, 2.0, 0.0], rtol=1e-14)
    # a zero inside the onset belongs to the core: the tail starts after the last zero (tail 1, 0:
    # slope -10 kJ/mol/nm; the isolated g = e^-5 at r = 0.1 is ignored)
    g_noisy = np.array([0.0, np.exp(-5.0), 0.0, np.exp(-1.0), 1.0])
    np.testing.assert_allclose(ibi.potential_of_mean_force(r, g_noisy, kT=1.0), [4.0, 3.0, 2.0, 1.0, 0.0],
                               rtol=1e-14, atol=1e-15)
    # an attractive first step would give an attractive core: the slope is capped at 0 (flat core)
    g_rising = np.array([0.0, 1.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(ibi.potential_of_mean_force(r, g_rising, kT=1.0), [0, 0, np.log(2), 0, 0],
                               atol=1e-15)


def test_potential_of_mean_force_rejects_unusable_rdfs():
    r = np.linspace(0, 0.4, 5)
    with pytest.raises(ValueError, match="positive on at least the last two"):
        ibi.potential_of_mean_force(r, [0, 0, 0, 0, 1.0], 1.0)
    with pytest.raises(ValueError, match="g_target has negative entries at indices \\[1\\]"):
        ibi.potential_of_mean_force(r, [0, -1, 1, 1, 1.0], 1.0)
    with pytest.raises(ValueError, match="g_target must be a 1-D array of the grid's length"):
        ibi.potential_of_mean_force(r, [1.0, 1.0], 1.0)


def test_ibi_update_hand_values():
    kT = 2.5
    U = np.array([10.0, 5.0, 1.0, -1.0, 0.5, 0.0])
    g = np.array([0.0, 0.0, 2.0, 1.0, 0.5, 1.0])
    g_target = np.array([0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    # defined at indices 2..5: kT ln 2, 0, kT ln(1/2), 0; the core (0, 1) takes index 2's correction
    d = kT * np.log(2.0)
    expected = U + np.array([d, d, d, 0.0, -d, 0.0])
    np.testing.assert_allclose(ibi.ibi_update(U, g, g_target, kT), expected, rtol=1e-14)
    np.testing.assert_allclose(ibi.ibi_update(U, g, g_target, kT, lam=0.2), U + 0.2 * (expected - U), rtol=1e-14)
    # a gap where g = 0 between defined points: linear in the index between its neighbours' corrections
    g_gap = np.array([1.0, 2.0, 0.0, 0.0, 4.0, 1.0])
    np.testing.assert_allclose(ibi.ibi_update(np.zeros(6), g_gap, np.ones(6), 1.0),
                               np.log([1.0, 2.0, 2.0 ** (4 / 3), 2.0 ** (5 / 3), 4.0, 1.0]), rtol=1e-14)
    # at the target nothing moves
    np.testing.assert_array_equal(ibi.ibi_update(U, g_target, g_target, kT)[1:], U[1:])
    with pytest.raises(ValueError, match="nowhere both positive"):
        ibi.ibi_update(U, np.zeros(6), g_target, kT)


def test_pressure_correction_hand_values():
    r = np.array([0.0, 0.45, 0.9, 1.0])
    kT = 2.4
    # dP = +1000 bar: f |dP| = 0.3, A = -0.1 * 2.4 * 0.3 = -0.072 kJ/mol (attractive ramp lowers P)
    np.testing.assert_allclose(ibi.pressure_correction(r, 0.9, 1000.0, kT), [-0.072, -0.036, 0.0, 0.0], rtol=1e-14)
    # dP = -1e5 bar saturates at max_A kT = 0.24 kJ/mol, repulsive
    np.testing.assert_allclose(ibi.pressure_correction(r, 0.9, -1e5, kT), [0.24, 0.12, 0.0, 0.0], rtol=1e-14)
    np.testing.assert_allclose(ibi.pressure_correction(r, 0.9, 100.0, kT, f=1e-3, max_A=0.2),
                               [-0.048, -0.024, 0.0, 0.0], rtol=1e-14)
    np.testing.assert_array_equal(ibi.pressure_correction(r, 0.9, 0.0, kT), np.zeros(4))


def test_pair_table_hand_computed_coefficients():
    # natural start (M0 = 0), clamped end (U' = 0) through (0, 2), (1, 1), (2, 0):
    # 4 M1 + M2 = 0, M1 + 2 M2 = 6  ->  M1 = -6/7, M2 = 24/7
    expected = np.array([[2.0, -6 / 7, 0.0, -1 / 7], [1.0, -9 / 7, -3 / 7, 5 / 7]])
    x0, h, coefficients = ibi.pair_table_from_values([0.0, 1.0, 2.0], [2.0, 1.0, 0.0])
    assert (x0, h) == (0.0, 1.0)
    np.testing.assert_allclose(coefficients, expected, atol=1e-15)
    # a constant shift is removed (the table vanishes at the cut-off)
    np.testing.assert_allclose(ibi.pair_table_from_values([0.0, 1.0, 2.0], [5.0, 4.0, 3.0])[2], expected, atol=1e-15)
    # scaled grid: r = 0.5 + 0.1 k, U scaled by 3 -> c_j scales as 3 / 0.1^j
    x0, h, scaled = ibi.pair_table_from_values([0.5, 0.6, 0.7], [6.0, 3.0, 0.0])
    assert x0 == 0.5 and h == pytest.approx(0.1, rel=1e-15)
    np.testing.assert_allclose(scaled, 3.0 * expected / 0.1 ** np.arange(4), rtol=1e-13, atol=1e-12)
    with pytest.raises(ValueError, match="uniform increasing grid"):
        ibi.pair_table_from_values([0.0, 1.0, 3.0], [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="U has non-finite entries"):
        ibi.pair_table_from_values([0.0, 1.0, 2.0], [np.inf, 1.0, 0.0])


def test_pair_table_runs_in_the_engine_and_vanishes_at_the_cut_off():
    r = np.linspace(0.2, 0.9, 71)
    U = 4.0 * ((0.3 / r) ** 12 - (0.3 / r) ** 6)
    table = ibi.pair_table_from_values(r, U)
    params = pack_spline_table(*table)
    knots = [spline_value_and_slope(x, params) for x in r]
    np.testing.assert_allclose([u for u, _ in knots], U - U[-1], rtol=1e-12, atol=1e-12)
    assert knots[-1] == pytest.approx((0.0, 0.0), abs=1e-12)   # energy and force vanish at the cut-off
    # C1 at interior knots: the slope from the left interval's cubic equals the right one's at t = 0
    c = table[2]
    left_slopes = c[:-1, 1] + 2 * c[:-1, 2] * table[1] + 3 * c[:-1, 3] * table[1] ** 2
    np.testing.assert_allclose(left_slopes, c[1:, 1], rtol=1e-9, atol=1e-9)
    left_curvature = 2 * c[:-1, 2] + 6 * c[:-1, 3] * table[1]
    np.testing.assert_allclose(left_curvature, 2 * c[1:, 2], rtol=1e-9, atol=1e-6)
    term = md.tabulated_pair(*table)
    assert term.cutoff == pytest.approx(0.9, rel=1e-15)
    u, f_over_r = term.function(0.45 ** 2, term.params)
    u_ref, du_dr = spline_value_and_slope(0.45, params)
    assert (u, f_over_r) == pytest.approx((u_ref, -du_dr / 0.45), rel=1e-14)
