"""DimeNet++ energy model (Gasteiger et al. 2020, "Fast and Uncertainty-Aware
Directional Message Passing for Non-Equilibrium Molecules") as used in DiffTRe.

Written in plain JAX, no neural-network library: the model is a pure function
``energy(params, state)`` (built by ``dimenet``) of a parameter pytree (nested
dicts of arrays, created by ``init_dimenet``) and a ``models.state.State``, so it
composes directly with jax.grad / jit / vmap, optax and the reweighting code.

Units: positions and box in nm, cut-off in nm, energy in kJ/mol (the network
output is taken as kJ/mol). Positions are unwrapped; edge vectors use the minimum
image of the orthorhombic box. The sparse graph (``models.graph.SparseGraph``) is
built inside the energy from the state's dense neighbour list at fixed capacities
(sized by ``models.graph.graph_capacities``); only edges with r < cutoff exist.

Architecture (defaults = DiffTRe paper, Table of docs/paper-setup.md section 6):
- radial basis e_n(d) = u(d/c) sqrt(2/c) sin(f_n d/c) / d, n = 1..6, trainable
  frequencies f_n initialised to n pi; envelope u(x) = 1 - 28 x^6 + 48 x^7 - 21 x^8
  (p = 6) for x < 1, else 0.
- spherical basis a_ln(d_kj, theta_kji) = u(d_kj/c) N_ln j_l(z_ln d_kj/c) Y_l^0(theta),
  l = 0..6, n = 1..6, z_ln the n-th root of j_l, N_ln = sqrt(2) / |j_{l+1}(z_ln)|;
  theta is the bond angle at j between j->i and j->k (as DiffTRe; the original
  DimeNet code uses pi - theta).
- embedding: type embedding (n_species x type_embed_size), message
  m_ji = swish(W [h_i, h_j, W_rbf e(d_ji)] + b).
- interaction block (x n_interactions): DimeNet++ directional message passing:
  messages m_kj projected down to int_embed_size, multiplied by the projected
  spherical basis (via basis_embed_size), summed over k into m_ji and projected
  up; residual layers n_res_before / n_res_after around the skip connection.
- output block (x n_interactions + 1): sum_j (W_rbf e(d_ji)) * m_ji into atom i,
  up-projection to out_embed_size, n_dense_out swish layers, linear to 1 output
  without bias. Energy = sum over output blocks and atoms.
About 1.2e5 parameters with the defaults.

Numerical safety: padded edges/triplets read safe dummy geometry and are masked
with ``jnp.where`` (the double-where trick) so they contribute exactly 0 and give
finite, zero gradients. The angle enters only through Y_l^0(theta) = polynomial in
cos(theta), and cos(theta) = a.b / (|a||b|) is computed directly: it is smooth for
all non-degenerate edges, including collinear triplets where theta itself (via
arccos, or atan2(|a x b|, a.b)) has a singular derivative (atan2 would need an extra
guard on |a x b| = 0). The spherical Bessel functions are evaluated in closed form
(upward recurrence from sin/cos) above a per-l threshold and by their power series
below it, which keeps float32 accurate at small arguments (no sympy).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, special

from .geometry import deform, minimum_image, state_arrays
from .graph import graph_from_neighbors
from .precision import check_dtype, params_dtype

DIMENET_DEFAULTS = dict(
    embed_size=32,         # edge message size
    out_embed_size=64,     # output-block width
    int_embed_size=16,     # interaction (angle) embedding
    basis_embed_size=8,    # basis embedding
    type_embed_size=16,    # species embedding (embed_size // 2 as in DiffTRe)
    n_interactions=4,
    n_res_before=1,
    n_res_after=2,
    n_dense_out=3,
    n_radial=6,
    n_spherical=7,
    n_species=1,
    init_scale=1.0,        # weight variance init_scale / (fan_in + fan_out) (DiffTRe: 1)
)


# ----------------------------------------------------------------------------- basis (setup in numpy)

@functools.lru_cache(maxsize=None)
def spherical_bessel_roots(n_spherical, n_radial):
    """(n_spherical, n_radial) array: z_ln, the n-th positive root of j_l (roots interlace)."""
    roots = np.zeros((n_spherical, n_radial))
    brackets = np.pi * np.arange(1, n_radial + n_spherical)   # roots of j_0
    roots[0] = brackets[:n_radial]
    for l in range(1, n_spherical):
        brackets = np.array([optimize.brentq(lambda x: special.spherical_jn(l, x), a, b, xtol=1e-15)
                             for a, b in zip(brackets[:-1], brackets[1:])])
        roots[l] = brackets[:n_radial]
    return roots


@functools.lru_cache(maxsize=None)
def _sbf_constants(n_spherical, n_radial):
    """Roots z_ln and radial normalisation N_ln = sqrt(2)/|j_{l+1}(z_ln)|."""
    roots = spherical_bessel_roots(n_spherical, n_radial)
    ls = np.arange(n_spherical)[:, None]
    return roots, np.sqrt(2.0) / np.abs(special.spherical_jn(ls + 1, roots))


def _series_threshold(l):
    """Below this argument j_l uses its power series (upward recurrence loses ~1e-5 in float32)."""
    return max(0.5, 0.6 * l)


def spherical_jn(l, x, n_terms=12):
    """Spherical Bessel function j_l(x) for integer l >= 0, elementwise, x >= 0.

    Closed form by upward recurrence j_{m+1} = (2m+1)/x j_m - j_{m-1} from
    j_0 = sin x / x, j_1 = sin x / x^2 - cos x / x for x >= threshold(l), power series
    j_l = x^l sum_k (-x^2/2)^k / (k! (2l+2k+1)!!) below it (double-where safe).
    """
    x0 = _series_threshold(l)
    small = x < x0
    xb = jnp.where(small, x0, x)
    j_prev, j = jnp.sin(xb) / xb, jnp.sin(xb) / xb ** 2 - jnp.cos(xb) / xb
    if l == 0:
        j = j_prev
    for m in range(1, l):
        j_prev, j = j, (2 * m + 1) / xb * j - j_prev
    xs = jnp.where(small, x, 0.0)
    term = xs ** l / float(special.factorial2(2 * l + 1))
    series = term
    for k in range(1, n_terms):
        term = term * (-0.5 * xs * xs) / (k * (2 * l + 2 * k + 1))
        series = series + term
    return jnp.where(small, series, j)


def _legendre(l_max, t):
    """[P_0(t), ..., P_lmax(t)] by Bonnet's recurrence, stacked on the last axis."""
    p = [jnp.ones_like(t), t]
    for l in range(1, l_max):
        p.append(((2 * l + 1) * t * p[l] - l * p[l - 1]) / (l + 1))
    return jnp.stack(p[:l_max + 1], axis=-1)


