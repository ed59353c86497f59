"""UF3 potential: the learnable JAX model (difftre.models.uf3) meets the Numba kernel and LAMMPS.

- `uf3_term(spec, theta)`: the model with parameters theta as an md.SystemTerm for the sampler.
- `check_sampler(sampler, spec)`: a clear error when a sampler's neighbour list cannot hold
  the pairs and legs of the model.
- `write_lammps_uf3(path_prefix, spec, theta)`: a LAMMPS ``pair_style uf3`` potential file.
- `write_lammps_table(path, spec, theta, n_points)`: the pair part as a ``pair_style table`` file.
- `uf3_potential(spec, prior_energy, prior_terms)`: a ``difftre.potential.Potential`` (energy, Numba
  force field, and the linear split U = U_prior + theta . Phi so the trainer computes Phi once per
  reference trajectory).
- `pressure_target`, `stress_target`, `stiffness_target`: ``difftre.trainer.Target`` s reading
  per-state virial / Born features (linear in theta): reweighting and its gradient need no model
  evaluation per update.
- `trajectory_basis_sums`, `trajectory_strain_sums`: those features of a whole trajectory by the
  Numba kernels (the targets' and the potential's ``trajectory_features``); `SharedStrainSums`
  computes the strain sums once for the stress and stiffness targets together.
- `save_coefficients` / `load_coefficients`: theta with its spec in one ``.npz`` file.
- `smoothness_penalty` (from difftre.models.uf3): per-axis roughness for ``difftre.optim.add_penalty_gradient``.

LAMMPS units: ``units metal`` (Angstrom, eV) by default or ``units real`` (Angstrom,
kcal/mol); lengths are converted nm -> Angstrom (x 10), energies kJ/mol -> eV
(/ 96.485332123310018, CODATA 2018 exact e N_A / 1000) or kcal/mol (/ 4.184).
"""
import datetime

import numpy as np

from difftre import md
from difftre.kernels import manybody, uf3 as uf3_kernels
from difftre.models.uf3 import UF3Model, UF3Spec, smoothness_penalty  # noqa: F401 (re-exported)

ANGSTROM_PER_NM = 10.0
KJ_PER_MOL_PER_ENERGY_UNIT = {"metal": 96.485332123310018, "real": 4.184}
"""kJ/mol in one LAMMPS energy unit: eV (units metal) and kcal/mol (units real)."""


def _trajectory_inputs(spec, frames, box):
    """(spec, frames (S, N, 3) float64, box (3,) float64, packed params, a starting neighbour capacity) of
    the trajectory kernels, checked."""
    spec = _checked_spec(spec)
    frames = np.ascontiguousarray(frames, np.float64)
    box = np.asarray(box, np.float64)
    if frames.ndim != 3 or frames.shape[2] != 3 or box.shape != (3,):
        raise ValueError(f"frames must be (S, N, 3) and box (3,), got {frames.shape} and {box.shape}")
    from difftre.kernels.neighbors import check_box_for_cutoff
    check_box_for_cutoff(box, spec.neighbor_cutoff)
    return spec, frames, box, uf3_params(spec, np.zeros(spec.n_free)), _list_capacity(frames, box,
                                                                                       spec.neighbor_cutoff)


def _list_capacity(frames, box, cutoff):
    """Neighbour slots per atom to start a trajectory kernel's lists with (they regrow when short)."""
    density = frames.shape[1] / np.prod(box)
    return int(1.5 * 4.0 / 3.0 * np.pi * cutoff ** 3 * density) + 16


def _folded(spec, pair, triplet):
    """Sums per full coefficient, pair (S, n_pair + 3, ...) and triplet (S, n_leg + 3, n_leg + 3, n_jk + 3, ...),
    as sums per free coefficient (S, n_free, ...): c[l, m, n] = c[m, l, n], a free one sums both orders."""
    l, m, n = spec.triplet_free_index()
    crossed = (l != m).reshape((-1,) + (1,) * (triplet.ndim - 4))
    return np.concatenate([pair[:, :spec.n_pair], triplet[:, l, m, n] + crossed * triplet[:, m, l, n]], axis=1)


