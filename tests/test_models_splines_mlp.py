import jax

jax.config.update("jax_enable_x64", True)

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.interpolate import CubicSpline  # noqa: E402

from difftre.models.geometry import dense_neighbor_list  # noqa: E402
from difftre.models.mlp import init_mlp, mlp_apply, mlp_external_energy  # noqa: E402
from difftre.models.pair_spline import export_pair_table, init_pair_spline, pair_spline, pair_spline_grid  # noqa: E402
from difftre.models.precision import check_dtype  # noqa: E402
from difftre.models.spline import (SplineGrid, evaluate_spline, export_spline_table,  # noqa: E402
                                   external_spline, init_spline)
from difftre.models.state import State  # noqa: E402


def numpy_table(x, x0, h, c):
    k = np.clip(np.floor((x - x0) / h), 0, len(c) - 1).astype(int)
    t = x - (x0 + k * h)
    return c[k, 0] + c[k, 1] * t + c[k, 2] * t ** 2 + c[k, 3] * t ** 3


def central_fd(f, x, eps=1e-6):
    """Central differences of the scalar function f (numpy in, float out) at x."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        grad[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return grad


# ---------------------------------------------------------------- precision

def test_check_dtype_accepts_and_rejects():
    for d in (np.float32, "float32", jnp.float32):
        assert check_dtype(d) == np.float32
    assert check_dtype(np.float64) == np.float64 and check_dtype("float64") == np.float64
    for bad in (None, np.float16, np.int32, "complex64", "nonsense"):
        with pytest.raises(ValueError):
            check_dtype(bad)


def test_check_dtype_float64_without_x64_raises():
    code = ("import numpy, pytest\n"
            "from difftre.models.precision import check_dtype\n"
            "from difftre.models.spline import SplineGrid, init_spline\n"
            "import jax\n"
            "check_dtype(numpy.float32)\n"
            "for call in (lambda: check_dtype(numpy.float64),\n"
            "             lambda: init_spline(jax.random.key(0), SplineGrid(), 'float64')):\n"
            "    with pytest.raises(ValueError, match='jax_enable_x64 is off'):\n"
            "        call()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- 1-D spline

GRID = SplineGrid(0.0, 1.0, 50)


@pytest.fixture
def theta():
    return init_spline(jax.random.key(1), GRID, np.float64, scale=1.0)


def test_spline_interpolates_and_matches_scipy_natural(theta):
    knots = np.linspace(0.0, 1.0, 50)
    np.testing.assert_allclose(evaluate_spline(knots, theta, GRID), theta, atol=1e-12)
    x = np.linspace(-0.2, 1.2, 777)
    ref = CubicSpline(knots, np.asarray(theta), bc_type="natural")(x)  # extrapolates end cubics
    np.testing.assert_allclose(evaluate_spline(x, theta, GRID), ref, atol=1e-10)


def test_spline_is_c2_at_knots(theta):
    u = lambda x: evaluate_spline(x, theta, GRID)  # noqa: E731
    derivs = [u, jax.grad(u), jax.grad(jax.grad(u))]
    knots, d = np.linspace(0.0, 1.0, 50)[1:-1], 1e-13
    for f in derivs:
        left, right = jax.vmap(f)(knots - d), jax.vmap(f)(knots + d)
        np.testing.assert_allclose(left, right, atol=1e-10 * max(1.0, np.abs(right).max()))
    # natural ends
    assert abs(derivs[2](0.0)) < 1e-9 and abs(derivs[2](1.0)) < 1e-9


def test_spline_export_matches_jax(theta):
    x0, h, c = export_spline_table(theta, GRID)
    assert c.shape == (49, 4) and c.dtype == np.float64 and (x0, h) == (0.0, 1.0 / 49)
    x = np.random.default_rng(0).uniform(-0.1, 1.1, 500)
    np.testing.assert_allclose(numpy_table(x, x0, h, c), evaluate_spline(x, theta, GRID), atol=1e-12)


def test_external_spline_energy_wraps_and_gradient(theta):
    pos = np.random.default_rng(1).uniform(-2.0, 3.0, (20, 1))
    state = State(pos, np.array([1.0]))
    model = external_spline()                   # default grid: the double-well model's GRID
    e = model(theta, state)
    np.testing.assert_allclose(e, np.sum(evaluate_spline(pos[:, 0] % 1.0, theta, GRID)), rtol=1e-12)
    energy = jax.jit(model)
    grad = jax.grad(energy)(theta, state)
    fd = central_fd(lambda t: float(energy(t, state)), theta)
    np.testing.assert_allclose(grad, fd, atol=1e-7)


def test_spline_float32_runs_float32():
    t32 = init_spline(jax.random.key(0), GRID, np.float32)
    assert t32.dtype == np.float32 and t32.shape == (50,)
    model = external_spline(GRID)
    e = model(t32, State(np.random.default_rng(0).uniform(0, 1, (10, 1)), np.ones(1)))
    assert e.dtype == np.float32
    assert jax.grad(model)(t32, State(np.full((3, 1), 0.3), np.ones(1))).dtype == np.float32


def test_spline_rejects_wrong_length():
    with pytest.raises(ValueError):
        evaluate_spline(0.5, jnp.zeros(10), GRID)


# ---------------------------------------------------------------- MLP

def test_mlp_shapes_and_dtypes():
    for dtype in (np.float32, np.float64):
        params = init_mlp(jax.random.key(0), (1, 100, 100, 1), dtype)
        assert [(l["w"].shape, l["b"].shape) for l in params] == [((1, 100), (100,)), ((100, 100), (100,)),
                                                                   ((100, 1), (1,))]
        assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(params))
        assert mlp_apply(params, jnp.zeros((7, 1), dtype)).shape == (7, 1)
        pos = np.random.default_rng(0).uniform(0, 1, (10, 1))   # float64 input, cast to the model's dtype
        e, g = jax.value_and_grad(mlp_external_energy)(params, State(pos, np.ones(1)))
        assert e.shape == () and e.dtype == dtype
        assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(g))
        assert jax.jit(mlp_external_energy)(params, State(pos, np.ones(1))).dtype == dtype


def test_mlp_wraps_and_gradient_matches_fd():
    params = init_mlp(jax.random.key(2), (1, 16, 16, 1), np.float64)
    pos = np.random.default_rng(3).uniform(0, 1, (5, 1))
    box = np.array([1.0])
    np.testing.assert_allclose(mlp_external_energy(params, State(pos + 3.0, box)),
                               mlp_external_energy(params, State(pos, box)), rtol=1e-12)
    energy = jax.jit(lambda p, x, b: mlp_external_energy(p, State(x, b)))
    grad = jax.grad(energy)(params, pos, box)
    for i, name in [(0, "w"), (1, "b"), (2, "w")]:
        def f(v, i=i, name=name):
            p = list(params)
            p[i] = dict(p[i], **{name: jnp.asarray(v)})
            return float(energy(p, pos, box))
        np.testing.assert_allclose(grad[i][name], central_fd(f, params[i][name]), atol=1e-7)
    force = -jax.grad(energy, argnums=1)(params, pos, box)
    np.testing.assert_allclose(force, -central_fd(lambda x: float(energy(params, x, box)), pos), atol=1e-7)


# ---------------------------------------------------------------- pair spline

PGRID = pair_spline_grid(0.2, 0.8, 25)


@pytest.fixture
def ptheta():
    return init_pair_spline(jax.random.key(4), PGRID, np.float64, scale=1.0)


def test_pair_spline_zero_with_zero_slope_at_cutoff(ptheta):
    u = lambda r: evaluate_spline(r, ptheta, PGRID)  # noqa: E731
    assert abs(u(0.8)) < 1e-12 and abs(jax.grad(u)(0.8)) < 1e-10
    knots = np.linspace(0.2, 0.8, 25)
    ref = CubicSpline(knots, np.append(ptheta, 0.0), bc_type=((2, 0.0), (1, 0.0)))
    r = np.linspace(0.1, 0.8, 301)
    np.testing.assert_allclose(u(r), ref(r), atol=1e-10)


def random_config(n, box, min_dist, seed):
    rng, pos = np.random.default_rng(seed), []
    while len(pos) < n:
        x = rng.uniform(0, box)
        d = np.array(pos) - x if pos else np.zeros((0, len(box)))
        d -= box * np.round(d / box)
        if np.all(np.linalg.norm(d, axis=1) > min_dist):
            pos.append(x)
    return np.array(pos) + rng.integers(-2, 3, (n, len(box))) * box   # unwrapped


@pytest.mark.parametrize("dim", [2, 3])
def test_pair_spline_energy_equals_double_loop(ptheta, dim):
    box = np.array([2.0, 2.3, 2.1][:dim])
    pos = random_config(40 if dim == 3 else 25, box, 0.25, seed=dim)
    nbrs = dense_neighbor_list(pos, box, 0.9, capacity=40)   # longer than r_cut, extra padding
    x0, h, c = export_pair_table(ptheta, PGRID)
    ref = 0.0
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            d = pos[i] - pos[j]
            r = np.linalg.norm(d - box * np.round(d / box))
            if r < 0.8:
                ref += numpy_table(r, x0, h, c)
    model = pair_spline(PGRID)
    energy = jax.jit(lambda p, x: model(p, State(x, box, nbrs)))
    np.testing.assert_allclose(energy(ptheta, pos), ref, rtol=1e-12)
    np.testing.assert_allclose(numpy_table(np.linspace(0.1, 0.8, 200), x0, h, c),
                               evaluate_spline(np.linspace(0.1, 0.8, 200), ptheta, PGRID), atol=1e-12)
    force = -jax.grad(energy, argnums=1)(ptheta, pos)
    assert np.all(np.isfinite(force))
    f4 = lambda x4: float(energy(ptheta, np.concatenate([x4, pos[4:]])))  # noqa: E731
    np.testing.assert_allclose(force[:4], -central_fd(f4, pos[:4]), atol=1e-6)
    g = jax.grad(energy)(ptheta, pos)
    np.testing.assert_allclose(g, central_fd(lambda t: float(energy(t, pos)), ptheta), atol=1e-7)


def test_pair_spline_float32_and_jit():
    t32 = init_pair_spline(jax.random.key(0), PGRID, np.float32)
    assert t32.shape == (24,) and t32.dtype == np.float32
    box = np.full(3, 2.0)
    pos = random_config(20, box, 0.25, seed=0)
    nbrs = dense_neighbor_list(pos, box, 0.8)
    model, state = pair_spline(PGRID), State(pos, box, nbrs)
    e = jax.jit(model)(t32, state)
    assert e.dtype == np.float32
    np.testing.assert_allclose(e, model(t32.astype(np.float64), state), rtol=1e-4)


def test_bspline_basis_is_c2_local_and_exported():
    """The B-spline basis: C2 at the knots, end values interpolated, a value moves only the four
    intervals around its knot, and the exported table evaluates to the same curve."""
    from difftre.models.spline import SplineGrid, evaluate_spline, export_spline_table
    grid = SplineGrid(0.0, 1.0, 20, basis="bspline")
    theta = jnp.asarray(np.random.default_rng(0).normal(size=20))
    knots = np.linspace(0, 1, 20)[1:-1]
    u = lambda x: evaluate_spline(x, theta, grid)
    for order in range(3):
        f = u
        for _ in range(order):
            f = jax.grad(f)
        f = jax.vmap(f)
        np.testing.assert_allclose(f(jnp.asarray(knots - 1e-9)), f(jnp.asarray(knots + 1e-9)), atol=1e-5 * 10 ** order)
    np.testing.assert_allclose([u(0.0), u(1.0)], [theta[0], theta[-1]], atol=1e-12)
    gradient = jax.grad(lambda t: evaluate_spline(jnp.asarray(0.52), t, grid))(theta)
    assert set(np.flatnonzero(np.asarray(gradient))) == {8, 9, 10, 11}
    x0, h, coefficients = export_spline_table(theta, grid)
    x = np.linspace(0, 1, 57)
    k = np.minimum((x / h).astype(int), 18)
    t = x - k * h
    c = coefficients[k]
    np.testing.assert_allclose(c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * c[:, 3])), jax.vmap(u)(jnp.asarray(x)),
                               atol=1e-12)


def test_roughness_is_the_p_spline_penalty_and_its_gradient_the_fourth_difference():
    from difftre.models.spline import roughness
    theta = jnp.asarray(np.random.default_rng(5).standard_normal(12))
    second = np.diff(np.asarray(theta), 2)
    assert float(roughness(theta)) == pytest.approx(float(np.sum(second ** 2)), rel=1e-12)
    assert float(roughness(3.0 - 0.7 * jnp.arange(12.0))) == pytest.approx(0.0, abs=1e-20)   # lines are free
    # d/dtheta_k sum (D2 theta)^2 = 2 (D2^T D2 theta)_k: the fourth difference away from the ends
    gradient = np.asarray(jax.grad(roughness)(theta))
    np.testing.assert_allclose(gradient[2:-2], 2 * np.diff(np.asarray(theta), 4), rtol=1e-12, atol=1e-12)


def test_add_penalty_gradient_adds_the_weighted_gradient_and_checks_input():
    import optax
    from difftre.models.spline import roughness
    from difftre.optim import add_penalty_gradient
    theta = jnp.asarray(np.random.default_rng(6).standard_normal(10))
    grads = jnp.asarray(np.random.default_rng(7).standard_normal(10))
    transform = add_penalty_gradient(roughness, 0.3)
    updates, _ = transform.update(grads, transform.init(theta), theta)
    np.testing.assert_allclose(updates, grads + 0.3 * jax.grad(roughness)(theta), rtol=1e-14)
    # chained before Adam, weight 0 is plain Adam
    plain, chained = optax.adam(0.1), optax.chain(add_penalty_gradient(roughness, 0.0), optax.adam(0.1))
    np.testing.assert_array_equal(plain.update(grads, plain.init(theta), theta)[0],
                                  chained.update(grads, chained.init(theta), theta)[0])
    with pytest.raises(ValueError, match="needs params"):
        transform.update(grads, transform.init(theta))
    with pytest.raises(ValueError, match="weight must be >= 0"):
        add_penalty_gradient(roughness, -1.0)
