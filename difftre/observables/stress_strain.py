"""Elastic constants from explicit strains: the stress-strain check of the fluctuation stiffness (NumPy).

A crystal is held at a fixed uniaxial deformation F = diag(1 + e along one axis) (positions and box
scaled together) in NVT; its average Cauchy stress sigma (tension positive, ``cauchy_stress``) is
turned into the second Piola-Kirchhoff stress S = J F^-1 sigma F^-T (``second_piola_kirchhoff``)
and fitted against the Green-Lagrange strain eta = e + e^2 / 2: dS/deta at eta = 0 is the
isothermal stiffness C that the stress-fluctuation formula gives (``elastic.py``), the reference
stress sigma0 included. Raw Cauchy slopes differ from C by it, e.g. d sigma_zz/de_z = C11 + sigma0_zz
and d sigma_xx/de_z = C12 - sigma0_xx.

Cubic crystal oriented x = [110], y = [-110], z = [001] (``systems.rotated_110_lattice``, an
orthorhombic box): a strain along z (the cube axis) gives C11 = dS_zz/deta and
C12 = d(S_xx + S_yy)/2 / deta; a strain along x = [110] is a shear in the cube frame and gives
C44 = d(S_xx - S_yy)/2 / deta, with C12 = dS_zz/deta and C11 = d(S_xx + S_yy - S_zz)/deta as
cross-checks (``cubic_slopes``).

Finite strain: the polynomial in eta through the strained runs (``slope_at_zero``) leaves the terms
of order (number of runs) in eta; the secant through e = +-s is biased by (q + d) s^2 for
S(eta) = S0 + C eta + q eta^2 + d eta^3. Errors: block averages of each run's stress
(``block_standard_error``), propagated through the fit. Units: nm, ps, u, kJ/mol; stress and
stiffness in kJ mol^-1 nm^-3.
"""
import numpy as np

from difftre.observables.errors import block_standard_error

CUBIC_SLOPES = {   # strain axis of the x = [110], y = [-110], z = [001] crystal -> {constant: combination of S}
    2: {"C11": lambda s: s[..., 2, 2], "C12": lambda s: 0.5 * (s[..., 0, 0] + s[..., 1, 1])},
    0: {"C44": lambda s: 0.5 * (s[..., 0, 0] - s[..., 1, 1]), "C12 (x)": lambda s: s[..., 2, 2],
        "C11 (x)": lambda s: s[..., 0, 0] + s[..., 1, 1] - s[..., 2, 2]},
}


def uniaxial_stretch(axis, strain, dim=3):
    """The diagonal of F = I + strain e_axis (e_axis): (dim,)."""
    stretch = np.ones(dim)
    stretch[axis] += strain
    return stretch


def green_lagrange(strain):
    """Green-Lagrange strain eta = e + e^2 / 2 of a uniaxial stretch 1 + e."""
    strain = np.asarray(strain, np.float64)
    return strain + 0.5 * strain ** 2


def cauchy_stress(trajectory, masses):
    """Per-frame Cauchy stress sigma = -(K + W) / V, (n_frames, dim, dim) kJ mol^-1 nm^-3, of an
    ``md.Trajectory`` recorded with velocities: K = sum_i m_i v_i (x) v_i, W its virial sum f (x) r,
    V from its box (one (dim,) box, or one per frame); masses scalar or (N,) u."""
    velocities = np.asarray(trajectory.velocities, np.float64)
    if velocities.shape[0] != len(trajectory.potential_energy):
        raise ValueError("cauchy_stress needs the velocities of every frame: run the sampler with "
                         "record_velocities=True")
    masses = np.broadcast_to(np.asarray(masses, np.float64), velocities.shape[1:2])
    kinetic = np.einsum("i,fia,fib->fab", masses, velocities, velocities)
    volume = np.prod(np.asarray(trajectory.box, np.float64), axis=-1)
    return -(kinetic + trajectory.virial) / np.reshape(volume, (-1, 1, 1))


def second_piola_kirchhoff(cauchy, stretch):
    """S = J F^-1 sigma F^-T for the diagonal deformation F = diag(stretch), J = det F; cauchy (..., dim, dim)."""
    stretch = np.asarray(stretch, np.float64)
    return np.prod(stretch) * np.asarray(cauchy) / np.outer(stretch, stretch)


def slope_at_zero(strains, values, errors):
    """(slope, standard error) of d value / d eta at eta = 0, the polynomial in the Green-Lagrange strain
    eta (degree: points - 1; the secant for two) through (eta(e), value) for the uniaxial strains e,
    with independent errors of the values propagated."""
    eta = green_lagrange(strains)
    weights = np.linalg.inv(np.vander(eta, len(eta), increasing=True))[1]   # slope = weights @ values
    return float(weights @ np.asarray(values)), float(np.sqrt(np.sum((weights * np.asarray(errors)) ** 2)))


def cubic_slopes(piola_runs, strains, n_blocks):
    """{constant: (slope, standard error)} kJ mol^-1 nm^-3 of a cubic crystal oriented x = [110],
    y = [-110], z = [001] (see ``CUBIC_SLOPES``).

    piola_runs: {strain axis (2 or 0): [per-frame S (n_frames, 3, 3) of the run at each strain]};
    strains: the uniaxial strains e of the runs, in the same order for every axis. Each run's mean of
    a combination carries its block-averaging SE over n_blocks blocks of consecutive frames.
    """
    slopes = {}
    for axis, runs in piola_runs.items():
        for name, combination in CUBIC_SLOPES[axis].items():
            series = [combination(np.asarray(run, np.float64)) for run in runs]
            slopes[name] = slope_at_zero(strains, [s.mean() for s in series],
                                         [block_standard_error(s, n_blocks=n_blocks) for s in series])
    return slopes