def trajectory_basis_sums(spec, frames, box):
    """The UF3 features of every frame, by the Numba kernel (the compiled twin of
    ``UF3Model.features``, computed once per reference trajectory):

      phi (S, n_free):    U = theta . phi (kJ/mol per unit coefficient)
      strain (S, n_free): d phi / ds under the isotropic strain x -> (1 + s) x, so tr W = -theta . strain

    frames (S, N, 3) nm in the orthorhombic box (3,) nm; float64 whatever the frames' precision.
    Every pair and triplet inside the cut-offs enters (no leg capacity).
    """
    spec, frames, box, params, capacity = _trajectory_inputs(spec, frames, box)
    n_frames = len(frames)
    pair_shape, triplet_shape = (n_frames, spec.n_pair + 3), (n_frames, spec.n_leg + 3, spec.n_leg + 3, spec.n_jk + 3)
    phi2, strain2 = np.empty(pair_shape), np.empty(pair_shape)
    phi3, strain3 = np.empty(triplet_shape), np.empty(triplet_shape)
    uf3_kernels.uf3_trajectory_basis_sums(params, frames, box, capacity, phi2, phi3, strain2, strain3)
    return _folded(spec, phi2, phi3), _folded(spec, strain2, strain3)


STRAIN_CHUNK_VALUES = 2 ** 23
"""Values (float64) of the full-coefficient arrays of one `trajectory_strain_sums` kernel call (64 MiB)."""