def envelope(x, p=6):
    """Smooth cut-off u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), 0 for x >= 1."""
    u = 1 - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return jnp.where(x < 1, u, 0.0)


def radial_basis(d, frequencies, cutoff, p=6):
    """(E, n_radial) Bessel basis u(d/c) sqrt(2/c) sin(f_n d/c) / d; d in nm, d > 0."""
    x = (d / cutoff)[:, None]
    return envelope(x, p) * jnp.sqrt(2.0 / cutoff) * jnp.sin(frequencies * x) / d[:, None]


def spherical_radial_basis(d, cutoff, n_spherical, n_radial, p=6):
    """(E, n_spherical * n_radial) radial part u(d/c) N_ln j_l(z_ln d/c), index l * n_radial + n.

    The normalisation is applied as a product with the diagonal matrix diag(N_ln):
    the matmul output is not fused into the consumer, which on CPU stops XLA from
    fusing the whole Bessel evaluation into the later per-triplet gather (it would
    recompute it ~deg times per edge, 5x slower).
    """
    roots, norms = (c.astype(d.dtype) for c in _sbf_constants(n_spherical, n_radial))
    x = (d / cutoff)[:, None]
    jl = jnp.concatenate([spherical_jn(l, roots[l] * x) for l in range(n_spherical)], axis=1)
    return (envelope(x, p) * jl) @ jnp.diag(norms.ravel())


def angular_basis(cos_theta, n_spherical):
    """(T, n_spherical) Y_l^0(theta) = sqrt((2l+1)/4pi) P_l(cos theta)."""
    scale = np.sqrt((2 * np.arange(n_spherical) + 1) / (4 * np.pi)).astype(cos_theta.dtype)
    return scale * _legendre(n_spherical - 1, cos_theta)


# ----------------------------------------------------------------------------- parameters

