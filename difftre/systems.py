"""Starting configurations, the double-well toy, and the temperature and pressure of a trajectory.

Lattices fill an orthorhombic (here cubic) box anchored at the origin; positions
and box are in the caller's length unit (nm, or sigma in reduced LJ units).
Velocities, temperatures and pressures follow `difftre.md`: nm/ps, u, kJ/mol
(or reduced units, consistently). A temperature is returned as kB T in energy
units (kJ/mol, or kT* in reduced units); divide by `difftre.md.BOLTZMANN` for
kelvin.

    positions, box, _ = lattice_start(500, density=0.8442)          # LJ liquid, reduced units
    velocities = maxwell_boltzmann_velocities(np.ones(500), kT=1.0, seed=0)
"""
import numpy as np

# sites of one cubic cell in cell units, shifted by half their spacing so that none lies on the box faces
_FCC = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
FCC_BASIS = _FCC + 0.25
DIAMOND_BASIS = np.concatenate([_FCC, _FCC + 0.25]) + 0.125
SIMPLE_CUBIC_BASIS = np.full((1, 3), 0.5)
BAR_PER_KJ_MOL_NM3 = 16.6054     # 1 kJ/mol/nm^3 in bar


def _cubic_sites(basis, n_cells):
    """Fractional coordinates in [0, 1) of the sites of n_cells^3 cubic cells with the given basis."""
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return ((cells + basis[None]) / n_cells).reshape(-1, 3)


def fcc_lattice(n_cells, lattice_constant):
    """Face-centred cubic crystal: positions (4 n_cells^3, 3) and the cubic box (3,)."""
    length = lattice_constant * n_cells
    return _cubic_sites(FCC_BASIS, n_cells) * length, np.full(3, length)


def diamond_lattice(n_cells, lattice_constant):
    """Diamond crystal (silicon: lattice_constant 0.5431 nm): positions (8 n_cells^3, 3) and the cubic box (3,)."""
    length = lattice_constant * n_cells
    return _cubic_sites(DIAMOND_BASIS, n_cells) * length, np.full(3, length)


def rotated_110_lattice(basis, cells, lattice_constant):
    """A cubic crystal oriented x = [110], y = [-110], z = [001] in an orthorhombic box.

    basis: the cubic cell's sites in cell units (``FCC_BASIS``, ``DIAMOND_BASIS``); the rotated
    cell, a/sqrt2 x a/sqrt2 x a, holds half of them (fcc 2, diamond 4): one at its origin, then all
    shifted by half their smallest spacing along each axis so that none lies on a box face.
    cells: (3,) rotated cells per axis. Returns positions (N, 3) and the box (3,), in the unit of
    lattice_constant.
    """
    b = np.asarray(basis, np.float64)
    fractional = np.stack([b[:, 0] + b[:, 1], b[:, 1] - b[:, 0], b[:, 2]], axis=-1)   # in rotated cells
    sites = np.unique(np.round(fractional - fractional[0], 9) % 1.0, axis=0)   # the first site at the origin
    for a in range(3):
        levels = np.unique(sites[:, a])
        sites[:, a] += 0.5 * np.diff(np.append(levels, 1.0)).min()
    cells = np.asarray(cells)
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in cells], indexing="ij"), -1).reshape(-1, 1, 3)
    cell = lattice_constant * np.array([np.sqrt(0.5), np.sqrt(0.5), 1.0])
    return ((grid + sites[None]) * cell).reshape(-1, 3), cells * cell