def trajectory_strain_sums(spec, frames, box, born=True):
    """The UF3 strain features of every frame, by the Numba kernel (the compiled twins of
    ``UF3Model.virial_features`` and ``born_features``, computed once per reference trajectory):

      virial (S, n_free, 3, 3): W = theta . virial = -dU/deps under x -> (I + eps) x (kJ/mol per unit
        coefficient)
      born (S, n_free, 21): theta . born = d^2U / deta deta at eta = 0 (eta the Green-Lagrange strain),
        the 21 Voigt components of ``_to_voigt21`` (kJ/mol per unit coefficient); None without born

    frames (S, N, 3) nm in the orthorhombic box (3,) nm; float64 whatever the frames' precision; every
    pair and triplet inside the cut-offs enters. The frames go through the kernel in chunks that keep its
    full-coefficient arrays within STRAIN_CHUNK_VALUES.
    """
    spec, frames, box, params, capacity = _trajectory_inputs(spec, frames, box)
    pair, triplet = (spec.n_pair + 3,), (spec.n_leg + 3, spec.n_leg + 3, spec.n_jk + 3)
    chunk = max(1, STRAIN_CHUNK_VALUES // ((6 + 21 * born) * (pair[0] + int(np.prod(triplet)))))
    virials, borns = [], []
    for start in range(0, len(frames), chunk):
        part = frames[start:start + chunk]
        gradient2, gradient3 = np.empty((len(part), *pair, 6)), np.empty((len(part), *triplet, 6))
        hessian2, hessian3 = np.empty((len(part), *pair, 21 * born)), np.empty((len(part), *triplet, 21 * born))
        uf3_kernels.uf3_trajectory_strain_sums(params, part, box, capacity, born, gradient2, gradient3, hessian2,
                                               hessian3)
        virials.append(-_folded(spec, gradient2, gradient3)[..., _VOIGT_INDEX])
        borns.append(_folded(spec, hessian2, hessian3))
    return np.concatenate(virials), (np.concatenate(borns) if born else None)


def _kinetic_tensors(frames, velocities, masses, kT):
    """K (S, 3, 3) kJ/mol: sum m v (x) v with recorded velocities and masses, else N kT I."""
    if velocities is not None and len(velocities) and masses is not None:
        velocities = np.asarray(velocities, np.float64)
        masses = np.broadcast_to(np.asarray(masses, np.float64), velocities.shape[1:2])
        return np.einsum("i,sia,sib->sab", masses, velocities, velocities)
    if kT is None:
        raise ValueError("give kT (or masses with recorded velocities) for the kinetic part")
    return np.broadcast_to(frames.shape[1] * kT * np.eye(3), (len(frames), 3, 3))


def _prior_energies_and_virials(prior_terms, frames, box):
    """(U (S,), W (S, 3, 3)) of the prior's Numba terms (zeros without)."""
    if not prior_terms:
        return np.zeros(len(frames)), np.zeros((len(frames), 3, 3))
    return md.ForceField(list(prior_terms)).energies_and_virials(frames, box)


def _born_kernel(term):
    """The trajectory Born kernel of a prior term (Stillinger-Weber has one), or a ValueError."""
    if getattr(term, "function", None) is not manybody.stillinger_weber:
        raise ValueError(f"no compiled Born term for the prior term {term!r}: only md.stillinger_weber has one "
                         "(give prior_terms=None for the prior's JAX Born terms)")
    return manybody.stillinger_weber_trajectory_born


def _prior_born(prior_terms, frames, box):
    """d^2U_prior / deta deta (S, 21) kJ/mol in the order of ``_to_voigt21``, by the terms' Born kernels
    (zeros without)."""
    frames = np.ascontiguousarray(frames, np.float64)
    box = np.asarray(box, np.float64)
    total, born = np.zeros((len(frames), 21)), np.empty((len(frames), 21))
    for term in prior_terms:
        params = np.asarray(term.params, np.float64)
        _born_kernel(term)(params, frames, box, _list_capacity(frames, box, term.neighbor_cutoff), born)
        total += born
    return total


def _compiled(trajectory_features, prior_energy, prior_terms):
    """A target's trajectory_features where the kernels cover its prior (none, or its Numba terms given)."""
    return trajectory_features if prior_energy is None or prior_terms is not None else None


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
    check_force_field(sampler.force_field, spec, sampler.list_cutoff, "the sampler's")


def check_force_field(force_field, spec, list_cutoff=None, whose="the force field's"):
    """Raise ValueError unless `force_field` (an md.ForceField) gets a full neighbour list reaching
    max(pair, leg cut-off) of `spec` (list_cutoff: its reach, default the force field's cut-off)."""
    spec = _checked_spec(spec)
    if force_field.half_list:
        raise ValueError(f"{whose} neighbour list is a half list (no system term asks for a full one); "
                         "the UF3 triplets need a full list: add the term with neighbor_cutoff >= "
                         f"{spec.neighbor_cutoff} nm")
    reach = force_field.cutoff if list_cutoff is None else list_cutoff
    if reach < spec.neighbor_cutoff:
        raise ValueError(f"{whose} neighbour list covers {reach} nm, less than the UF3 model needs: "
                         f"max(pair_cutoff={spec.pair_cutoff}, leg_cutoff={spec.leg_cutoff}) nm")


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


def pair_term(spec, theta, r, derivative=0):
    """V2(r) = sum_n a_n B_n(r) (kJ/mol), or its ``derivative``-th r-derivative, at distances r (nm) below
    the pair cut-off (scipy's B-splines: independent of the kernels' basis evaluation)."""
    from scipy.interpolate import BSpline
    a, _ = _full_coefficients(_checked_spec(spec), theta)
    spline = BSpline(spec.pair_axis.knots, a, 3, extrapolate=True)
    return (spline.derivative(derivative) if derivative else spline)(np.asarray(r, np.float64))


def three_body_term(spec, theta, r1, r2, r_jk):
    """V3 = sum_lmn c_lmn B_l(r1) B_m(r2) B_n(r_jk) (kJ/mol) of triplets with legs r1, r2 and third side
    r_jk (nm, broadcast together; inside the axes' ranges), by scipy's B-splines."""
    from scipy.interpolate import BSpline
    spec = _checked_spec(spec)
    _, c = _full_coefficients(spec, theta)
    r1, r2, r_jk = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in (r1, r2, r_jk)))
    basis = [BSpline.design_matrix(x.ravel(), axis.knots, 3).toarray()
             for x, axis in ((r1, spec.leg_axis), (r2, spec.leg_axis), (r_jk, spec.jk_axis))]
    return np.einsum("pl,pm,pn,lmn->p", *basis, c).reshape(r1.shape)


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
    r = np.linspace(r_inner, spec.pair_cutoff, n_points)
    energy = _energy_scale(units)
    u = pair_term(spec, theta, r) * energy
    f = -pair_term(spec, theta, r, derivative=1) * energy / ANGSTROM_PER_NM
    r_a = r * ANGSTROM_PER_NM
    lines = [f"# UF3 2-body spline exported by difftre (units {units})", "", keyword,
             f"N {n_points} R {float(r_a[0])!r} {float(r_a[-1])!r}", ""]
    lines += [f"{k + 1} {_numbers((r_a[k], u[k], f[k]))}" for k in range(n_points)]
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path, [f"pair_style table spline {n_points}", f"pair_coeff * * {path} {keyword} {float(r_a[-1])!r}"]


