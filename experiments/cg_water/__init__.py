"""Coarse-grained water: 901 one-bead molecules learned from the experimental RDF, ADF and pressure.

Paper-setup section 5 (Thaler & Zavadlav 2021). Units: nm, ps, u, kJ/mol, K. Run with
``difftre run cg-water --out DIR`` (the published sampling: Nose-Hoover chain, 10 + 60 ps,
600 states) or ``--preset quick``. Models: ``spline`` (pair + three-body UF3 splines on the
(sigma/r)^12 prior) and ``pair-spline`` (pair term only: DiffTRe as a generalisation of IBI).
"""
import pathlib
from importlib import resources

import jax
import numpy as np
import optax

from difftre import md
from difftre.md import BAR
from difftre.config import in_range, non_negative, positive
from difftre.ibi import IBITrainer
from difftre.io import read_gro
from difftre.models import pair_spline, priors, uf3 as uf3_model
from difftre.observables import adf, adf_list_cutoff, bin_centers, load_adf_target, load_rdf_target, pressure, rdf, \
    rdf_list_cutoff
from difftre.potential import Potential
from difftre.runner import Experiment
from difftre.trainer import SamplingConfig, Target, Trainer
from difftre import uf3

DEFAULT_CONFIG = pathlib.Path(__file__).with_name("config.toml")
SCHEMA = {
    "system": {"configuration": (str, None), "mass": (float, positive), "temperature": (float, positive),
               "seed": (int, non_negative)},
    "target": {"rdf_bins": (int, positive), "rdf_max": (float, positive), "adf_bins": (int, positive),
               "adf_leg_cutoff": (float, positive), "adf_cutoff_width": (float, positive),
               "pressure_bar": (float, None), "gamma_rdf": (float, non_negative),
               "gamma_adf": (float, non_negative), "gamma_pressure": (float, non_negative)},
    "model": {"kind": (str, {"spline", "pair-spline"}), "prior_epsilon": (float, positive),
              "prior_sigma": (float, positive), "pair_cutoff": (float, positive), "leg_cutoff": (float, positive),
              "pair_intervals": (int, positive), "leg_intervals": (int, positive), "jk_intervals": (int, positive)},
    "sampling": {"integrator": (str, {"nose-hoover"}), "chain_length": (int, positive), "tau": (float, positive),
                 "dt": (float, positive), "n_equilibration": (int, non_negative), "n_frames": (int, positive),
                 "stride": (int, positive), "skin": (float, positive), "dtype": (str, {"float32", "float64"}),
                 "device": (str, {"cpu", "cuda"})},
    "training": {"method": (str, {"difftre", "ibi"}), "n_updates": (int, non_negative), "learning_rate": (float, positive),
                 "decay_updates": (int, positive), "adam_b1": (float, in_range(0, 1, closed_high=False)),
                 "adam_b2": (float, in_range(0, 1, closed_high=False)), "smoothness": (float, non_negative),
                 "resample_threshold": (float, in_range(0, 1, closed_low=False)), "chunk_size": (int, positive)},
    "ibi": {"lam": (float, positive), "pressure_factor": (float, positive), "max_amplitude": (float, positive),
            "r_min": (float, positive), "r_max": (float, positive), "spacing": (float, positive),
            "patience": (int, positive)},
}


def starting_configuration(path=""):
    """(positions (N, 3) nm, box (3,) nm) of a .gro file; "" reads the packaged 901-bead water."""
    if path:
        structure = read_gro(path)
    else:
        with resources.as_file(resources.files("difftre") / "data" / "cg_water" / "water_901_cg.gro") as packaged:
            structure = read_gro(packaged)
    return structure.positions, structure.box


def tabulated_pair_potential(grid, prior=None, prior_term=None):
    """Potential of a pair spline on ``grid`` (knot values in kJ/mol), plus an optional prior."""
    spline = pair_spline.pair_spline(grid)

    def force_field(params):
        table = md.tabulated_pair(*pair_spline.export_pair_table(params, grid))
        return md.ForceField([table] if prior_term is None else [table, prior_term])
    energy = spline if prior is None else (lambda params, state: spline(params, state) + prior(params, state))
    return Potential(energy, force_field, cutoff=grid.x_max)