def lattice_start(n, density):
    """N particles at number density `density` (particles per volume) in a cubic box, on a lattice.

    fcc when N = 4 k^3, simple cubic when N = k^3, otherwise the smaller of the
    two lattices with at least N sites, N of them taken evenly spread. The box
    edge is (N / density)^(1/3), so the density is exact. Returns positions
    (N, 3), box (3,) and a description of the lattice.
    """
    if n < 1 or not density > 0:
        raise ValueError(f"need n >= 1 and density > 0, got n={n}, density={density}")
    n_fcc = int(np.ceil((n / 4) ** (1 / 3) - 1e-9))
    n_sc = int(np.ceil(n ** (1 / 3) - 1e-9))
    if 4 * n_fcc ** 3 <= n_sc ** 3:
        sites, name = _cubic_sites(FCC_BASIS, n_fcc), f"fcc {n_fcc}x{n_fcc}x{n_fcc} cells"
    else:
        sites, name = _cubic_sites(SIMPLE_CUBIC_BASIS, n_sc), f"simple cubic {n_sc}x{n_sc}x{n_sc}"
    if sites.shape[0] > n:
        name += f", {n} of {sites.shape[0]} sites evenly spread"
        sites = sites[np.round(np.linspace(0, sites.shape[0] - 1, n)).astype(int)]
    length = (n / density) ** (1 / 3)
    return sites * length, np.full(3, length), name


def maxwell_boltzmann_velocities(masses, kT, seed, dim=3):
    """Velocities (N, dim) drawn at kT (energy units) for masses (N,), with zero total momentum."""
    masses = np.asarray(masses, np.float64)
    velocities = np.random.default_rng(seed).normal(size=(masses.shape[0], dim)) * np.sqrt(kT / masses)[:, None]
    return velocities - (masses @ velocities) / masses.sum()


def temperature(velocities, masses, dof):
    """Kinetic temperature kB T = sum_i m_i |v_i|^2 / dof (energy units) of velocities (..., N, dim).

    dof: degrees of freedom (`MDState.dof`: dim N, less dim when the total momentum
    is conserved). Returns one value per leading index (per frame of a trajectory).
    """
    velocities = np.asarray(velocities, np.float64)
    masses = np.broadcast_to(np.asarray(masses, np.float64), velocities.shape[-2:-1])
    return np.einsum("i,...ia,...ia->...", masses, velocities, velocities) / dof


def pressure(trajectory):
    """Pressure P = (2 K + tr W) / (dim V) of each frame of a `difftre.md.Trajectory` (energy / volume:
    kJ/mol/nm^3, times BAR_PER_KJ_MOL_NM3 for bar; eps/sigma^3 in reduced LJ units).

    K is the kinetic and W the virial of each recorded frame (NaN for a JAX force
    term, whose virial the sampler does not compute).
    """
    box = np.asarray(trajectory.box, np.float64)
    trace = np.trace(np.asarray(trajectory.virial, np.float64), axis1=-2, axis2=-1)
    return (2.0 * np.asarray(trajectory.kinetic_energy, np.float64) + trace) / (box.size * np.prod(box))


def double_well_energy(x):
    """The paper's double well U_DW(x) = 2500 (x - 0.5)^6 - 10 (x - 0.55)^2 (kT; x in box lengths)."""
    return 2500.0 * (x - 0.5) ** 6 - 10.0 * (x - 0.55) ** 2


def double_well_density(grid, smoothing, kT=1.0, box_length=1.0):
    """Boltzmann density exp(-U_DW/kT)/Z on [0, L) at `grid`, convolved with a periodic Gaussian of width
    `smoothing` (the density observable's), by quadrature."""
    from scipy import integrate   # 0.6 s to import; only this function needs it
    boltzmann = lambda y: np.exp(-double_well_energy(y) / kT)
    z = integrate.quad(boltzmann, 0.0, box_length, limit=200)[0]

    def smoothed(x):
        kernel = lambda y: boltzmann(y) * np.exp(-0.5 * (((x - y + box_length / 2) % box_length - box_length / 2)
                                                          / smoothing) ** 2)
        lo, hi = max(0.0, x - 8 * smoothing), min(box_length, x + 8 * smoothing)
        value = integrate.quad(kernel, lo, hi, limit=200)[0] if hi > lo else 0.0
        return value / (z * smoothing * np.sqrt(2 * np.pi))
    return np.array([smoothed(x) for x in grid])