# ----------------------------------------------------------------------------- training


def _cutoff_for(spec, cutoff):
    if cutoff is None:
        return spec.neighbor_cutoff
    if not cutoff >= spec.neighbor_cutoff:
        raise ValueError(f"cutoff={cutoff} nm: the neighbour lists must reach max(pair_cutoff={spec.pair_cutoff}, "
                         f"leg_cutoff={spec.leg_cutoff}) nm of the UF3 model (and the prior's cut-off)")
    return float(cutoff)


def _no_prior(params, state):
    return 0.0


def uf3_potential(spec, prior_energy=None, prior_terms=(), cutoff=None, leg_capacity=None, dtype=np.float64):
    """The UF3 model plus a fixed prior as a ``difftre.potential.Potential`` with the linear split.

    Args:
      spec: the UF3Spec; the learned parameters theta are (spec.n_free,) kJ/mol.
      prior_energy: the prior's JAX energy(params, state) (``difftre.models.priors``; ignores params),
        or None for no prior.
      prior_terms: the prior's Numba terms (``md.repulsive(...)`` etc.), the twins of prior_energy.
      cutoff: neighbour-list cut-off (nm) of the stored states; default max(pair, leg cut-off) of
        spec; give the larger one when the prior reaches further.
      leg_capacity: UF3Model.leg_capacity (None: whole neighbour rows, never truncated).
      dtype: precision of the Numba kernel's parameters.

    energy(theta, state) = UF3 + prior; force_field(theta) = md.ForceField([uf3_term, *prior_terms]),
    checked to build a full list that reaches the legs (``check_force_field``) before any run;
    features(state) = (U_prior, Phi (n_free,)) and energy_from_features(theta, f) = f[0] + f[1] . theta.
    """
    from difftre.potential import Potential
    spec = _checked_spec(spec)
    cutoff = _cutoff_for(spec, cutoff)
    model = UF3Model(spec, leg_capacity)
    prior = _no_prior if prior_energy is None else prior_energy
    prior_terms = tuple(prior_terms)

    def energy(params, state):
        return model.energy(params, state) + prior(params, state)

    def force_field(params):
        field = md.ForceField([uf3_term(spec, np.asarray(params), dtype), *prior_terms])
        check_force_field(field, spec)
        return field

    def features(state):
        return prior(None, state), model.features(state)

    def energy_from_features(params, f):
        return f[0] + f[1] @ params

    def trajectory_features(frames, box, velocities):
        return _prior_energies_and_virials(prior_terms, frames, box)[0], trajectory_basis_sums(spec, frames, box)[0]

    return Potential(energy, force_field, cutoff=cutoff, features=features,
                     energy_from_features=energy_from_features,
                     trajectory_features=None if prior_energy is not None and not prior_terms else trajectory_features)


