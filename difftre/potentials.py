"""One record per potential: its Numba kernel, named parameters and JAX twin side by side.

A `PotentialRecord` says everything both sides share: the potential's one name
(``difftre.md.<name>`` builds the Numba force-field term, ``difftre.models.priors.<jax_name>``
the JAX energy ``energy(params, state)``), its named parameters (the leading
arguments of both factories, in this order) and keyword constants with their
defaults, the Numba kernel and how its flat params array is packed, and the
cut-off rule (the neighbour-list cut-off from the named parameters; None for
one-body terms). The factories below and the JAX-vs-Numba parity test
(tests/test_priors_jax_vs_numba.py) are driven by `RECORDS`.

Force-field terms: `PairTerm` (a Numba pair function ``(r2, params) -> (u, f_over_r)``,
see `difftre.kernels.pair`) and `SystemTerm` (a whole-system function
``(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy``, see
`difftre.kernels.manybody` and `difftre.kernels.external`). Units: nm, kJ/mol.
This module never imports JAX (`PotentialRecord.jax_energy` imports it when called).
"""
import dataclasses
from typing import Callable, Optional

import numpy as np

from difftre.kernels import external, manybody, pair
from difftre.kernels.spline import pack_spline_table


def positive(name, value):
    """float(value), or a ValueError naming `name` unless it is finite and positive."""
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and positive, got {value}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class PairTerm:
    """A pair potential: numba pair function (r2, params) -> (u, f_over_r), its params and cut-off (nm)."""
    function: Callable
    params: np.ndarray
    cutoff: float


@dataclasses.dataclass(frozen=True)
class SystemTerm:
    """A whole-system (many-body or external) numba function and its params.

    neighbor_cutoff > 0 asks for a full neighbour list covering that distance (nm);
    keep_alive holds whatever the function needs alive (a JAX callback of difftre.bridge).
    per_particle marks one-body terms (each particle's force depends on itself only).
    """
    function: Callable
    params: np.ndarray
    neighbor_cutoff: float = 0.0
    per_particle: bool = False
    keep_alive: object = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class PotentialRecord:
    """One potential on both sides (see the module doc).

    pack(named) -> the kernel's params array and cutoff(named) -> nm take the dict of
    named parameters and constants; `positive` lists the ones that must be > 0;
    jax_options are fixed keyword arguments of the JAX factory (e.g. shift=True).
    """
    name: str
    parameters: tuple
    kernel: Callable
    pack: Callable
    cutoff: Optional[Callable]
    positive: tuple
    constants: dict = dataclasses.field(default_factory=dict)
    jax_name: str = ""
    jax_options: dict = dataclasses.field(default_factory=dict)
    pair: bool = False

    def named(self, *args, **kwargs):
        """The named parameters and constants of one call (defaults filled in), positives checked."""
        if len(args) > len(self.parameters):
            raise TypeError(f"{self.name} takes {len(self.parameters)} positional parameters "
                            f"{self.parameters}, got {len(args)}")
        named = dict(zip(self.parameters, args))
        unknown = set(kwargs) - set(self.parameters) - set(self.constants)
        missing = [p for p in self.parameters if p not in named and p not in kwargs]
        if unknown or missing:
            raise TypeError(f"{self.name}: unknown parameters {sorted(unknown)}, missing {missing}")
        named.update(self.constants)
        named.update(kwargs)
        for name in self.positive:
            named[name] = positive(name, named[name])
        return named

    def numba_term(self, *args, **kwargs):
        """The force-field term (PairTerm or SystemTerm) of these parameters."""
        named = self.named(*args, **kwargs)
        params = np.asarray(self.pack(named), np.float64)
        if self.pair:
            return PairTerm(self.kernel, params, self.cutoff(named))
        if self.cutoff is None:
            return SystemTerm(self.kernel, params, per_particle=True)
        return SystemTerm(self.kernel, params, neighbor_cutoff=self.cutoff(named))

    def jax_factory(self):
        """difftre.models.priors.<jax_name> (imports JAX)."""
        from difftre.models import priors
        return getattr(priors, self.jax_name or self.name)

    def jax_energy(self, *args, dtype, **kwargs):
        """The JAX twin energy(params, state) of these parameters, in dtype."""
        return self.jax_factory()(*args, dtype=dtype, **self.jax_options, **kwargs)


