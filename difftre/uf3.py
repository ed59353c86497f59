"""UF3 potential: the learnable JAX model (difftre.models.uf3) meets the Numba kernel and LAMMPS.

- `uf3_term(spec, theta)`: the model with parameters theta as an md.SystemTerm for the sampler.
- `check_sampler(sampler, spec)`: a clear error when a sampler's neighbour list cannot hold
  the pairs and legs of the model.
- `write_lammps_uf3(path_prefix, spec, theta)`: a LAMMPS ``pair_style uf3`` potential file.
- `write_lammps_table(path, spec, theta, n_points)`: the pair part as a ``pair_style table`` file.

LAMMPS units: ``units metal`` (Angstrom, eV) by default or ``units real`` (Angstrom,
kcal/mol); lengths are converted nm -> Angstrom (x 10), energies kJ/mol -> eV
(/ 96.485332123310018, CODATA 2018 exact e N_A / 1000) or kcal/mol (/ 4.184).
"""
import datetime

import numpy as np

from difftre import md
from difftre.kernels import uf3 as uf3_kernels
from difftre.models.uf3 import UF3Spec

ANGSTROM_PER_NM = 10.0
KJ_PER_MOL_PER_ENERGY_UNIT = {"metal": 96.485332123310018, "real": 4.184}
"""kJ/mol in one LAMMPS energy unit: eV (units metal) and kcal/mol (units real)."""


def _checked_spec(spec):
    if not isinstance(spec, UF3Spec):
        raise TypeError(f"spec must be a difftre.models.uf3.UF3Spec, got {type(spec).__name__}")
    return spec