def _volume(state):
    import jax.numpy as jnp
    return jnp.prod(state.box)


def _kinetic(state, kT, masses):
    """The kinetic tensor K (3, 3) kJ/mol: sum m v (x) v with velocities and masses, else N kT I."""
    import jax.numpy as jnp
    from difftre.observables.stress import kinetic_tensor
    n, dim = state.positions.shape
    if state.velocities is not None and masses is not None:
        return kinetic_tensor(state.velocities, masses)
    if kT is None:
        raise ValueError("give kT (or masses with recorded velocities) for the kinetic part")
    return n * kT * jnp.eye(dim, dtype=state.positions.dtype)


def _prior_born_stress(prior_energy, state):
    """(1/V) dU_prior/deps (3, 3), zero without a prior."""
    import jax.numpy as jnp
    from difftre.observables.stress import born_stress
    if prior_energy is None:
        return jnp.zeros((3, 3), state.positions.dtype)
    return born_stress(prior_energy, None, state)


def _stress_features(spec, prior_energy, kT, masses, leg_capacity):
    """Per-state stress sigma = constant + theta . linear ((3, 3) and (n_free, 3, 3), kJ/mol/nm^3):
    sigma = -(K + W) / V with W = theta . V_UF3 + W_prior (docs/DESIGN.md)."""
    model = UF3Model(_checked_spec(spec), leg_capacity)

    def features(state):
        volume = _volume(state)
        constant = _prior_born_stress(prior_energy, state) - _kinetic(state, kT, masses) / volume
        return {"constant": constant, "linear": -model.virial_features(state) / volume}
    return features


class SharedStrainSums:
    """The strain sums of one trajectory, computed once for every target that reads them (the stress and
    the stiffness targets would otherwise run the same kernels on the same frames).

    Called with (frames, box), it returns {"virial": (S, n_free, 3, 3), "born": (S, n_free, 21) or None,
    "prior_virial": (S, 3, 3)} (``trajectory_strain_sums`` and the prior's Numba virial, kJ/mol per unit
    coefficient and kJ/mol). It keeps the last trajectory's result, recognised by the frames array itself
    (the trainer hands every target the same array) and the box; ``born``: whether to compute the Born
    sums too (give True when a stiffness target shares it).
    """

    def __init__(self, spec, prior_terms=(), born=True):
        self.spec, self.prior_terms, self.born = _checked_spec(spec), tuple(prior_terms or ()), born
        self._frames, self._box, self._sums = None, None, None

    def __call__(self, frames, box):
        box = np.asarray(box, np.float64)
        if frames is not self._frames or not np.array_equal(box, self._box):
            virial, born = trajectory_strain_sums(self.spec, frames, box, born=self.born)
            prior_virial = _prior_energies_and_virials(self.prior_terms, frames, box)[1]
            self._frames, self._box = frames, box
            self._sums = {"virial": virial, "born": born, "prior_virial": prior_virial}
        return self._sums


def _stress_trajectory_features(strain_sums, kT, masses):
    """The compiled twin of `_stress_features` for a whole trajectory: sigma = -(K + W_prior) / V - theta .
    virial / V (a `SharedStrainSums`)."""
    def trajectory_features(frames, box, velocities):
        volume, sums = float(np.prod(box)), strain_sums(frames, box)
        return {"constant": -(_kinetic_tensors(frames, velocities, masses, kT) + sums["prior_virial"]) / volume,
                "linear": -sums["virial"] / volume}
    return trajectory_features


def _dot(params, linear):
    import jax.numpy as jnp
    return jnp.tensordot(params, linear, axes=1)