def _param_spec(h):
    """The architecture as a nested dict of (initialiser, shape) leaves.

    Interaction and output blocks (and the layers inside them) are stacked along
    leading axes, which are batch axes for the initialisers and scanned/looped over
    in the energy.
    """
    e, o, i, b, t = (h[k] for k in ("embed_size", "out_embed_size", "int_embed_size",
                                    "basis_embed_size", "type_embed_size"))
    r, s, nb = h["n_radial"], h["n_spherical"], h["n_interactions"]

    def w(*shape):
        return ("weight", shape)

    def dense(*lead, fan_in, fan_out):
        return {"w": w(*lead, fan_in, fan_out), "b": ("zeros", (*lead, fan_out))}

    def residual(n):
        return {"d1": dense(nb, n, fan_in=e, fan_out=e), "d2": dense(nb, n, fan_in=e, fan_out=e)}

    return {
        "rbf_frequencies": ("frequencies", (r,)),
        "embedding": {"species": ("uniform", (h["n_species"], t)), "rbf": w(r, e),
                      "edge": dense(fan_in=2 * t + e, fan_out=e)},
        "interactions": {
            "rbf1": w(nb, r, b), "rbf2": w(nb, b, e), "sbf1": w(nb, s * r, b), "sbf2": w(nb, b, i),
            "kj": dense(nb, fan_in=e, fan_out=e), "ji": dense(nb, fan_in=e, fan_out=e),
            "down": w(nb, e, i), "up": w(nb, i, e),
            "before": residual(h["n_res_before"]), "skip": dense(nb, fan_in=e, fan_out=e),
            "after": residual(h["n_res_after"]),
        },
        "outputs": {"rbf": w(nb + 1, r, e), "up": w(nb + 1, e, o),
                    "dense": dense(nb + 1, h["n_dense_out"], fan_in=o, fan_out=o),
                    "final": w(nb + 1, o, 1)},
    }


_TRUNC_STD = 0.87962566103423978   # std of a unit normal truncated to [-2, 2]


def _init_leaf(kind, shape, normal, uniform, scale):
    """Numpy value of one parameter from pre-drawn unit truncated-normal / uniform samples."""
    if kind == "weight":   # variance scale / (fan_in + fan_out); scale 2 is Glorot
        return normal * np.sqrt(scale / (shape[-2] + shape[-1])) / _TRUNC_STD
    if kind == "uniform":  # species embedding, unit variance
        return uniform * math.sqrt(3)
    if kind == "frequencies":
        return np.pi * np.arange(1, shape[0] + 1)
    return np.zeros(shape)


def init_dimenet(key, dtype=np.float32, **hyper):
    """Random DimeNet++ parameters (pytree of arrays of ``dtype``).

    Args:
      key: jax.random key.
      dtype: float32 or float64 (float64 needs jax_enable_x64); this is the
        precision the energy runs in.
      **hyper: any of ``DIMENET_DEFAULTS`` (widths, block counts, basis sizes,
        n_species). ``cutoff`` and ``envelope_p`` are accepted and ignored here
        (they are arguments of ``dimenet``) so one dict can feed both.

    Weights: truncated normal of variance init_scale / (fan_in + fan_out) (DiffTRe
    used DimeNet's scaled orthogonal init with scale 1, i.e. half the Glorot
    variance; the single truncated-normal draw, the same distribution as
    jax.nn.initializers.variance_scaling(init_scale / 2, "fan_avg",
    "truncated_normal"), keeps init fast: per-shape initialisers compile for
    seconds each), biases 0, species embedding U(-sqrt 3, sqrt 3), radial
    frequencies n pi. Interaction and output blocks are stacked along a
    leading axis.
    """
    unknown = set(hyper) - set(DIMENET_DEFAULTS) - {"cutoff", "envelope_p"}
    if unknown:
        raise TypeError(f"unknown DimeNet++ hyper-parameters {sorted(unknown)}")
    h = {**DIMENET_DEFAULTS, **{k: v for k, v in hyper.items() if k in DIMENET_DEFAULTS}}
    dtype = check_dtype(dtype)
    leaves, treedef = jax.tree_util.tree_flatten(_param_spec(h), is_leaf=lambda x: isinstance(x, tuple))
    sizes = [math.prod(shape) for _, shape in leaves]
    k_normal, k_uniform = jax.random.split(key)
    # one draw of each kind (one small compile), sliced per parameter on the host
    normal = np.asarray(jax.random.truncated_normal(k_normal, -2.0, 2.0, (sum(sizes),), dtype))
    uniform = np.asarray(jax.random.uniform(k_uniform, (sum(sizes),), dtype, -1.0, 1.0))
    offsets = np.cumsum([0] + sizes)
    values = [_init_leaf(kind, shape, normal[o:o + n].reshape(shape), uniform[o:o + n].reshape(shape),
                         h["init_scale"]) for (kind, shape), o, n in zip(leaves, offsets, sizes)]
    return treedef.unflatten([jnp.asarray(v, dtype) for v in values])


