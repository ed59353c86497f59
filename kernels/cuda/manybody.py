"""Stillinger-Weber per-bond and per-triplet terms, for a per-atom (gather) evaluation.

The CPU kernel (`difftre.kernels.manybody.stillinger_weber`) is one loop over
all atoms that scatters forces and allocates scratch arrays; a GPU thread needs
the force on *its* atom, so it evaluates the same terms per bond and per
triplet. These are plain ``@kernel`` functions (CPU-callable too; the GPU gets
them through ``difftre.kernels.cuda.port``) with the expressions of the CPU
kernel, params packed as in ``stillinger_weber_params``:
[epsilon, sigma, A, B, p, q, a, lambda, gamma, cos_theta0].

NOTE for the CPU kernel's owners: the CPU loop can call these three functions
instead of spelling the formulas out, so that they live in one place.
"""
import numpy as np

from difftre.kernels.jit import kernel


@kernel(inline="always")
def sw_two_body(r, params):
    """(phi2(r), (dphi2/dr) / r) for r < a sigma: phi2 = A eps (B (s/r)^p - (s/r)^q) exp(s / (r - a s))."""
    eps, sig, A, B, p, q, a = params[0], params[1], params[2], params[3], params[4], params[5], params[6]
    inv_gap = 1.0 / (r - a * sig)
    sr = sig / r
    srp = sr ** p
    srq = sr ** q
    e2 = np.exp(sig * inv_gap)
    u = A * eps * (B * srp - srq) * e2
    du_dr = A * eps * e2 * ((-p * B * srp + q * srq) / r - (B * srp - srq) * sig * inv_gap * inv_gap)
    return u, du_dr / r


@kernel(inline="always")
def sw_bond_factor(r, params):
    """exp(gamma s / (r - a s)) of one bond and its derivative in r divided by r."""
    sig, a, gam = params[1], params[6], params[8]
    inv_gap = 1.0 / (r - a * sig)
    e = np.exp(gam * sig * inv_gap)
    return e, -gam * sig * inv_gap * inv_gap * e / r


@kernel(inline="always")
def sw_three_body(d1x, d1y, d1z, r1, e1, de1, d2x, d2y, d2z, r2, e2, de2, params):
    """phi3 of the bonds d1, d2 (vectors from the centre atom) and its gradients dU/dd1, dU/dd2.

    phi3 = lam eps (cos theta - cos0)^2 e1 e2 with e = sw_bond_factor(r)[0];
    returns (u, dU/dd1 (3 components), dU/dd2 (3 components)).
    """
    eps, lam, cos0 = params[0], params[7], params[9]
    dot = d1x * d2x + d1y * d2y + d1z * d2z
    inv_r1r2 = 1.0 / (r1 * r2)
    cos_t = dot * inv_r1r2
    delta = cos_t - cos0
    radial = e1 * e2
    u = lam * eps * delta * delta * radial
    ang = 2.0 * lam * eps * delta * radial   # dU/dcos
    rad1 = lam * eps * delta * delta * de1 * e2
    rad2 = lam * eps * delta * delta * e1 * de2
    c1 = cos_t / (r1 * r1)
    c2 = cos_t / (r2 * r2)
    g1x = ang * (d2x * inv_r1r2 - c1 * d1x) + rad1 * d1x
    g1y = ang * (d2y * inv_r1r2 - c1 * d1y) + rad1 * d1y
    g1z = ang * (d2z * inv_r1r2 - c1 * d1z) + rad1 * d1z
    g2x = ang * (d1x * inv_r1r2 - c2 * d2x) + rad2 * d2x
    g2y = ang * (d1y * inv_r1r2 - c2 * d2y) + rad2 * d2y
    g2z = ang * (d1z * inv_r1r2 - c2 * d2z) + rad2 * d2z
    return u, g1x, g1y, g1z, g2x, g2y, g2z