def stress_target(name, target, spec, prior_energy=None, kT=None, masses=None, gamma=1.0, cutoff=None,
                  leg_capacity=None, prior_terms=None, strain_sums=None):
    """Target of the (3, 3) stress tensor (kJ/mol/nm^3) from per-state virial features.

    Per stored state: sigma = c + theta . S with c (3, 3) and S (n_free, 3, 3) computed once per
    trajectory (the prior's Born stress and the kinetic tensor, sum m v v with masses and recorded
    velocities, else N kT I); per update only the dot product. Same convention as
    ``difftre.observables.stress_tensor``.

    prior_terms: the prior's Numba terms (twins of prior_energy); given (or without a prior), the
    features of a whole trajectory come from the compiled kernels (``trajectory_strain_sums`` and the
    prior's virial). strain_sums: a `SharedStrainSums` of spec and prior_terms that other targets share
    (default: its own).
    """
    from difftre.trainer import Target
    features = _stress_features(spec, prior_energy, kT, masses, leg_capacity)
    strain_sums = SharedStrainSums(spec, prior_terms, born=False) if strain_sums is None else strain_sums
    compiled = _compiled(_stress_trajectory_features(strain_sums, kT, masses), prior_energy, prior_terms)
    return Target(name, np.asarray(target), gamma, observable=lambda p, f: f["constant"] + _dot(p, f["linear"]),
                  features=features, cutoff=_cutoff_for(spec, cutoff), trajectory_features=compiled)


def pressure_target(name, target, spec, prior_energy=None, kT=None, masses=None, gamma=1.0, cutoff=None,
                    leg_capacity=None, prior_terms=None):
    """Target of the pressure P = -tr(sigma)/3 (kJ/mol/nm^3) from per-state virial features: a scalar
    and an (n_free,) vector per state (``difftre.observables.pressure``'s convention).

    prior_terms: the prior's Numba terms (twins of prior_energy); given (or without a prior), the
    features of a whole trajectory come from the compiled kernels (``trajectory_basis_sums`` and the
    prior's virial), P = (tr K + tr W_prior - theta . strain) / (3 V)."""
    from difftre.trainer import Target
    import jax
    import jax.numpy as jnp
    from difftre.models.state import deformed
    model = UF3Model(_checked_spec(spec), leg_capacity)

    def features(state):
        # only tr W enters: one forward-mode pass along the isotropic strain x -> (1 + s) x, where
        # tr W = -dU/ds, instead of the nine of the full virial features (9x cheaper per state)
        volume, dtype = _volume(state), state.positions.dtype
        isotropic = lambda s: model.features(deformed(state, (1 + s) * jnp.eye(3, dtype=dtype)), dtype)
        d_phi = jax.jvp(isotropic, (jnp.zeros((), dtype),), (jnp.ones((), dtype),))[1]
        constant = _prior_born_stress(prior_energy, state) - _kinetic(state, kT, masses) / volume
        return {"constant": -jnp.trace(constant) / 3.0, "linear": -d_phi / (3.0 * volume)}

    def trajectory_features(frames, box, velocities):
        volume = float(np.prod(box))
        prior_virial = _prior_energies_and_virials(prior_terms or (), frames, box)[1]
        kinetic_and_virial = np.trace(_kinetic_tensors(frames, velocities, masses, kT) + prior_virial, axis1=1, axis2=2)
        return {"constant": kinetic_and_virial / (3.0 * volume),
                "linear": -trajectory_basis_sums(spec, frames, box)[1] / (3.0 * volume)}

    return Target(name, np.asarray(target), gamma, observable=lambda p, f: f["constant"] + f["linear"] @ p,
                  features=features, cutoff=_cutoff_for(spec, cutoff),
                  trajectory_features=_compiled(trajectory_features, prior_energy, prior_terms))


VOIGT = manybody.VOIGT_PAIRS
_VOIGT_INDEX = np.array([[VOIGT.index((min(a, b), max(a, b))) for b in range(3)] for a in range(3)])
"""(3, 3): the Voigt index of each component (a, b) of a symmetric tensor."""
_UPPER = tuple((a, b) for a in range(6) for b in range(a, 6))
"""The 21 independent components (I <= J) of a Voigt-symmetric stiffness, as pairs of VOIGT indices."""