def param_count(params):
    """Total number of scalar parameters."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------- network

def _block(tree, b):
    """Parameters of block ``b`` from a pytree stacked along the leading axis."""
    return jax.tree_util.tree_map(lambda a: a[b], tree)


def _dense(p, x):
    return x @ p["w"] + p["b"]


def _residual_stack(p, x):
    """Residual layers x + swish(W2 swish(W1 x + b1) + b2), stacked on the leading axis."""
    for n in range(p["d1"]["w"].shape[0]):
        layer = _block(p, n)
        x = x + jax.nn.swish(_dense(layer["d2"], jax.nn.swish(_dense(layer["d1"], x))))
    return x


def _interaction(p, m, rbf, sbf_basis, graph):
    """One DimeNet++ interaction block: (E, embed) messages -> (E, embed).

    ``sbf_basis`` is this block's (T, basis_embed) projection sbf @ p["sbf1"]."""
    kj = jnp.where(graph.triplet_mask, graph.triplet_kj, 0)
    ji = jnp.where(graph.triplet_mask, graph.triplet_ji, m.shape[0])   # padded -> dropped
    x = jax.nn.swish(_dense(p["kj"], m)) * (rbf @ p["rbf1"] @ p["rbf2"])
    x = jax.nn.swish(x @ p["down"])[kj] * (sbf_basis @ p["sbf2"])             # (T, int)
    x = jax.ops.segment_sum(x, ji, num_segments=m.shape[0])                  # sum over k
    h = jax.nn.swish(_dense(p["ji"], m)) + jax.nn.swish(x @ p["up"])
    h = _residual_stack(p["before"], h)
    h = jax.nn.swish(_dense(p["skip"], h)) + m
    return _residual_stack(p["after"], h)


def _output(p, m, rbf, receivers, n_atoms):
    """One output block: (E, embed) messages -> (N,) per-atom energies."""
    x = jax.ops.segment_sum((rbf @ p["rbf"]) * m, receivers, num_segments=n_atoms)
    x = x @ p["up"]
    for n in range(p["dense"]["w"].shape[0]):
        x = jax.nn.swish(x @ p["dense"]["w"][n] + p["dense"]["b"][n])
    return (x @ p["final"])[:, 0]


def _edge_geometry(positions, box, graph, cutoff, deformation=None):
    """Masked edge vectors x_j - x_i (sender minus receiver, minimum image, optionally deformed) and
    lengths (nm).

    Padded edges get the dummy vector (c/2, 0, ...), so all lengths are > 0.
    """
    s = jnp.where(graph.edge_mask, graph.senders, 0)
    r = jnp.where(graph.edge_mask, graph.receivers, 0)
    dummy = jnp.zeros(positions.shape[1], positions.dtype).at[0].set(0.5 * cutoff)
    vec = jnp.where(graph.edge_mask[:, None], deform(minimum_image(positions[s] - positions[r], box), deformation),
                    dummy)
    return vec, jnp.sqrt(jnp.sum(vec * vec, axis=-1))


def _bases(params, positions, box, graph, cutoff, p, deformation=None):
    """Radial basis (E, n_radial) and per-block projected spherical basis (B, T, basis_embed).

    The (T, n_spherical * n_radial) spherical basis enters block b only through
    sbf @ sbf1[b], so all blocks' projections are one matmul.
    """
    n_radial = params["rbf_frequencies"].shape[0]
    n_spherical = params["interactions"]["sbf1"].shape[1] // n_radial
    vec, d = _edge_geometry(positions, box, graph, cutoff, deformation)
    rbf = radial_basis(d, params["rbf_frequencies"], cutoff, p)
    rbf = jnp.where(graph.edge_mask[:, None], rbf, 0.0)

    # bond angle at j between j->i (= -vec_ji) and j->k (= vec_kj)
    kj = jnp.where(graph.triplet_mask, graph.triplet_kj, 0)
    ji = jnp.where(graph.triplet_mask, graph.triplet_ji, 0)
    unit = vec / d[:, None]
    cos_theta = -jnp.sum(unit[ji] * unit[kj], axis=-1)
    radial = spherical_radial_basis(d, cutoff, n_spherical, n_radial, p)[kj]            # (T, l*n)
    angular = jnp.repeat(angular_basis(cos_theta, n_spherical), n_radial, axis=1)     # (T, l*n)
    sbf = jnp.where(graph.triplet_mask[:, None], radial * angular, 0.0)
    return rbf, jnp.einsum("ts,bsk->btk", sbf, params["interactions"]["sbf1"])


