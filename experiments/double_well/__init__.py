"""The double-well experiment: learn U(x) of ideal particles from their density profile.

Paper-setup section 3. Reduced units (kT = 1, box length 1, mass 1). Run with
``difftre run double-well --out DIR``; the default configuration is
``config.toml`` beside this file.
"""
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from difftre import md
from difftre.config import (SEED_FIELD, TRAINING_FIELDS, TRAJECTORY_FIELDS, in_range, positive_up_to,
                            refuse)
from difftre.models.spline import SplineGrid, init_spline, roughness
from difftre.optim import add_penalty_gradient
from difftre.observables.density import density_profile_uniform
from difftre.potential import external_spline_with_harmonic_prior, learned_external_profile
from difftre.resources import Demand, check_time_step
from difftre.runner import Experiment
from difftre.systems import double_well_density, double_well_energy
from difftre.trainer import SamplingConfig, Target, Trainer

DEFAULT_CONFIG = pathlib.Path(__file__).with_name("config.toml")
SCHEMA = {   # reduced units: lengths in box lengths of the paper (1), energies in its kT (1), mass 1
    "system": {"n_particles": (int, in_range(1, 10 ** 7)), "box_length": (float, in_range(0.1, 10.0)),
               "mass": (float, in_range(1e-3, 1e3)), "kT": (float, in_range(0.1, 10.0)), **SEED_FIELD},
    "target": {"grid_points": (int, in_range(2, 10 ** 5)), "smoothing": (float, positive_up_to(1.0))},
    "model": {"control_points": (int, in_range(4, 10 ** 4)), "basis": (str, {"natural", "bspline"}),
              "init_scale": (float, in_range(0.0, 10.0)), "prior_k": (float, in_range(1e-3, 1e6)),
              "prior_center": (float, in_range(0.0, 10.0))},
    "sampling": {"integrator": (str, {"langevin"}), "dt": (float, positive_up_to(1.0)),
                 "friction": (float, positive_up_to(1e4)), **TRAJECTORY_FIELDS},
    "training": TRAINING_FIELDS,
}
BLOW_UP_SUSPECTS = {"sampling.dt": "time step", "system.kT": "temperature", "system.mass": "mass",
                    "model.prior_k": "prior strength", "model.init_scale": "initial scale"}
DENSITY_WINDOW = 8.0        # the density observable sums each particle's Gaussian over +-8 sigma


def check_resources(config, source):
    """The double well's cross-field rules (smoothing and prior centre against the box, the time step
    against the stiffest initial motion) and its Demand: the density observable's per-chunk array
    (chunk_size x particles x grid points within the window) is the largest temporary."""
    system, target, model, sampling = (config[k] for k in ("system", "target", "model", "sampling"))
    length = system["box_length"]
    if not target["smoothing"] <= length / (2 * DENSITY_WINDOW):
        raise refuse(source, "target.smoothing", target["smoothing"],
                     f"in (0, {length / (2 * DENSITY_WINDOW):g}] (system.box_length / 16: the Gaussian's "
                     f"+-{DENSITY_WINDOW:g} sigma window within half the box)")
    if not model["prior_center"] <= length:
        raise refuse(source, "model.prior_center", model["prior_center"], f"in [0, system.box_length = {length:g}]")
    # the initial spline's curvature: second differences of N(0, init_scale^2) knot values (sd sqrt(6) scale),
    # 3 standard deviations, over the knot spacing squared
    spacing = length / (model["control_points"] - 1)
    stiffness = model["prior_k"] + 3 * 6 ** 0.5 * model["init_scale"] / spacing ** 2
    check_time_step(source, sampling["dt"], system["mass"], system["kT"], stiffness, 0.1 * length,
                    "system.mass, system.kT, model.prior_k, model.init_scale and model.control_points")
    grid_spacing = length / (target["grid_points"] - 1)
    window = 2 * math.ceil(DENSITY_WINDOW * target["smoothing"] / grid_spacing) + 1
    temporaries = 4 * config["training"]["chunk_size"] * system["n_particles"] * window * 8
    return Demand(system["n_particles"], (length,), "system.n_particles", values_per_state=target["grid_points"],
                  working_bytes=temporaries, working_fields="training.chunk_size, target.smoothing, "
                                                            "target.grid_points")


