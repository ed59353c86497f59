"""Integrators as (first_half, second_half) pairs around the force evaluation (Numba).

Both halves have the signature
``(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step)``
and update the arrays in place (positions nm, velocities nm/ps, forces kJ/mol/nm,
inv_masses 1/u, dt ps). One MD step is first_half, forces at the new positions,
second_half.

- Velocity Verlet (NVE): B A | B.
- Langevin BAOAB (Leimkuhler & Matthews, AMRX 2013): B A O A | B. Chosen because
  its configurational averages are second-order accurate with a small constant
  and exact for harmonic potentials at any stable step: DiffTRe reweights
  configurational observables. params = [kT, friction (1/ps), index of the first
  particle] (the last keys the random stream, so a chunk of a system draws what
  the whole system would).
- Nose-Hoover chain (Martyna, Tuckerman & Klein, Mol. Phys. 1996) with
  Suzuki-Yoshida order-3 factorisation: C B A | B C. params = [kT, dof, tau (ps),
  n_substeps]; thermostat = [xi_1..xi_M, v_xi_1..v_xi_M]; Q_1 = dof kT tau^2,
  Q_j = kT tau^2.
"""
import numpy as np
from difftre.kernels.jit import kernel

from difftre.kernels.random import normal4

_SY_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_SY_WEIGHTS = (_SY_W1, 1.0 - 2.0 * _SY_W1, _SY_W1)


@kernel(inline="always")
def kick(velocities, forces, inv_masses, time):
    """B: v += time * F / m."""
    for i in range(velocities.shape[0]):
        for a in range(velocities.shape[1]):
            velocities[i, a] += time * forces[i, a] * inv_masses[i]


@kernel(inline="always")
def drift(positions, velocities, time):
    """A: x += time * v."""
    for i in range(positions.shape[0]):
        for a in range(positions.shape[1]):
            positions[i, a] += time * velocities[i, a]


@kernel
def verlet_first_half(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step):
    kick(velocities, forces, inv_masses, 0.5 * dt)
    drift(positions, velocities, dt)


@kernel
def verlet_second_half(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step):
    kick(velocities, forces, inv_masses, 0.5 * dt)


@kernel
def baoab_first_half(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step):
    kT = params[0]
    c1 = np.exp(-params[1] * dt)
    noise = np.sqrt((1.0 - c1 * c1) * kT)
    kick(velocities, forces, inv_masses, 0.5 * dt)
    drift(positions, velocities, 0.5 * dt)
    # O step. One Philox call gives 4 normals: it serves 4 // dim particles (particle i uses
    # counter i // per_call, lanes (i % per_call) * dim + a); in 3-D one call per particle.
    n, dim = velocities.shape
    per_call = 4 // dim
    offset = int(params[2]) // per_call
    for first in range(0, n, per_call):
        z = normal4(seed, step, offset + first // per_call, 0)
        for p in range(min(per_call, n - first)):
            i = first + p
            scale = noise * np.sqrt(inv_masses[i])
            for a in range(dim):
                velocities[i, a] = c1 * velocities[i, a] + scale * z[p * dim + a]
    drift(positions, velocities, 0.5 * dt)


@kernel
def baoab_second_half(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step):
    kick(velocities, forces, inv_masses, 0.5 * dt)


@kernel
def twice_kinetic_energy(velocities, inv_masses):
    """sum_i m_i v_i^2 (kJ/mol)."""
    total = 0.0
    for i in range(velocities.shape[0]):
        v2 = 0.0
        for a in range(velocities.shape[1]):
            v2 += velocities[i, a] * velocities[i, a]
        total += v2 / inv_masses[i]
    return total


@kernel(inline="always")
def _chain_link_half_kick(v, j, ke2, dof, kT, q_first, q_rest, delta):
    """Advance thermostat velocity v[j] by delta/2 under its force, damped by v[j+1] (MTK splitting)."""
    if j == 0:
        g = (ke2 - dof * kT) / q_first
    else:
        g = ((q_first if j == 1 else q_rest) * v[j - 1] * v[j - 1] - kT) / q_rest
    if j == v.shape[0] - 1:
        v[j] += 0.5 * delta * g
    else:
        a = np.exp(-0.25 * delta * v[j + 1])
        v[j] = v[j] * a * a + 0.5 * delta * g * a


@kernel
def nose_hoover_chain_scale(ke2, dt, params, thermostat):
    """Propagate the chain for dt/2 given ke2 = sum m v^2; return the particle-velocity scale factor."""
    kT, dof, tau = params[0], params[1], params[2]
    n_sub = int(params[3])
    m = thermostat.shape[0] // 2
    xi = thermostat[:m]
    v = thermostat[m:]
    q_first = dof * kT * tau * tau
    q_rest = kT * tau * tau
    scale = 1.0
    for w in _SY_WEIGHTS:
        delta = w * 0.5 * dt / params[3]
        for _ in range(n_sub):
            for j in range(m - 1, -1, -1):          # top of the chain down
                _chain_link_half_kick(v, j, ke2 * scale * scale, dof, kT, q_first, q_rest, delta)
            scale *= np.exp(-delta * v[0])
            for j in range(m):
                xi[j] += delta * v[j]
            for j in range(m):                      # bottom of the chain up
                _chain_link_half_kick(v, j, ke2 * scale * scale, dof, kT, q_first, q_rest, delta)
    return scale


@kernel
def nose_hoover_chain_half_step(velocities, inv_masses, dt, params, thermostat):
    """Propagate the chain for dt/2 and scale the particle velocities (the C operator)."""
    scale = nose_hoover_chain_scale(twice_kinetic_energy(velocities, inv_masses), dt, params, thermostat)
    for i in range(velocities.shape[0]):
        for a in range(velocities.shape[1]):
            velocities[i, a] *= scale


@kernel
def nose_hoover_first_half(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step):
    nose_hoover_chain_half_step(velocities, inv_masses, dt, params, thermostat)
    kick(velocities, forces, inv_masses, 0.5 * dt)
    drift(positions, velocities, dt)


@kernel
def nose_hoover_second_half(positions, velocities, forces, inv_masses, dt, params, thermostat, seed, step):
    kick(velocities, forces, inv_masses, 0.5 * dt)
    nose_hoover_chain_half_step(velocities, inv_masses, dt, params, thermostat)


def nose_hoover_chain_energy(thermostat, params):
    """Energy of the chain (kJ/mol): sum Q_j v_j^2 / 2 + dof kT xi_1 + kT sum_{j>1} xi_j."""
    kT, dof, tau = params[0], params[1], params[2]
    m = thermostat.shape[0] // 2
    xi, v = thermostat[:m], thermostat[m:]
    q = np.full(m, kT * tau * tau)
    q[0] *= dof
    return float(0.5 * np.sum(q * v * v) + dof * kT * xi[0] + kT * np.sum(xi[1:]))