def _energy_of_graph(params, positions, box, graph, species, cutoff, envelope_p, deformation):
    """DimeNet++ energy (kJ/mol) on a built graph; arrays already in the parameters' dtype."""
    n_atoms = positions.shape[0]
    rbf, sbf_basis = _bases(params, positions, box, graph, cutoff, envelope_p, deformation)

    # embedding: m_ji from species of i (receiver), j (sender) and the radial basis
    emb = params["embedding"]
    h = emb["species"][species]
    s = jnp.where(graph.edge_mask, graph.senders, 0)
    r = jnp.where(graph.edge_mask, graph.receivers, 0)
    m = jax.nn.swish(_dense(emb["edge"], jnp.concatenate([h[r], h[s], rbf @ emb["rbf"]], axis=-1)))

    receivers = jnp.where(graph.edge_mask, graph.receivers, n_atoms)   # padded -> dropped
    per_atom = _output(_block(params["outputs"], 0), m, rbf, receivers, n_atoms)
    # a Python loop (unrolled): on CPU ~30% faster energy+forces than lax.scan, slower to compile
    for b in range(params["outputs"]["final"].shape[0] - 1):
        m = _interaction(_block(params["interactions"], b), m, rbf, sbf_basis[b], graph)
        per_atom = per_atom + _output(_block(params["outputs"], b + 1), m, rbf, receivers, n_atoms)
    return jnp.sum(per_atom)


def dimenet(cutoff, edge_capacity, triplet_capacity, *, species=None, envelope_p=6, **hyper):
    """The DimeNet++ model: ``energy(params, state)`` (kJ/mol, scalar of the parameters' dtype).

    The sparse graph is built inside the (jitted) energy from ``state.neighbors`` with
    ``graph.graph_from_neighbors`` at the fixed capacities given here. Size them on the host
    before compiling with ``graph.graph_capacities(states, cutoff)`` over the states to be
    evaluated (and again, regrowing, for each new trajectory).

    Overflow is never silent: when a state needs more edges or triplets than the
    capacities, the energy is NaN, and so are its gradients (forces, parameter gradients).

    Args:
      cutoff: model cut-off c (nm); ``state.neighbors`` must hold every pair closer than c.
      edge_capacity, triplet_capacity: static graph sizes E and T.
      species: optional (N,) int species indices (default all 0).
      envelope_p: envelope exponent p.
      **hyper: init-only hyper-parameters (``DIMENET_DEFAULTS`` keys) are accepted and
        ignored, widths and counts are read from ``params`` (so one dict feeds
        ``init_dimenet`` and this factory).

    The returned ``energy(params, state)`` takes params from ``init_dimenet`` (their dtype
    is the precision that runs; positions (N, dim) nm, box (dim,) nm and the deformation
    are converted to it) and a ``models.state.State`` with a full dense neighbour list. A
    ``state.deformation`` F deforms the edge vectors (the strain contract of
    ``models.state``); the graph is the undeformed one.
    """
    unknown = set(hyper) - set(DIMENET_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown DimeNet++ arguments {sorted(unknown)}")
    edge_capacity, triplet_capacity = int(edge_capacity), int(triplet_capacity)

    def energy(params, state):
        if state.neighbors is None:
            raise ValueError("DimeNet++ needs a State with neighbors (full dense list covering the cut-off)")
        dtype = params_dtype(params)
        positions, box, deformation = state_arrays(state, dtype)
        n_atoms = positions.shape[0]
        atom_species = jnp.zeros(n_atoms, jnp.int32) if species is None else jnp.asarray(species, jnp.int32)
        build = graph_from_neighbors(state.neighbors, positions, box, cutoff, edge_capacity, triplet_capacity)
        u = _energy_of_graph(params, positions, box, build.graph, atom_species, jnp.asarray(cutoff, dtype),
                             envelope_p, deformation)
        return u * jnp.where(build.overflowed, jnp.nan, 1.0).astype(dtype)   # NaN gradients too
    return energy