def _full_coefficients(spec, theta):
    """(a, c) float64 full arrays (kJ/mol) of theta (n_free,)."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (spec.n_free,):
        raise ValueError(f"theta must have shape ({spec.n_free},) for {spec}, got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"theta must be finite, got non-finite entries at {np.flatnonzero(~np.isfinite(theta))[:5]}")
    return spec.unpack(theta)


def uf3_params(spec, theta, dtype=np.float64):
    """Packed kernel parameters (difftre.kernels.uf3 layout) of the model spec with theta (n_free,)."""
    spec = _checked_spec(spec)
    a, c = _full_coefficients(spec, theta)
    axes = [(x.r_min, x.cutoff, x.n_intervals) for x in (spec.pair_axis, spec.leg_axis, spec.jk_axis)]
    return uf3_kernels.pack_params(*axes, a, c, dtype=dtype)


def uf3_term(spec, theta, dtype=np.float64):
    """md.SystemTerm of the UF3 model (Numba kernel); neighbor_cutoff = max(pair, leg cut-off) (nm)."""
    params = uf3_params(spec, theta, dtype)
    return md.SystemTerm(uf3_kernels.uf3, params, spec.neighbor_cutoff)


def check_sampler(sampler, spec):
    """Raise ValueError unless the sampler builds a full neighbour list covering the model's pairs and legs.

    (A sampler whose force field holds `uf3_term(spec, ...)` always does; this guards a JAX UF3
    model fed from another force field's list, e.g. through difftre.bridge.jax_force_term.)
    """
    spec = _checked_spec(spec)
    if sampler.force_field.half_list:
        raise ValueError("the sampler builds a half neighbour list (no system term asks for a full one); "
                         "the UF3 triplets need a full list: add the term with neighbor_cutoff >= "
                         f"{spec.neighbor_cutoff} nm")
    if sampler.list_cutoff < spec.neighbor_cutoff:
        raise ValueError(f"the sampler's neighbour list covers {sampler.list_cutoff} nm (cut-off + skin), less "
                         f"than the UF3 model needs: max(pair_cutoff={spec.pair_cutoff}, "
                         f"leg_cutoff={spec.leg_cutoff}) nm")


def _energy_scale(units):
    if units not in KJ_PER_MOL_PER_ENERGY_UNIT:
        raise ValueError(f"units must be one of {sorted(KJ_PER_MOL_PER_ENERGY_UNIT)}, got {units!r}")
    return 1.0 / KJ_PER_MOL_PER_ENERGY_UNIT[units]


def _numbers(values):
    return " ".join(repr(float(v)) for v in values)


def write_lammps_uf3(path_prefix, spec, theta, units="metal", element="X"):
    """Write the model as a LAMMPS ``pair_style uf3`` potential file ``<path_prefix>.uf3``.

    One file with a 2B and a 3B block in the format of LAMMPS doc/src/pair_uf3.rst (LAMMPS
    >= 27Jun2024: ``#UF3 POT UNITS: ...``, ``2B el el 0 3 uk`` / ``3B el el el 0 3 uk``, knots,
    coefficients, ``#``). Lengths in Angstrom, energies in eV (metal) or kcal/mol (real).

    LAMMPS sums the 2-body term over its full neighbour list, i.e. over ordered pairs (i, j) and
    (j, i); the file therefore holds a_n / 2 so that LAMMPS's energy is sum_{i<j} V2 as here.
    The 3-body term is summed over j < k per centre i in both. Coefficient matrix lines are
    c[l][m][:] for l (r_ij axis), m (r_ik axis), the entries along the r_jk axis.
    LAMMPS reads only pairs inside the 2-body cut-off, so the leg cut-off must not exceed it.

    Returns (path, LAMMPS input lines): ``pair_style uf3 3`` and ``pair_coeff * * path element``.
    """
    spec = _checked_spec(spec)
    if spec.leg_cutoff > spec.pair_cutoff:
        raise ValueError(f"LAMMPS pair_style uf3 finds legs only within the 2-body cut-off: leg_cutoff="
                         f"{spec.leg_cutoff} must be <= pair_cutoff={spec.pair_cutoff} nm")
    if not element or any(ch.isspace() for ch in element):
        raise ValueError(f"element must be a non-empty name without spaces, got {element!r}")
    energy = _energy_scale(units)
    a, c = _full_coefficients(spec, theta)
    pair_knots = spec.pair_axis.knots * ANGSTROM_PER_NM
    leg_knots = spec.leg_axis.knots * ANGSTROM_PER_NM
    jk_knots = spec.jk_axis.knots * ANGSTROM_PER_NM
    leg_cut = spec.leg_cutoff * ANGSTROM_PER_NM
    header = (f"#UF3 POT UNITS: {units} DATE: {datetime.date.today().isoformat()} AUTHOR: difftre "
              f"CITATION: Xie, Rupp & Hennig, npj Comput. Mater. 9, 162 (2023)")
    lines = [header, f"2B {element} {element} 0 3 uk",
             f"{spec.pair_cutoff * ANGSTROM_PER_NM!r} {len(pair_knots)}", _numbers(pair_knots),
             f"{len(a)}", _numbers(0.5 * a * energy), "#",
             header, f"3B {element} {element} {element} 0 3 uk",
             f"{2.0 * leg_cut!r} {leg_cut!r} {leg_cut!r} {len(jk_knots)} {len(leg_knots)} {len(leg_knots)}",
             _numbers(jk_knots), _numbers(leg_knots), _numbers(leg_knots),
             f"{c.shape[0]} {c.shape[1]} {c.shape[2]}"]
    lines += [_numbers(c[l, m] * energy) for l in range(c.shape[0]) for m in range(c.shape[1])]
    lines.append("#")
    path = f"{path_prefix}.uf3"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, ["pair_style uf3 3", f"pair_coeff * * {path} {element}"]


def write_lammps_table(path, spec, theta, n_points, units="metal", keyword="UF3_PAIR", r_inner=None):
    """Write the 2-body part as a LAMMPS ``pair_style table`` file (a model without 3-body terms).

    n_points evenly spaced distances from r_inner (nm; default the pair r_min, or pair_cutoff /
    n_points where that is 0) to the pair cut-off, each line ``index r E F`` with F = -dE/dr
    (Angstrom, eV or kcal/mol). Raises if any three-body coefficient is non-zero (use
    `write_lammps_uf3`). Returns (path, LAMMPS input lines).
    """
    spec = _checked_spec(spec)
    a, c = _full_coefficients(spec, theta)
    if np.any(c != 0.0):
        raise ValueError("write_lammps_table exports a 2-body-only model, but theta has non-zero three-body "
                         "coefficients; use write_lammps_uf3")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    if r_inner is None:
        r_inner = spec.pair_r_min if spec.pair_r_min > 0 else spec.pair_cutoff / n_points
    if not 0.0 < r_inner < spec.pair_cutoff:
        raise ValueError(f"r_inner must lie in (0, pair_cutoff={spec.pair_cutoff}) nm, got {r_inner}")
    from scipy.interpolate import BSpline   # independent of the kernel's basis evaluation
    spline = BSpline(spec.pair_axis.knots, a, 3, extrapolate=True)
    r = np.linspace(r_inner, spec.pair_cutoff, n_points)
    energy = _energy_scale(units)
    u = spline(r) * energy
    f = -spline.derivative()(r) * energy / ANGSTROM_PER_NM
    r_a = r * ANGSTROM_PER_NM
    lines = [f"# UF3 2-body spline exported by difftre (units {units})", "", keyword,
             f"N {n_points} R {float(r_a[0])!r} {float(r_a[-1])!r}", ""]
    lines += [f"{k + 1} {_numbers((r_a[k], u[k], f[k]))}" for k in range(n_points)]
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path, [f"pair_style table spline {n_points}", f"pair_coeff * * {path} {keyword} {float(r_a[-1])!r}"]
