"""DiffTRe against direct reverse-mode AD through the simulation (paper-setup section 2).

The double well with the spline replaced by a 1 -> 100 -> 100 -> 1 MLP (plus the
harmonic prior), Langevin (dt 1e-3, friction 0.1, kT 1, mass 1), a state every
100 steps, 1 equilibration state + 10 retained states. Measured in one process:
the time of one gradient by each method, the time of one whole update (DiffTRe:
sampling with the Numba sampler driven by JAX forces through the bridge, plus
reweighting and gradient; direct AD: its forward simulation and backward pass),
the memory of the compiled gradient programs, and gradient norms against the
trajectory length, both at the initial MLP and at an MLP fitted to U_DW - prior
(where the model reproduces the double well, as during and after training).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from difftre import bridge, direct_ad, md
from difftre.models import mlp, priors
from difftre.models.state import State
from difftre.observables.density import density_profile_uniform
from difftre.reweighting import reweighting_weights
from difftre.systems import double_well_density, double_well_energy

STEPS_PER_STATE = 100
PRIOR_K, PRIOR_CENTER = 150.0, 0.5   # the double-well prior 75 (x - 0.5)^2 (kT)


def _median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _boltzmann_sample(rng, energy_kT, n, grid_points=100001):
    """n positions (n, 1) on [0, 1) drawn from exp(-energy_kT(x)) by inverse transform on a fine grid."""
    x = np.linspace(0.0, 1.0, grid_points)
    weight = np.exp(-(energy_kT(x) - energy_kT(x).min()))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (weight[1:] + weight[:-1]) * np.diff(x))])
    return np.interp(rng.uniform(0.0, cdf[-1], n), cdf, x)[:, None] % 1.0


def _available_bytes():
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024


def _spread(values):
    """median, min and max of a list of norms, and the list itself."""
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values)),
            "draws": [float(v) for v in values]}


def run(n_particles=1000, n_states=10, n_equilibration_states=1, lengths=(5, 10, 15, 20, 25, 30, 35, 40),
        seed=0, repeats=3, norm_particles=100, draws=8, dt=1e-3, friction=0.1, progress=print):
    """The comparison as one dict (the JSON of ``difftre bench grad``).

    Timings use n_particles. The gradient-norm study uses norm_particles and, for
    each of `draws` independent trajectories (own start drawn from the Boltzmann
    distribution of the parameter set's potential, own velocities and noise),
    the norm of each method's gradient at every length; DiffTRe's lengths are
    prefixes of one trajectory of max(lengths) states per draw. One trajectory's
    gradient is what one update sees, so the spread over draws is reported with
    the median. dt (time units) and friction (1/time unit) default to the paper's.
    """
    if min(lengths) < 2:
        raise ValueError(f"lengths must be at least 2 retained states (one state has weight 1 whatever the "
                         f"parameters, so no reweighting gradient), got {min(lengths)}")
    jax.config.update("jax_enable_x64", True)
    dtype = np.float64
    kT, mass, box = 1.0, 1.0, np.array([1.0])
    grid = np.linspace(0.0, 1.0, 101)
    target = jnp.asarray(double_well_density(grid, 0.01))
    prior = priors.harmonic(PRIOR_K, [PRIOR_CENTER], dtype=dtype)

    def energy(params, state):
        return mlp.mlp_external_energy(params, state) + prior(params, state)

    def observable(state):
        return density_profile_uniform(state, 1.0, 101, 0.01)

    params = mlp.init_mlp(jax.random.PRNGKey(seed), [1, 100, 100, 1], dtype)

    def prior_start(rng, n):
        """n positions from the prior's Boltzmann distribution and Maxwell-Boltzmann velocities."""
        positions = (PRIOR_CENTER + np.sqrt(kT / PRIOR_K) * rng.standard_normal((n, 1))) % 1.0
        return positions, np.sqrt(kT / mass) * rng.standard_normal((n, 1))

    def double_well_start(rng, n):
        """n positions from the double well's Boltzmann distribution and Maxwell-Boltzmann velocities."""
        positions = _boltzmann_sample(rng, lambda x: double_well_energy(x) / kT, n)
        return positions, np.sqrt(kT / mass) * rng.standard_normal((n, 1))

    start_prior, start_velocities = prior_start(np.random.default_rng(seed), n_particles)   # timing runs

    # --- DiffTRe: Numba sampler with JAX forces (bridge), then reweighting gradient
    def sample(params, n_retained, positions0=start_prior, velocities0=start_velocities, sampler_seed=seed):
        ff = md.ForceField([bridge.jax_force_term(mlp.mlp_external_energy, params),
                            md.harmonic(PRIOR_K, [PRIOR_CENTER])])
        sampler = md.Sampler(ff, md.Langevin(dt=dt, kT=kT, friction=friction), dtype=dtype)
        state = sampler.init_state(positions0, box, mass, seed=sampler_seed, velocities=velocities0)
        trajectory, _ = sampler.run(state, n_equilibration_states * STEPS_PER_STATE, n_retained, STEPS_PER_STATE)
        return jnp.asarray(trajectory.positions)

    box_jax = jnp.asarray(box)
    energies = jax.vmap(lambda p, x: energy(p, State(x, box_jax)), (None, 0))

    def difftre_loss(p, states, reference):
        weights = reweighting_weights(energies(p, states), reference, kT)
        prediction = jnp.tensordot(weights, jax.vmap(lambda x: observable(State(x, box_jax)))(states), axes=1)
        return jnp.mean((prediction - target) ** 2)

    difftre_grad = jax.jit(jax.grad(difftre_loss))
    states = sample(params, n_states)
    reference = energies(params, states)
    jax.block_until_ready(difftre_grad(params, states, reference))
    t_difftre_grad = _median_time(lambda: difftre_grad(params, states, reference), max(repeats, 5))

    def difftre_update():
        s = sample(params, n_states)
        return difftre_grad(params, s, energies(params, s))

    t_difftre_update = _median_time(difftre_update, repeats)
    progress(f"DiffTRe: gradient {t_difftre_grad:.4f} s, update {t_difftre_update:.3f} s")

    # --- direct AD through the JAX simulation
    compiled_direct = {}

    def direct_grad_fn(params, n_retained, positions0, velocities0):
        """grad of the direct-AD loss as a function of (params, positions0, velocities0, key), compiled per length."""
        shape = (n_retained, np.shape(positions0))
        if shape not in compiled_direct:
            loss = lambda p, x0, v0, key: direct_ad.direct_ad_loss(
                energy, observable, target, p, x0, v0, box_jax, key, dt, kT, friction, mass,
                n_equilibration_states, n_retained, STEPS_PER_STATE)
            compiled_direct[shape] = jax.jit(jax.grad(loss)).lower(
                params, jnp.asarray(positions0), jnp.asarray(velocities0), jax.random.PRNGKey(0)).compile()
        return compiled_direct[shape]

    direct = direct_grad_fn(params, n_states, start_prior, start_velocities)
    start = (jnp.asarray(start_prior), jnp.asarray(start_velocities), jax.random.PRNGKey(seed + 1))
    t_direct_grad = _median_time(lambda: direct(params, *start), repeats)
    progress(f"direct AD: gradient (= whole update) {t_direct_grad:.3f} s")
    difftre_compiled = jax.jit(jax.grad(difftre_loss)).lower(params, states, reference).compile()

    # --- gradient norms against the trajectory length, over independent trajectories
    def gradient_norms(params, label, draw_start):
        """Per length: the norm of each draw's gradient by both methods (one trajectory per draw)."""
        longest = max(lengths)
        difftre = {length: [] for length in lengths}
        direct = {length: [] for length in lengths}
        failed = {}
        for d in range(draws):
            positions0, velocities0 = draw_start(np.random.default_rng([seed, d]), norm_particles)
            trajectory = sample(params, longest, positions0, velocities0, norm_seed + d)
            for length in lengths:   # a trajectory of `length` states is the first `length` of the longest
                s = trajectory[:length]
                difftre[length].append(float(optax.tree_utils.tree_norm(difftre_grad(params, s, energies(params, s)))))
                if length in failed:
                    continue
                compiled = direct_grad_fn(params, length, positions0, velocities0)
                if d == 0:   # its memory need is the same for every draw
                    need = compiled.memory_analysis().temp_size_in_bytes
                    if need > 0.8 * _available_bytes():
                        failed[length] = (f"failed: needs {need / 2**30:.1f} GiB of temporary memory, "
                                          f"{_available_bytes() / 2**30:.1f} GiB available")
                        continue
                gradient = compiled(params, jnp.asarray(positions0), jnp.asarray(velocities0),
                                    jax.random.PRNGKey(norm_seed + d))
                direct[length].append(float(optax.tree_utils.tree_norm(gradient)))
            progress(f"{label}, draw {d + 1}/{draws}: DiffTRe {[round(difftre[n][-1], 4) for n in lengths]}, "
                     f"direct AD {[round(direct[n][-1], 4) for n in lengths if n not in failed]}")
        rows = []
        for length in lengths:
            row = {"retained_states": length, "difftre_grad_norm": _spread(difftre[length])}
            if length in failed:
                row["direct_ad"] = failed[length]
            else:
                row["direct_ad_grad_norm"] = _spread(direct[length])
            rows.append(row)
        medians = [row["difftre_grad_norm"]["median"] for row in rows]
        direct_medians = [row["direct_ad_grad_norm"]["median"] for row in rows if "direct_ad_grad_norm" in row]
        return {"particles": norm_particles, "draws": draws, "rows": rows,
                "difftre_median_max_over_min": max(medians) / min(medians),
                "direct_ad_median_last_over_first": direct_medians[-1] / direct_medians[0] if direct_medians else None}

    norm_seed = seed + 1000   # the norm study's random streams differ from the timing runs'
    norms = gradient_norms(params, "initial MLP", prior_start)
    x_fit = jnp.linspace(0.0, 1.0, 401, dtype=dtype)[:, None]
    wanted = double_well_energy(x_fit) - 0.5 * PRIOR_K * (x_fit - PRIOR_CENTER) ** 2
    fitted, fit_rms = mlp.fit_mlp(params, x_fit, wanted)
    progress(f"MLP fitted to U_DW - prior: rms residual {fit_rms:.3g} kT")
    norms_fitted = gradient_norms(fitted, "fitted MLP", double_well_start)
    n_eq, n = n_equilibration_states, n_states
    return {
        "benchmark": "grad", "system": f"double well, MLP 1-100-100-1 + harmonic prior, {n_particles} particles",
        "retained_states": n, "equilibration_states": n_eq, "steps_per_state": STEPS_PER_STATE,
        "dt": dt, "friction": friction,
        "difftre_grad_s": t_difftre_grad, "direct_ad_grad_s": t_direct_grad,
        "grad_speedup": t_direct_grad / t_difftre_grad,
        "difftre_update_s": t_difftre_update, "direct_ad_update_s": t_direct_grad,
        "update_speedup": t_direct_grad / t_difftre_update,
        "difftre_grad_temp_bytes": int(difftre_compiled.memory_analysis().temp_size_in_bytes),
        "difftre_trajectory_bytes": int(states.size * states.dtype.itemsize),
        "direct_ad_grad_temp_bytes": int(direct.memory_analysis().temp_size_in_bytes),
        "cost_model": {"grad_speedup_estimate": STEPS_PER_STATE * (1 + n_eq / n) * 1.0,
                       "note": "grad speed-up ~ r (1 + N_eq/N) with r steps per retained state; "
                               "update speed-up ~ 1 + c with c the backward/forward cost ratio"},
        "gradient_norms": norms,
        "gradient_norms_fitted": norms_fitted, "fitted_rms_residual_kT": fit_rms,
    }
