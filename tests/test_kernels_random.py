"""The counter-based random numbers: Philox known answers, the inverse normal CDF, normality."""
import numpy as np
from scipy import special, stats

from difftre.kernels.random import inverse_normal_cdf, normal4, philox4x32

U = np.uint64


def test_philox_known_answers():
    """Random123's kat_vectors for philox4x32-10."""
    m = U(0xFFFFFFFF)
    cases = [((0, 0, 0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((m, m, m, m, m, m), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter_key, expected in cases:
        assert tuple(int(x) for x in philox4x32(*[U(v) for v in counter_key])) == expected


def test_inverse_normal_cdf_equals_scipy():
    p = np.concatenate([np.linspace(1e-9, 1 - 1e-9, 20001), 10.0 ** -np.arange(1, 300, 3.0),
                        1 - 10.0 ** -np.arange(1, 16, 0.5)])
    mine = np.array([inverse_normal_cdf(x) for x in p])
    np.testing.assert_allclose(mine, special.ndtri(p), rtol=1e-14, atol=1e-14)


def test_normal4_is_standard_normal_and_independent():
    draws = np.array([normal4(12345, step, counter, 0) for step in range(200) for counter in range(100)])
    assert stats.kstest(draws.ravel(), "norm").pvalue > 1e-3
    correlation = np.corrcoef(draws.T)
    assert np.abs(correlation - np.eye(4)).max() < 0.03
    assert normal4(1, 2, 3, 0) != normal4(1, 2, 4, 0) != normal4(1, 3, 3, 0)
