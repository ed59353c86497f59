"""Many-body potentials (Numba, 3-D): Stillinger-Weber.

System-term signature: ``fn(params, positions, box, nbr_idx, nbr_count, forces, virial) -> energy``
with a full neighbour list; the function adds its forces and its virial
W_ab = sum over bond vectors d of (-dU/dd_a) d_b (docs/DESIGN.md).
"""
import numpy as np
from difftre.kernels.jit import kernel

from difftre.kernels.space import minimum_image

SW_SILICON = dict(A=7.049556277, B=0.6022245584, p=4.0, q=0.0, a=1.8, lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0)


def stillinger_weber_params(epsilon, sigma, A=7.049556277, B=0.6022245584, p=4.0, q=0.0, a=1.8,
                            lam=21.0, gamma=1.2, cos_theta0=-1.0 / 3.0, dtype=np.float64):
    """Packed SW parameters (epsilon in kJ/mol, sigma in nm); the cut-off is a * sigma."""
    if epsilon <= 0 or sigma <= 0 or a <= 0:
        raise ValueError(f"Stillinger-Weber needs epsilon, sigma, a > 0, got {epsilon}, {sigma}, {a}")
    return np.array([epsilon, sigma, A, B, p, q, a, lam, gamma, cos_theta0], dtype=dtype)


@kernel
def stillinger_weber(params, positions, box, nbr_idx, nbr_count, forces, virial):
    """Stillinger-Weber energy: sum_{i<j} phi2(r_ij) + sum_i sum_{j<k} phi3(r_ij, r_ik, theta_jik).

    phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s));
    phi3 = lam eps (cos theta - cos0)^2 exp(gamma s / (r_ij - a s)) exp(gamma s / (r_ik - a s)).
    """
    eps, sig, A, B, p, q, a, lam, gam, cos0 = (params[0], params[1], params[2], params[3], params[4],
                                               params[5], params[6], params[7], params[8], params[9])
    rc = a * sig
    inv_box = 1.0 / box
    n = positions.shape[0]
    cap = nbr_idx.shape[1]
    # bond vectors d = r_j - r_i of i's neighbours inside the cut-off, with their radial factors
    bond = np.empty((cap, 3))
    bond_r = np.empty(cap)
    bond_exp = np.empty(cap)      # exp(gamma s / (r - a s))
    bond_dexp = np.empty(cap)     # d/dr of that, divided by r
    bond_j = np.empty(cap, np.int64)
    energy = 0.0
    for i in range(n):
        nb = 0
        for jj in range(nbr_count[i]):
            j = nbr_idx[i, jj]
            dx = minimum_image(positions[j, 0] - positions[i, 0], box[0], inv_box[0])
            dy = minimum_image(positions[j, 1] - positions[i, 1], box[1], inv_box[1])
            dz = minimum_image(positions[j, 2] - positions[i, 2], box[2], inv_box[2])
            r = np.sqrt(dx * dx + dy * dy + dz * dz)
            if r >= rc:
                continue
            inv_gap = 1.0 / (r - rc)
            e = np.exp(gam * sig * inv_gap)
            bond[nb, 0] = dx
            bond[nb, 1] = dy
            bond[nb, 2] = dz
            bond_r[nb] = r
            bond_exp[nb] = e
            bond_dexp[nb] = -gam * sig * inv_gap * inv_gap * e / r
            bond_j[nb] = j
            nb += 1
            if j > i:  # two-body term, once per pair
                sr = sig / r
                srp = sr ** p
                srq = sr ** q
                e2 = np.exp(sig * inv_gap)
                energy += A * eps * (B * srp - srq) * e2
                du_dr = A * eps * e2 * ((-p * B * srp + q * srq) / r - (B * srp - srq) * sig * inv_gap * inv_gap)
                # force on j is -du/dr d/r; on i the opposite
                g = du_dr / r
                forces[j, 0] -= g * dx
                forces[j, 1] -= g * dy
                forces[j, 2] -= g * dz
                forces[i, 0] += g * dx
                forces[i, 1] += g * dy
                forces[i, 2] += g * dz
                virial[0, 0] -= g * dx * dx
                virial[0, 1] -= g * dx * dy
                virial[0, 2] -= g * dx * dz
                virial[1, 0] -= g * dy * dx
                virial[1, 1] -= g * dy * dy
                virial[1, 2] -= g * dy * dz
                virial[2, 0] -= g * dz * dx
                virial[2, 1] -= g * dz * dy
                virial[2, 2] -= g * dz * dz
        for b1 in range(nb):
            r1 = bond_r[b1]
            for b2 in range(b1 + 1, nb):
                r2 = bond_r[b2]
                dot = bond[b1, 0] * bond[b2, 0] + bond[b1, 1] * bond[b2, 1] + bond[b1, 2] * bond[b2, 2]
                inv_r1r2 = 1.0 / (r1 * r2)
                cos_t = dot * inv_r1r2
                delta = cos_t - cos0
                radial = bond_exp[b1] * bond_exp[b2]
                energy += lam * eps * delta * delta * radial
                ang = 2.0 * lam * eps * delta * radial   # dU/dcos
                rad1 = lam * eps * delta * delta * bond_dexp[b1] * bond_exp[b2]
                rad2 = lam * eps * delta * delta * bond_exp[b1] * bond_dexp[b2]
                j = bond_j[b1]
                k = bond_j[b2]
                for c in range(3):
                    # dU/dd1 and dU/dd2; the force on j is -dU/dd1, on k -dU/dd2, on i their negative sum
                    g1 = ang * (bond[b2, c] * inv_r1r2 - cos_t * bond[b1, c] / (r1 * r1)) + rad1 * bond[b1, c]
                    g2 = ang * (bond[b1, c] * inv_r1r2 - cos_t * bond[b2, c] / (r2 * r2)) + rad2 * bond[b2, c]
                    forces[j, c] -= g1
                    forces[k, c] -= g2
                    forces[i, c] += g1 + g2
                    for d in range(3):
                        virial[c, d] -= g1 * bond[b1, d] + g2 * bond[b2, d]
    return energy