def _to_voigt21(c):
    """(..., 3, 3, 3, 3) -> (..., 21): C[VOIGT[I] + VOIGT[J]] for I <= J."""
    import jax.numpy as jnp
    return jnp.stack([c[..., VOIGT[a][0], VOIGT[a][1], VOIGT[b][0], VOIGT[b][1]] for a, b in _UPPER], axis=-1)


def _from_voigt21(v):
    """(21,) -> (3, 3, 3, 3) with the minor and major symmetries."""
    import jax.numpy as jnp
    index = np.zeros((3, 3, 3, 3), np.int64)
    voigt = {pair: k for k, (i, j) in enumerate(VOIGT) for pair in ((i, j), (j, i))}
    for i in range(3):
        for j in range(3):
            for k in range(3):
                for m in range(3):
                    a, b = sorted((voigt[(i, j)], voigt[(k, m)]))
                    index[i, j, k, m] = _UPPER.index((a, b))
    return jnp.asarray(v)[index]


def stiffness_target(name, target, spec, kT, n_particles, box, prior_energy=None, gamma=1.0, cutoff=None,
                     leg_capacity=None, centre=None, prior_terms=None, strain_sums=None):
    """Target of the isothermal stiffness C (3, 3, 3, 3) kJ/mol/nm^3 by the stress-fluctuation formula,
    C = <C_B> - V/kT Cov(sigma_B) + N kT / V (d_ik d_jl + d_il d_jk)  (``difftre.observables.elastic``),
    from per-state Born features linear in theta:

      sigma_B = s + theta . S   (3, 3) and (n_free, 3, 3): (1/V) dU/deps at eps = 0
      C_B     = b + theta . B   (21,) and (n_free, 21): (1/V) d2U/deps deps, the 21 Voigt components

    computed once per trajectory (``UF3Model.virial_features`` / ``born_features`` and the prior's
    Born terms). Per update: sigma_B of each state, its centred product, the weighted averages
    (float64) and ``combine`` = the formula. The covariance is formed from sigma_B - centre, with
    ``centre`` (3, 3) default N kT / V I, the Born stress of a state at zero pressure, so the
    products stay of the size of the fluctuations (a constant shift leaves the covariance exact).
    Give ``target`` as (3, 3, 3, 3) kJ/mol/nm^3 (see ``difftre.observables.elastic.cubic_constants``
    to reduce it; wrap ``combine`` for other forms).

    prior_terms: the prior's Numba terms (twins of prior_energy; each needs a compiled Born kernel, so far
    ``md.stillinger_weber``); given (or without a prior), the features of a whole trajectory come from the
    compiled kernels (``trajectory_strain_sums``, the prior's virial and Born kernels). strain_sums: a
    `SharedStrainSums` of spec and prior_terms with born=True that a stress target shares (default: its own).
    """
    from difftre.trainer import Target
    import jax.numpy as jnp
    from difftre.observables.elastic import born_terms, fluctuation_stiffness
    model = UF3Model(_checked_spec(spec), leg_capacity)
    volume = float(np.prod(box))
    centre = (n_particles * kT / volume * np.eye(3)) if centre is None else np.asarray(centre, np.float64)

    def features(state):
        v = _volume(state)
        if prior_energy is None:
            s0 = jnp.zeros((3, 3), state.positions.dtype)
            b0 = jnp.zeros(21, state.positions.dtype)
        else:
            terms = born_terms(prior_energy, None, state)
            s0, b0 = terms["stress"], _to_voigt21(terms["stiffness"])
        return {"stress": s0 - jnp.asarray(centre, s0.dtype), "stress_linear": -model.virial_features(state) / v,
                "born": b0, "born_linear": _to_voigt21(model.born_features(state)) / v}

    for term in prior_terms or ():   # a prior term without a compiled Born kernel is refused here, not in training
        _born_kernel(term)
    strain_sums = SharedStrainSums(spec, prior_terms) if strain_sums is None else strain_sums
    if not strain_sums.born:
        raise ValueError(f"target {name!r}: its strain_sums must compute the Born sums (born=True)")

    def trajectory_features(frames, box, velocities):
        v, sums = float(np.prod(box)), strain_sums(frames, box)
        return {"stress": -sums["prior_virial"] / v - centre, "stress_linear": -sums["virial"] / v,
                "born": _prior_born(prior_terms or (), frames, box) / v, "born_linear": sums["born"] / v}

    def observable(params, f):
        stress = f["stress"] + jnp.tensordot(params, f["stress_linear"], axes=1)
        return {"stress": stress, "stress_product": jnp.einsum("ij,kl->ijkl", stress, stress),
                "stiffness": f["born"] + params @ f["born_linear"]}

    def combine(averages):
        averages = dict(averages, stiffness=_from_voigt21(averages["stiffness"]))
        return fluctuation_stiffness(averages, jnp.asarray(box), kT, n_particles)

    return Target(name, np.asarray(target), gamma, observable=observable, features=features,
                  cutoff=_cutoff_for(spec, cutoff), combine=combine,
                  trajectory_features=_compiled(trajectory_features, prior_energy, prior_terms))


