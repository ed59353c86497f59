"""Diamond: 1000 carbon atoms learned from the experimental elastic constants and zero stress.

Paper-setup section 4 (Thaler & Zavadlav 2021). Units: nm, ps, u, kJ/mol, K (targets in GPa).
Run with ``difftre run diamond --out DIR`` (the published sampling: Langevin, 10 + 60 ps,
2400 states) or ``--preset quick``. Model: pair + three-body UF3 splines on a Stillinger-Weber
prior, trained through their linear form: per-state virial and Born features are computed once
per trajectory, so each update reweights the stress and the fluctuation-formula stiffness
C = <C_B> - V/kT Cov(sigma_B) + N kT/V (...) without evaluating the model.
"""
import pathlib

import jax
import numpy as np
import optax

from difftre import md, systems, uf3
from difftre.md import GPA
from difftre.config import SEED_FIELD, TRAINING_FIELDS, TRAJECTORY_FIELDS, in_range, positive_up_to, refuse
from difftre.experiments.diamond.validation import held_out, write_held_out_plots
from difftre.models import priors, uf3 as uf3_model
from difftre.observables.elastic import cubic_constants
from difftre.optim import add_penalty_gradient
from difftre.resources import Demand, check_time_step
from difftre.runner import Experiment
from difftre.trainer import SamplingConfig, Target, Trainer

DEFAULT_CONFIG = pathlib.Path(__file__).with_name("config.toml")
AVOGADRO = 6.02214076e23
DIAMOND_BASIS_ATOMS = 8   # atoms per conventional cell
SCHEMA = {   # nm, ps, u, kJ/mol, K; targets in GPa
    "system": {"cells": (int, in_range(1, 50)), "density": (float, in_range(100.0, 1e5)),
               "mass": (float, in_range(1.0, 1e4)), "temperature": (float, in_range(1.0, 1e5)), **SEED_FIELD},
    "target": {"c11": (float, positive_up_to(1e4)), "c12": (float, in_range(-1e4, 1e4)),
               "c44": (float, positive_up_to(1e4)), "gamma_stress": (float, in_range(0.0, 1e6)),
               "gamma_stiffness": (float, in_range(0.0, 1e6))},
    "model": {"prior_epsilon": (float, in_range(1e-3, 1e4)), "prior_sigma": (float, in_range(0.01, 1.0)),
              "cutoff": (float, positive_up_to(10.0)), "r_min": (float, in_range(0.0, 10.0)),
              "pair_intervals": (int, in_range(1, 200)), "leg_intervals": (int, in_range(1, 200)),
              "jk_intervals": (int, in_range(1, 200))},
    "sampling": {"integrator": (str, {"langevin"}), "friction": (float, positive_up_to(1e3)),
                 "dt": (float, positive_up_to(0.1)), "skin": (float, positive_up_to(1.0)),
                 **{**TRAJECTORY_FIELDS, "dtype": (str, {"float64"})}},
    "training": TRAINING_FIELDS,
}

BLOW_UP_SUSPECTS = {"sampling.dt": "time step", "system.temperature": "temperature", "system.mass": "mass",
                    "model.prior_epsilon": "prior strength", "model.prior_sigma": "prior range"}
SW_BOND_CURVATURE = 20.9    # U'' of the Stillinger-Weber pair term at its minimum (1.12 sigma), epsilon / sigma^2
SW_REACH = 1.8              # the Stillinger-Weber cut-off, in sigma
STRESS_AND_BORN_TERMS = 9 + 21   # per-state features per coefficient: virial (3 x 3) and Born (Voigt-21) terms


def check_resources(config, source):
    """Diamond's cross-field rules (knots below the cut-off, the time step against the prior's bond
    stiffness) and its Demand (the crystal's size from cells and density, without building it)."""
    system, model, sampling = (config[k] for k in ("system", "model", "sampling"))
    if not model["r_min"] < model["cutoff"]:
        raise refuse(source, "model.r_min", model["r_min"], "below model.cutoff")
    kT = md.kT_from_temperature(system["temperature"])
    bond_stiffness = SW_BOND_CURVATURE * model["prior_epsilon"] / model["prior_sigma"] ** 2
    check_time_step(source, sampling["dt"], system["mass"], kT, 2 * bond_stiffness, sampling["skin"],
                    "system.mass, system.temperature, model.prior_epsilon and model.prior_sigma")
    n = DIAMOND_BASIS_ATOMS * system["cells"] ** 3
    edge = (n * system["mass"] * 1e-3 / AVOGADRO / system["density"] * 1e27) ** (1.0 / 3.0)
    cutoff = max(model["cutoff"], SW_REACH * model["prior_sigma"]) + sampling["skin"]
    n_free = model["pair_intervals"] + model["leg_intervals"] * (model["leg_intervals"] + 1) // 2 * model["jk_intervals"]
    return Demand(n, (edge,) * 3, "system.cells",
                  {"max(model.cutoff, 1.8 model.prior_sigma) + sampling.skin": cutoff},
                  values_per_state=n_free * STRESS_AND_BORN_TERMS)


