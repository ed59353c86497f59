"""Plugging your own Numba kernels into the difftre sampler, without editing the library.

A pair potential is any njit function ``(r2, params) -> (u, f_over_r)``; a
whole-system (many-body or external) term is any njit function
``(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy`` that
adds its forces and virial (W = sum f (x) r, kJ/mol) and returns its energy.
"""
import numpy as np

from difftre import md
from difftre.kernels.jit import kernel


@kernel(inline="always")
def soft_sphere(r2, params):
    """Harmonic repulsion eps (1 - r/s)^2 for r < s; params = [eps, s]."""
    r = np.sqrt(r2)
    overlap = 1.0 - r / params[1]
    return params[0] * overlap * overlap, 2.0 * params[0] * overlap / (params[1] * r)


@kernel
def gravity_z(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """Uniform field along z: U = sum_i g z_i (unwrapped z); params = [g]."""
    energy = 0.0
    for i in range(positions.shape[0]):
        energy += params[0] * positions[i, 2]
        forces[i, 2] -= params[0]
        for b in range(3):
            virial[2, b] -= params[0] * positions[i, b]
    return energy


def user_force_field(eps=10.0, diameter=0.3, g=0.5):
    return md.ForceField([md.PairTerm(soft_sphere, np.array([eps, diameter]), diameter),
                          md.SystemTerm(gravity_z, np.array([g]))])


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    box = np.full(3, 3.0)
    sampler = md.Sampler(user_force_field(), md.Langevin(dt=0.002, kT=2.5, friction=1.0), skin=0.1)
    state = sampler.init_state(rng.uniform(0, 3.0, (500, 3)), box, masses=18.0, seed=1)
    trajectory, state = sampler.run(state, n_equilibration=500, n_frames=10, stride=50)
    print("mean potential energy (kJ/mol):", trajectory.potential_energy.mean())