# ----------------------------------------------------------------------------- coefficient files

_SPEC_FIELDS = ("pair_cutoff", "leg_cutoff", "n_pair", "n_leg", "n_jk", "pair_r_min", "leg_r_min", "jk_r_min",
                "jk_cutoff", "n_types")


def save_coefficients(path, spec, theta):
    """Write theta (n_free,) kJ/mol with its spec to ``path`` (.npz: one entry per UF3Spec field and
    ``theta``). Returns the path numpy wrote."""
    spec = _checked_spec(spec)
    theta = np.asarray(theta, np.float64)
    if theta.shape != (spec.n_free,):
        raise ValueError(f"theta must have shape ({spec.n_free},) for {spec}, got {theta.shape}")
    path = str(path)
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez(path, theta=theta, format="difftre-uf3", version=1,
             **{name: getattr(spec, name) for name in _SPEC_FIELDS})
    return path


def load_coefficients(path, spec=None):
    """(spec, theta) from a file written by `save_coefficients`.

    Raises ValueError naming the field: a missing or malformed spec field, a theta of the wrong shape
    for the file's spec, non-finite coefficients, or (when ``spec`` is given) a spec field of the file
    that differs from the expected one.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a UF3 coefficient file ({error})") from error
    with data:
        missing = [name for name in ("theta",) + _SPEC_FIELDS[:5] if name not in data.files]
        if missing:
            raise ValueError(f"{path}: field {missing[0]!r} missing (a UF3 coefficient file holds theta and "
                             f"the UF3Spec fields {', '.join(_SPEC_FIELDS)})")
        fields = {}
        for name in _SPEC_FIELDS:
            if name not in data.files:
                continue
            value = data[name]
            if value.shape != () or not np.issubdtype(value.dtype, np.number):
                raise ValueError(f"{path}: field {name!r} must be a number, got {value.dtype} of shape {value.shape}")
            fields[name] = int(value) if name.startswith("n_") else float(value)
        try:
            file_spec = UF3Spec(**fields)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        theta = np.asarray(data["theta"])
    if theta.shape != (file_spec.n_free,):
        raise ValueError(f"{path}: field 'theta' has shape {theta.shape}, but the file's spec needs "
                         f"({file_spec.n_free},) = n_pair + n_leg (n_leg + 1) / 2 n_jk")
    if not np.issubdtype(theta.dtype, np.floating) or not np.all(np.isfinite(theta)):
        raise ValueError(f"{path}: field 'theta' must hold finite floats")
    if spec is not None:
        spec = _checked_spec(spec)
        for name in _SPEC_FIELDS:
            if getattr(spec, name) != getattr(file_spec, name):
                raise ValueError(f"{path}: field {name!r} is {getattr(file_spec, name)!r}, expected "
                                 f"{getattr(spec, name)!r}")
    return file_spec, theta.astype(np.float64)