def potential_and_params(model, dtype):
    """(Potential, initial parameters: zeros, i.e. the prior alone) of the model section."""
    prior_args = (model["prior_epsilon"], model["prior_sigma"], model["pair_cutoff"])
    prior = priors.repulsive(*prior_args, dtype=dtype)
    prior_term = md.repulsive(*prior_args)
    if model["kind"] == "pair-spline":
        grid = pair_spline.pair_spline_grid(0.2, model["pair_cutoff"], 3 * model["pair_intervals"] + 1)
        return tabulated_pair_potential(grid, prior, prior_term), np.zeros(grid.n - 1, dtype)
    spec = uf3_model.UF3Spec(pair_cutoff=model["pair_cutoff"], leg_cutoff=model["leg_cutoff"],
                             n_pair=model["pair_intervals"], n_leg=model["leg_intervals"], n_jk=model["jk_intervals"])
    spline = uf3_model.UF3Model(spec)

    def force_field(params):
        return md.ForceField([uf3.uf3_term(spec, np.asarray(params, np.float64), dtype), prior_term])
    energy = lambda params, state: spline.energy(params, state) + prior(params, state)
    return Potential(energy, force_field, cutoff=spec.neighbor_cutoff), np.zeros(spec.n_free, dtype)


def build(config):
    """The CG-water Experiment of a validated configuration."""
    system, target, model, sampling, training = (config[k] for k in ("system", "target", "model", "sampling",
                                                                      "training"))
    dtype = np.float64 if sampling["dtype"] == "float64" else np.float32
    if dtype is np.float64:
        jax.config.update("jax_enable_x64", True)
    positions, box = starting_configuration(system["configuration"])
    kT = md.kT_from_temperature(system["temperature"])
    if training["method"] == "ibi":
        ibi = config["ibi"]
        n_knots = int(round((ibi["r_max"] - ibi["r_min"]) / ibi["spacing"])) + 1
        grid = pair_spline.pair_spline_grid(ibi["r_min"], ibi["r_max"], n_knots)
        potential = tabulated_pair_potential(grid)
    else:
        potential, params = potential_and_params(model, dtype)
    rdf_centers = bin_centers(0.0, target["rdf_max"], target["rdf_bins"])
    adf_centers = bin_centers(0.0, np.pi, target["adf_bins"])
    leg, width = target["adf_leg_cutoff"], target["adf_cutoff_width"]
    targets = [
        Target("rdf", load_rdf_target(rdf_centers), target["gamma_rdf"],
               features=lambda state: rdf(state, rdf_centers), cutoff=rdf_list_cutoff(rdf_centers)),
        Target("adf", load_adf_target(adf_centers), target["gamma_adf"],
               features=lambda state: adf(state, adf_centers, r_cut=leg, cutoff_width=width),
               cutoff=adf_list_cutoff(leg, width)),
        Target("pressure", np.array(target["pressure_bar"] * BAR), target["gamma_pressure"],
               observable=lambda p, state: pressure(potential.energy, p, state, kT=kT)),
    ]
    integrator = md.NoseHooverChain(sampling["dt"], kT, sampling["tau"], chain_length=sampling["chain_length"])
    sampling_config = SamplingConfig(integrator, sampling["n_equilibration"], sampling["n_frames"], sampling["stride"],
                                     skin=sampling["skin"], dtype=dtype, device=sampling["device"])
    if training["method"] == "ibi":
        trainer = IBITrainer(potential, targets, sampling_config, box, system["mass"], kT,
                             np.linspace(ibi["r_min"], ibi["r_max"], n_knots), rdf_centers, lam=ibi["lam"],
                             pressure_factor=ibi["pressure_factor"], max_amplitude=ibi["max_amplitude"],
                             patience=ibi["patience"], chunk_size=training["chunk_size"])
        params = trainer.initial_params(dtype)
    else:
        schedule = optax.exponential_decay(training["learning_rate"], training["decay_updates"], 0.01)
        optimizer = optax.adam(schedule, b1=training["adam_b1"], b2=training["adam_b2"])
        trainer = Trainer(potential, targets, optimizer, sampling_config, box=box, masses=system["mass"], kT=kT,
                          chunk_size=training["chunk_size"], resample_threshold=training["resample_threshold"])

    def report(trainer, state, metrics, out_dir):
        """Predictions with standard errors, MSEs against experiment, plots, params.npz."""
        from difftre.experiments.cg_water.plots import write_plots
        predictions = trainer.predictions_with_errors(state)
        np.savez(out_dir / "params.npz", theta=np.asarray(state.params))
        write_plots(out_dir, metrics, rdf_centers, adf_centers, targets)
        (rdf_value, rdf_error), (adf_value, adf_error) = predictions["rdf"], predictions["adf"]
        p_value, p_error = predictions["pressure"]
        return {"rdf_mse": float(np.mean((rdf_value - targets[0].target) ** 2)),
                "adf_mse": float(np.mean((adf_value - targets[1].target) ** 2)),
                "rdf_max_standard_error": float(rdf_error.max()), "adf_max_standard_error": float(adf_error.max()),
                "pressure_bar": float(p_value) / BAR, "pressure_standard_error_bar": float(p_error) / BAR}

    return Experiment(trainer, params, positions, report)