def build(config):
    """The double-well Experiment of a validated configuration."""
    system, model, sampling, training = (config[k] for k in ("system", "model", "sampling", "training"))
    dtype = np.float64 if sampling["dtype"] == "float64" else np.float32
    if dtype is np.float64:
        jax.config.update("jax_enable_x64", True)
    grid = SplineGrid(0.0, system["box_length"], model["control_points"], basis=model["basis"])
    potential = external_spline_with_harmonic_prior(grid, model["prior_k"], model["prior_center"], dtype)
    density_grid = np.linspace(0.0, system["box_length"], config["target"]["grid_points"])
    sigma = config["target"]["smoothing"]
    n_points, length = config["target"]["grid_points"], system["box_length"]
    target = Target("density", double_well_density(density_grid, sigma, system["kT"], length),
                    features=lambda state: density_profile_uniform(state, length, n_points, sigma))
    schedule = optax.exponential_decay(training["learning_rate"], training["decay_updates"], 0.01)
    optimizer = optax.chain(add_penalty_gradient(roughness, training["smoothness"]),
                            optax.adam(schedule, b1=training["adam_b1"], b2=training["adam_b2"]))
    integrator = md.Langevin(dt=sampling["dt"], kT=system["kT"], friction=sampling["friction"])
    trainer = Trainer(potential, [target], optimizer,
                      SamplingConfig(integrator, sampling["n_equilibration"], sampling["n_frames"],
                                     sampling["stride"], dtype=dtype, device=sampling["device"]),
                      box=[system["box_length"]], masses=system["mass"], kT=system["kT"],
                      chunk_size=training["chunk_size"], resample_threshold=training["resample_threshold"])
    key = jax.random.PRNGKey(system["seed"])
    params = init_spline(key, grid, dtype, scale=model["init_scale"])
    # initial positions from the prior's Boltzmann distribution
    rng = np.random.default_rng(system["seed"])
    spread = np.sqrt(system["kT"] / model["prior_k"])
    positions = (model["prior_center"] + spread * rng.standard_normal((system["n_particles"], 1))) % system["box_length"]

    def report(trainer, state, metrics, out_dir):
        """The learned potential's error against U_DW, plots, and params.npz."""
        np.savez(out_dir / "params.npz", spline_values=np.asarray(state.params),
                 control_points=np.linspace(grid.x_min, grid.x_max, grid.n))
        return evaluate(config, trainer, state, potential, density_grid, metrics, out_dir)

    return Experiment(trainer, params, positions, report)


def potential_error(potential, params, config, density_target, density_grid, fraction=0.01):
    """max |U_learned - U_DW - c| (kT) for the best constant c, where the target density exceeds
    `fraction` of its maximum; also the curves for plotting (the learned one shifted by the
    density-weighted mean difference, so that it lies on U_DW where most states are)."""
    x = np.linspace(0.0, config["system"]["box_length"], 1001)
    box = jnp.asarray([config["system"]["box_length"]])
    learned = learned_external_profile(potential, params, x, box) / config["system"]["kT"]
    true = double_well_energy(x)
    density = np.interp(x, density_grid, density_target)
    region = density > fraction * density_target.max()
    difference = learned[region] - true[region]
    error = 0.5 * (difference.max() - difference.min())
    plot_shift = np.average(difference, weights=density[region])
    return float(error), x, learned - plot_shift, true, region


def evaluate(config, trainer, state, potential, density_grid, metrics, out_dir):
    """Summary numbers and plots of a finished run."""
    from difftre.experiments.double_well.plots import write_plots
    target = trainer.targets[0].target
    error, x, learned, true, region = potential_error(potential, state.params, config, target, density_grid)
    write_plots(out_dir, metrics, density_grid, target, x, learned, true, region)
    return {"potential_max_error_kT": error, "potential_region": [float(x[region].min()), float(x[region].max())]}