RECORDS = {record.name: record for record in (
    PotentialRecord("lennard_jones", ("epsilon", "sigma", "cutoff"), pair.lennard_jones,
                    pack=lambda p: [p["epsilon"], p["sigma"]], cutoff=lambda p: p["cutoff"],
                    positive=("epsilon", "sigma", "cutoff"), pair=True),
    PotentialRecord("lennard_jones_shifted", ("epsilon", "sigma", "cutoff"), pair.lennard_jones_shifted,
                    pack=lambda p: [p["epsilon"], p["sigma"],
                                    pair.lennard_jones_shift(p["epsilon"], p["sigma"], p["cutoff"])],
                    cutoff=lambda p: p["cutoff"], positive=("epsilon", "sigma", "cutoff"),
                    jax_name="lennard_jones", jax_options=dict(shift=True), pair=True),
    PotentialRecord("repulsive", ("epsilon", "sigma", "cutoff"), pair.repulsive,
                    pack=lambda p: [p["epsilon"], p["sigma"], p["exponent"]], cutoff=lambda p: p["cutoff"],
                    positive=("epsilon", "sigma", "cutoff", "exponent"), constants=dict(exponent=12.0), pair=True),
    PotentialRecord("stillinger_weber", ("epsilon", "sigma"), manybody.stillinger_weber,
                    pack=lambda p: manybody.stillinger_weber_params(**p),
                    cutoff=lambda p: float(manybody.stillinger_weber_cutoff(manybody.stillinger_weber_params(**p))),
                    positive=("epsilon", "sigma", "a"), constants=dict(manybody.SW_SILICON)),
    PotentialRecord("harmonic", ("k", "center"), external.harmonic,
                    pack=lambda p: np.concatenate([[p["k"]], np.atleast_1d(p["center"])]), cutoff=None,
                    positive=("k",)),
)}


def lennard_jones(epsilon, sigma, cutoff, shift=False):
    """Lennard-Jones 4 epsilon [(sigma/r)^12 - (sigma/r)^6] (epsilon kJ/mol; sigma, cutoff nm), truncated at
    cutoff and, if asked, shifted to zero there."""
    return RECORDS["lennard_jones_shifted" if shift else "lennard_jones"].numba_term(epsilon, sigma, cutoff)


def repulsive(epsilon, sigma, cutoff, exponent=12.0):
    """epsilon (sigma/r)^exponent for r < cutoff (the coarse-grained water prior; epsilon kJ/mol, sigma nm)."""
    return RECORDS["repulsive"].numba_term(epsilon, sigma, cutoff, exponent=exponent)


def stillinger_weber(epsilon, sigma, **constants):
    """Stillinger-Weber (epsilon kJ/mol, sigma nm; silicon's constants A, B, p, q, a, lam, gamma, cos_theta0
    unless overridden); cut-off a * sigma."""
    return RECORDS["stillinger_weber"].numba_term(epsilon, sigma, **constants)


def harmonic(k, center):
    """External 0.5 k |x - center|^2 on wrapped coordinates (k in kJ/mol/nm^2, center nm, one per dimension)."""
    return RECORDS["harmonic"].numba_term(k, center)


def tabulated_pair(x0, h, coefficients):
    """Cubic spline pair table (the models' export format); the cut-off is its last knot."""
    coefficients = np.asarray(coefficients)
    return PairTerm(pair.tabulated, pack_spline_table(x0, h, coefficients), x0 + h * coefficients.shape[0])


def external_spline(x0, h, coefficients):
    """External 1-D cubic spline table on the wrapped coordinate."""
    return SystemTerm(external.spline_1d, pack_spline_table(x0, h, coefficients), per_particle=True)