def crystal(cells, density, mass):
    """Perfect diamond lattice of cells^3 conventional cells with its box rescaled to ``density`` (kg/m^3):
    positions (8 cells^3, 3) nm and box (3,) nm."""
    n = DIAMOND_BASIS_ATOMS * cells ** 3
    volume_nm3 = n * mass * 1e-3 / AVOGADRO / density * 1e27
    lattice_constant = volume_nm3 ** (1.0 / 3.0) / cells
    return systems.diamond_lattice(cells, lattice_constant)


def build(config):
    """The diamond Experiment of a validated configuration."""
    system, target, model, sampling, training = (config[k] for k in ("system", "target", "model", "sampling",
                                                                      "training"))
    jax.config.update("jax_enable_x64", True)   # centred stress covariances need float64 (paper-setup section 4)
    positions, box = crystal(system["cells"], system["density"], system["mass"])
    n = len(positions)
    kT = md.kT_from_temperature(system["temperature"])
    prior_args = (model["prior_epsilon"], model["prior_sigma"])
    prior, prior_term = priors.stillinger_weber(*prior_args, dtype=np.float64), md.stillinger_weber(*prior_args)
    spec = uf3_model.UF3Spec(pair_cutoff=model["cutoff"], leg_cutoff=model["cutoff"], n_pair=model["pair_intervals"],
                             n_leg=model["leg_intervals"], n_jk=model["jk_intervals"], pair_r_min=model["r_min"],
                             leg_r_min=model["r_min"], jk_r_min=model["r_min"])
    list_cutoff = max(spec.neighbor_cutoff, prior_term.neighbor_cutoff)
    potential = uf3.uf3_potential(spec, prior, [prior_term], cutoff=list_cutoff)
    strain_sums = uf3.SharedStrainSums(spec, [prior_term])   # one pass of the strain kernels for both targets
    stiffness = uf3.stiffness_target("stiffness", np.zeros((3, 3, 3, 3)), spec, kT, n, box, prior_energy=prior,
                                     cutoff=list_cutoff, prior_terms=[prior_term], strain_sums=strain_sums)
    targets = [
        uf3.stress_target("stress", np.zeros((3, 3)), spec, prior, kT=kT, gamma=target["gamma_stress"],
                          cutoff=list_cutoff, prior_terms=[prior_term], strain_sums=strain_sums),
        Target("cubic_constants", GPA * np.array([target["c11"], target["c12"], target["c44"]]),
               target["gamma_stiffness"], observable=stiffness.observable, features=stiffness.features,
               cutoff=stiffness.cutoff, combine=lambda averages: cubic_constants(stiffness.combine(averages)),
               trajectory_features=stiffness.trajectory_features),
    ]
    schedule = optax.exponential_decay(training["learning_rate"], training["decay_updates"], 0.01)
    optimizer = optax.chain(add_penalty_gradient(uf3_model.smoothness_penalty(spec), training["smoothness"]),
                            optax.adam(schedule, b1=training["adam_b1"], b2=training["adam_b2"]))
    integrator = md.Langevin(sampling["dt"], kT, sampling["friction"])
    trainer = Trainer(potential, targets, optimizer,
                      SamplingConfig(integrator, sampling["n_equilibration"], sampling["n_frames"], sampling["stride"],
                                     skin=sampling["skin"], device=sampling["device"]),
                      box=box, masses=system["mass"], kT=kT, chunk_size=training["chunk_size"],
                      resample_threshold=training["resample_threshold"])
    params = np.zeros(spec.n_free)

    def report(trainer, state, metrics, out_dir):
        """C11, C12, C44 and the stress with their standard errors (GPa), plots, params.npz."""
        from difftre.experiments.diamond.plots import write_plots
        predictions = trainer.predictions_with_errors(state)
        np.savez(out_dir / "params.npz", theta=np.asarray(state.params))
        uf3.save_coefficients(out_dir / "uf3_coefficients.npz", spec, np.asarray(state.params))
        write_plots(out_dir, metrics, targets[1].target / GPA)
        (constants, constant_errors), (stress, stress_errors) = predictions["cubic_constants"], predictions["stress"]
        summary = {f"{name}_gpa": float(value / GPA) for name, value in zip(("c11", "c12", "c44"), constants)}
        summary.update({f"{name}_standard_error_gpa": float(error / GPA)
                        for name, error in zip(("c11", "c12", "c44"), constant_errors)})
        summary.update(stress_gpa=(np.asarray(stress) / GPA).tolist(),
                       stress_standard_error_gpa=(np.asarray(stress_errors) / GPA).tolist(),
                       max_abs_stress_gpa=float(np.abs(stress).max() / GPA))
        return summary

    return Experiment(trainer, params, positions, report, held_out, write_held_out_plots)
