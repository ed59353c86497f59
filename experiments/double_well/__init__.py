"""The double-well experiment: learn U(x) of ideal particles from their density profile.

Paper-setup section 3. Reduced units (kT = 1, box length 1, mass 1). Run with
``difftre run double-well --out DIR``; the default configuration is
``config.toml`` beside this file.
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from difftre import md
from difftre.config import Rule, in_range, non_negative, positive
from difftre.models.spline import SplineGrid, init_spline, roughness
from difftre.optim import add_penalty_gradient
from difftre.observables.density import density_profile_uniform
from difftre.potential import external_spline_with_harmonic_prior, learned_external_profile
from difftre.runner import Experiment
from difftre.systems import double_well_density, double_well_energy
from difftre.trainer import SamplingConfig, Target, Trainer

DEFAULT_CONFIG = pathlib.Path(__file__).with_name("config.toml")
SCHEMA = {
    "system": {"n_particles": (int, positive), "box_length": (float, positive), "mass": (float, positive),
               "kT": (float, positive), "seed": (int, non_negative)},
    "target": {"grid_points": (int, Rule(lambda n: n >= 2, ">= 2")), "smoothing": (float, positive)},
    "model": {"control_points": (int, Rule(lambda n: n >= 4, ">= 4")), "basis": (str, {"natural", "bspline"}),
              "init_scale": (float, non_negative),
              "prior_k": (float, positive), "prior_center": (float, None)},
    "sampling": {"integrator": (str, {"langevin"}), "dt": (float, positive), "friction": (float, positive),
                 "n_equilibration": (int, non_negative), "n_frames": (int, positive), "stride": (int, positive),
                 "dtype": (str, {"float32", "float64"}), "device": (str, {"cpu", "cuda"})},
    "training": {"n_updates": (int, non_negative), "learning_rate": (float, positive),
                 "decay_updates": (int, positive), "adam_b1": (float, in_range(0, 1, closed_high=False)),
                 "adam_b2": (float, in_range(0, 1, closed_high=False)), "smoothness": (float, non_negative),
                 "resample_threshold": (float, in_range(0, 1, closed_low=False)),
                 "chunk_size": (int, positive)},
}


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
