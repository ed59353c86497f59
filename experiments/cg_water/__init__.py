"""Coarse-grained water: 901 one-bead molecules learned from the experimental RDF, ADF and pressure.

Paper-setup section 5 (Thaler & Zavadlav 2021). Units: nm, ps, u, kJ/mol, K. Run with
``difftre run cg-water --out DIR`` (the published sampling: Nose-Hoover chain, 10 + 60 ps,
600 states) or ``--preset quick``. Models: ``spline`` (pair + three-body UF3 splines on the
(sigma/r)^12 prior), ``pair-spline`` (pair term only: DiffTRe as a generalisation of IBI) and
``dimenet`` (DimeNet++ on the same prior, paper-setup section 6; ``--preset dimenet-smoke`` runs a
small network for a few short updates on a CPU).
"""
import math
import pathlib
from importlib import resources

import jax
import numpy as np
import optax

from difftre import bridge, md
from difftre.md import BAR
from difftre.config import (SEED_FIELD, TRAINING_FIELDS, TRAJECTORY_FIELDS, in_range, path_or_empty,
                            positive_up_to, refuse)
from difftre.ibi import IBITrainer
from difftre.io import read_gro
from difftre.models import dimenet, graph, pair_spline, priors, uf3 as uf3_model
from difftre.observables import block_standard_error, nm2_per_ps_to_cm2_per_s, self_diffusion, tetrahedral_order
from difftre.observables import adf, adf_list_cutoff, adf_of_trajectory, bin_centers, load_adf_target, \
    load_rdf_target, pressure, rdf, rdf_list_cutoff, rdf_of_trajectory
from difftre.models.spline import roughness as spline_roughness
from difftre.optim import add_penalty_gradient
from difftre.potential import Potential
from difftre.resources import Demand, check_time_step
from difftre.runner import Experiment
from difftre.states import stored_states
from difftre.observables.density import mass_density
from difftre.trainer import SamplingConfig, Target, Trainer
from difftre import uf3

DEFAULT_CONFIG = pathlib.Path(__file__).with_name("config.toml")
DIFFUSION_SEGMENTS = 4
TETRAHEDRAL_NEIGHBOR_CUTOFF = 0.5   # nm: the lists q takes its 4 nearest neighbours from (a bead with fewer
                                    # inside is left out of q, never given a farther neighbour)
LEG_CAPACITY = 16   # three-body legs per bead held by the JAX features (water has about 6 within 0.37 nm);
                    # a state with more gives NaN features and stops the update, never a silent loss
WIDTH = (int, in_range(1, 1024))    # a DimeNet++ embedding size
LAYERS = (int, in_range(0, 16))     # a DimeNet++ layer count
SCHEMA = {   # nm, ps, u, kJ/mol, K
    "system": {"configuration": (str, path_or_empty(".gro")), "mass": (float, in_range(1.0, 1e4)),
               "temperature": (float, in_range(1.0, 1e5)), **SEED_FIELD},
    "target": {"rdf_bins": (int, in_range(1, 10 ** 4)), "rdf_max": (float, positive_up_to(10.0)),
               "adf_bins": (int, in_range(1, 10 ** 4)), "adf_leg_cutoff": (float, positive_up_to(10.0)),
               "adf_cutoff_width": (float, positive_up_to(1.0)), "pressure_bar": (float, in_range(-1e5, 1e5)),
               "gamma_rdf": (float, in_range(0.0, 1e6)), "gamma_adf": (float, in_range(0.0, 1e6)),
               "gamma_pressure": (float, in_range(0.0, 1e6)), "density": (float, in_range(0.0, 1e5)),
               "gamma_density": (float, in_range(0.0, 1e6))},
    "model": {"kind": (str, {"spline", "pair-spline", "dimenet"}), "prior_epsilon": (float, in_range(1e-3, 1e3)),
              "prior_sigma": (float, in_range(0.01, 1.0)), "pair_cutoff": (float, positive_up_to(10.0)),
              "leg_cutoff": (float, positive_up_to(10.0)), "pair_r_min": (float, in_range(0.0, 10.0)),
              "leg_r_min": (float, in_range(0.0, 10.0)), "pair_intervals": (int, in_range(1, 200)),
              "leg_intervals": (int, in_range(1, 200)), "jk_intervals": (int, in_range(1, 200))},
    "sampling": {"integrator": (str, {"nose-hoover"}), "chain_length": (int, in_range(1, 20)),
                 "tau": (float, positive_up_to(100.0)), "dt": (float, positive_up_to(0.1)),
                 "skin": (float, positive_up_to(1.0)), **TRAJECTORY_FIELDS},
    "training": {"method": (str, {"difftre", "ibi"}), **TRAINING_FIELDS},
    "ibi": {"lam": (float, positive_up_to(10.0)), "pressure_factor": (float, positive_up_to(1.0)),
            "max_amplitude": (float, positive_up_to(100.0)), "r_min": (float, positive_up_to(10.0)),
            "r_max": (float, positive_up_to(10.0)), "spacing": (float, in_range(1e-4, 1.0)),
            "patience": (int, in_range(1, 10 ** 4))},
    "dimenet": {"cutoff": (float, positive_up_to(10.0)), "embed_size": WIDTH, "out_embed_size": WIDTH,
                "int_embed_size": WIDTH, "basis_embed_size": WIDTH, "type_embed_size": WIDTH,
                "n_interactions": (int, in_range(1, 16)), "n_res_before": LAYERS, "n_res_after": LAYERS,
                "n_dense_out": LAYERS, "n_radial": (int, in_range(1, 64)), "n_spherical": (int, in_range(1, 10)),
                "envelope_p": (int, in_range(1, 20)), "init_scale": (float, positive_up_to(100.0))},
}
BLOW_UP_SUSPECTS = {"sampling.dt": "time step", "system.temperature": "temperature", "system.mass": "mass",
                    "model.prior_epsilon": "prior strength", "model.prior_sigma": "prior range",
                    "sampling.tau": "thermostat time"}
PRIOR_REACH_KT = 10.0       # the closest approach: where the (sigma/r)^12 prior reaches 10 kT
MAX_IBI_KNOTS = 10 ** 5
DIMENET_FLOATS_PER_TRIPLET = 25   # per unit of (spherical basis size + interaction widths); XLA's temporaries of
                                  # the CPU loss gradient held 10-25 for chunks of 1-20 states (paper and smoke sizes)


def check_resources(config, source):
    """CG water's cross-field rules (cut-offs against each other and the box, the IBI grid, the thermostat
    time and the time step against the prior's stiffness at its closest approach) and its Demand."""
    system, target, model, sampling, ibi = (config[k] for k in ("system", "target", "model", "sampling", "ibi"))
    positions, box = starting_configuration(system["configuration"])
    rules = (("model.prior_sigma", model["prior_sigma"] < model["pair_cutoff"], "below model.pair_cutoff"),
             ("target.adf_cutoff_width", target["adf_cutoff_width"] < target["adf_leg_cutoff"],
              "below target.adf_leg_cutoff"),
             ("sampling.tau", sampling["tau"] >= 10 * sampling["dt"], "at least 10 x sampling.dt"),
             ("model.pair_r_min", model["pair_r_min"] < model["pair_cutoff"], "below model.pair_cutoff"),
             ("model.leg_r_min", model["leg_r_min"] < model["leg_cutoff"], "below model.leg_cutoff"),
             ("ibi.r_max", ibi["r_max"] > ibi["r_min"] + ibi["spacing"], "above ibi.r_min + ibi.spacing"),
             ("target.density", target["density"] == 0 or sampling["barostat_interval"] > 0,
              "0 without a barostat (sampling.barostat_interval = 0: the density is fixed)"))
    if uses_dimenet(config):
        rules += (("training.smoothness", config["training"]["smoothness"] == 0,
                   "0 for model.kind = 'dimenet' (the penalty is on spline coefficients)"),
                  ("sampling.device", sampling["device"] == "cpu",
                   "'cpu' for model.kind = 'dimenet' (the GPU sampler takes a JAX model only as its sole term, "
                   "without a neighbour list)"))
    for field, ok, rule in rules:
        if not ok:
            section, name = field.split(".")
            raise refuse(source, field, config[section][name], rule)
    n_knots = round((ibi["r_max"] - ibi["r_min"]) / ibi["spacing"]) + 1
    if n_knots > MAX_IBI_KNOTS:
        raise refuse(source, "ibi.spacing", ibi["spacing"], f"at least (ibi.r_max - ibi.r_min) / {MAX_IBI_KNOTS}")
    kT = md.kT_from_temperature(system["temperature"])
    reach = model["prior_sigma"] * (model["prior_epsilon"] / (PRIOR_REACH_KT * kT)) ** (1 / 12)
    pair_stiffness = 156 * PRIOR_REACH_KT * kT / reach ** 2           # U'' of eps (sigma/r)^12 there
    check_time_step(source, sampling["dt"], system["mass"], kT, 2 * pair_stiffness, sampling["skin"],
                    "system.mass, system.temperature, model.prior_epsilon and model.prior_sigma")
    if config["training"]["method"] == "ibi":
        potential_cutoff, what = ibi["r_max"], "ibi.r_max + sampling.skin"
    elif model["kind"] == "pair-spline":
        potential_cutoff, what = model["pair_cutoff"], "model.pair_cutoff + sampling.skin"
    elif model["kind"] == "dimenet":
        potential_cutoff, what = max(config["dimenet"]["cutoff"], model["pair_cutoff"]), \
            "max(dimenet.cutoff, model.pair_cutoff) + sampling.skin"
    else:
        potential_cutoff, what = max(model["pair_cutoff"], model["leg_cutoff"]), \
            "max(model.pair_cutoff, model.leg_cutoff) + sampling.skin"
    rdf_centers = bin_centers(0.0, target["rdf_max"], target["rdf_bins"])
    cutoffs = {what: potential_cutoff + sampling["skin"],
               "target.rdf_max + 8 bin widths": rdf_list_cutoff(rdf_centers),
               "target.adf_leg_cutoff + 8 x target.adf_cutoff_width":
                   adf_list_cutoff(target["adf_leg_cutoff"], target["adf_cutoff_width"])}
    triplets = model["leg_intervals"] * (model["leg_intervals"] + 1) // 2 * model["jk_intervals"]
    features = target["rdf_bins"] + target["adf_bins"] + (triplets + model["pair_intervals"]
                                                          if model["kind"] == "spline" else 0)
    working = ((dimenet_chunk_bytes(config, len(positions), box),
                "training.chunk_size, dimenet.cutoff and the [dimenet] sizes") if uses_dimenet(config) else (0, ""))
    return Demand(len(positions), tuple(box), "system.configuration", cutoffs, values_per_state=features,
                  working_bytes=working[0], working_fields=working[1])


def uses_dimenet(config):
    """Whether the potential trained is DimeNet++ (IBI trains a tabulated pair potential whatever the model)."""
    return config["training"]["method"] == "difftre" and config["model"]["kind"] == "dimenet"


def dimenet_chunk_bytes(config, n_particles, box):
    """Estimated bytes of the largest temporary of a DimeNet++ update: one chunk of states through the
    parameter gradient of the pressure (a second derivative of the energy), which holds
    DIMENET_FLOATS_PER_TRIPLET per triplet of the network's widths, for the triplets at the mean density
    (box in nm)."""
    net, sampling = config["dimenet"], config["sampling"]
    _, triplets = mean_density_graph_counts(n_particles, box, net["cutoff"])
    floats = DIMENET_FLOATS_PER_TRIPLET * (net["n_spherical"] * net["n_radial"]
                                           + net["n_interactions"] * (net["basis_embed_size"]
                                                                      + net["int_embed_size"]))
    itemsize = 4 if sampling["dtype"] == "float32" else 8
    return int(config["training"]["chunk_size"] * triplets * floats * itemsize)


def mean_density_graph_counts(n_particles, box, cutoff):
    """(edges, triplets) of DimeNet++'s graph at the mean density: N deg and N deg (deg - 1), deg the
    neighbours within ``cutoff`` (nm) of a uniform fluid in ``box`` (nm)."""
    degree = n_particles / math.prod(box) * 4 / 3 * math.pi * cutoff ** 3
    return n_particles * degree, n_particles * degree * max(degree - 1, 0)


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


def water_prior(model, dtype):
    """The prior epsilon (sigma/r)^12 cut at the pair cut-off: (JAX energy, Numba term)."""
    prior_args = (model["prior_epsilon"], model["prior_sigma"], model["pair_cutoff"])
    return priors.repulsive(*prior_args, dtype=dtype), md.repulsive(*prior_args)


def potential_and_params(model, dtype):
    """(Potential, initial parameters: zeros, i.e. the prior alone) of the spline models."""
    prior, prior_term = water_prior(model, dtype)
    if model["kind"] == "pair-spline":
        grid = pair_spline.pair_spline_grid(0.2, model["pair_cutoff"], 3 * model["pair_intervals"] + 1)
        return tabulated_pair_potential(grid, prior, prior_term), np.zeros(grid.n - 1, dtype)
    spec = uf3_spec(model)
    return (uf3.uf3_potential(spec, prior, [prior_term], cutoff=model["pair_cutoff"], leg_capacity=LEG_CAPACITY,
                              dtype=dtype),
            np.zeros(spec.n_free, dtype))


def dimenet_potential_and_params(model, net, positions, box, seed, dtype):
    """(Potential, initial parameters) of DimeNet++ (the [dimenet] section ``net``) plus the (sigma/r)^12 prior.

    The sampler runs the prior compiled and the network's forces through ``bridge.jax_force_term``. The
    parameters are the network's random initialisation from ``seed``. The sparse graph's edge and triplet
    capacities hold 25 % more than the larger of the starting configuration's counts (positions (N, 3) nm,
    box (3,) nm) and the mean density's (a repulsive fluid packs a short cut-off's shell more densely than
    water); a state needing more makes the energy and forces NaN, which stops the sampler
    (md.SimulationError) or the update (FloatingPointError), never a silent truncation.
    """
    hyper = {name: value for name, value in net.items() if name != "cutoff"}
    prior, prior_term = water_prior(model, dtype)
    start = stored_states(np.asarray(positions, dtype)[None], box, net["cutoff"])
    capacities = [max(fitted, graph.grown_capacity(math.ceil(mean)))
                  for fitted, mean in zip(graph.graph_capacities(start, net["cutoff"]),
                                          mean_density_graph_counts(len(positions), box, net["cutoff"]))]
    network = dimenet.dimenet(net["cutoff"], *capacities, **hyper)

    def energy(params, state):
        return network(params, state) + prior(params, state)

    def force_field(params):
        return md.ForceField([prior_term, bridge.jax_force_term(network, params, cutoff=net["cutoff"])])

    params = dimenet.init_dimenet(jax.random.PRNGKey(seed), dtype, **hyper)
    return Potential(energy, force_field, cutoff=max(net["cutoff"], model["pair_cutoff"])), params


def smoothness_penalty(model):
    """The roughness penalty of the spline model's coefficients (None for DimeNet++)."""
    if model["kind"] == "spline":
        return uf3_model.smoothness_penalty(uf3_spec(model))
    return spline_roughness if model["kind"] == "pair-spline" else None


def saved_params(params):
    """{name: array} for params.npz: ``theta`` (spline coefficients), or DimeNet++'s weights by path."""
    if not isinstance(params, dict):
        return {"theta": np.asarray(params)}
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf) for path, leaf in leaves}


def uf3_spec(model):
    """The UF3Spec of the model section (pair, leg and r_jk = 2 x leg axes)."""
    return uf3_model.UF3Spec(pair_cutoff=model["pair_cutoff"], leg_cutoff=model["leg_cutoff"],
                             n_pair=model["pair_intervals"], n_leg=model["leg_intervals"], n_jk=model["jk_intervals"],
                             pair_r_min=model["pair_r_min"], leg_r_min=model["leg_r_min"])


def pressure_target(potential, model, method, target, gamma, kT, dtype):
    """The pressure target: through the UF3 model's virial features (computed once per trajectory)
    for the spline model, through the strain derivative of the energy otherwise."""
    if method == "difftre" and model["kind"] == "spline":
        prior, prior_term = water_prior(model, dtype)
        return uf3.pressure_target("pressure", target, uf3_spec(model), prior, kT=kT, leg_capacity=LEG_CAPACITY,
                                   gamma=gamma, cutoff=model["pair_cutoff"], prior_terms=[prior_term])
    return Target("pressure", np.array(target), gamma, observable=lambda p, state: pressure(potential.energy, p,
                                                                                             state, kT=kT))


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
    elif model["kind"] == "dimenet":
        potential, params = dimenet_potential_and_params(model, config["dimenet"], positions, box, system["seed"],
                                                         dtype)
    else:
        potential, params = potential_and_params(model, dtype)
    rdf_centers = bin_centers(0.0, target["rdf_max"], target["rdf_bins"])
    adf_centers = bin_centers(0.0, np.pi, target["adf_bins"])
    leg, width = target["adf_leg_cutoff"], target["adf_cutoff_width"]
    targets = [
        Target("rdf", load_rdf_target(rdf_centers), target["gamma_rdf"],
               features=lambda state: rdf(state, rdf_centers), cutoff=rdf_list_cutoff(rdf_centers),
               trajectory_features=lambda frames, box, _: rdf_of_trajectory(frames, box, rdf_centers)),
        Target("adf", load_adf_target(adf_centers), target["gamma_adf"],
               features=lambda state: adf(state, adf_centers, r_cut=leg, cutoff_width=width),
               cutoff=adf_list_cutoff(leg, width),
               trajectory_features=lambda frames, box, _: adf_of_trajectory(frames, box, adf_centers, r_cut=leg,
                                                                             cutoff_width=width)),
        pressure_target(potential, model, training["method"], target["pressure_bar"] * BAR,
                        target["gamma_pressure"], kT, dtype),
    ]
    if target["density"] > 0:
        targets.append(Target("density", np.asarray(target["density"]), target["gamma_density"],
                              features=lambda state: mass_density(state, system["mass"])))
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
        adam = optax.adam(schedule, b1=training["adam_b1"], b2=training["adam_b2"])
        penalty = smoothness_penalty(model)
        optimizer = adam if penalty is None else optax.chain(add_penalty_gradient(penalty, training["smoothness"]),
                                                             adam)
        trainer = Trainer(potential, targets, optimizer, sampling_config, box=box, masses=system["mass"], kT=kT,
                          chunk_size=training["chunk_size"], resample_threshold=training["resample_threshold"])

    def report(trainer, state, metrics, out_dir):
        """Predictions with standard errors, MSEs against experiment, plots, params.npz."""
        from difftre.experiments.cg_water.plots import write_plots
        predictions = trainer.predictions_with_errors(state)
        np.savez(out_dir / "params.npz", **saved_params(state.params))
        write_plots(out_dir, metrics, rdf_centers, adf_centers, targets)
        if training["method"] == "difftre" and model["kind"] == "spline":
            from difftre.experiments.cg_water.lammps import export_lammps
            from difftre.experiments.cg_water.plots import write_model_plot
            write_model_plot(out_dir, uf3_spec(model), np.asarray(state.params), model["prior_epsilon"],
                             model["prior_sigma"])
            export_lammps(out_dir / "lammps", config, np.asarray(state.params),
                          positions=np.asarray(state.sampler_state.positions),
                          velocities=np.asarray(state.sampler_state.velocities))
        (rdf_value, rdf_error), (adf_value, adf_error) = predictions["rdf"], predictions["adf"]
        p_value, p_error = predictions["pressure"]
        return {"rdf_mse": float(np.mean((rdf_value - targets[0].target) ** 2)),
                "adf_mse": float(np.mean((adf_value - targets[1].target) ** 2)),
                "rdf_max_standard_error": float(rdf_error.max()), "adf_max_standard_error": float(adf_error.max()),
                "pressure_bar": float(p_value) / BAR, "pressure_standard_error_bar": float(p_error) / BAR}

    return Experiment(trainer, params, positions, report, held_out)


def held_out(trainer, state):
    """Observables not trained on, from the stored trajectory: the tetrahedral order q (Errington &
    Debenedetti) and the self-diffusion coefficient D (from the Nose-Hoover trajectory, whose dynamics
    no stochastic thermostat disturbs), each with its standard error (block averaging for q; the spread
    of D over 4 trajectory segments), beside experiment's D = 2.3e-5 cm^2/s."""
    positions = np.asarray(state.states.positions, np.float64)
    per_state_q = jax.jit(jax.vmap(tetrahedral_order))
    chunk = trainer.chunk_size or len(positions)
    q = np.concatenate([np.asarray(per_state_q(stored_states(positions[a:a + chunk], trainer.box,
                                                             TETRAHEDRAL_NEIGHBOR_CUTOFF)), np.float64)
                        for a in range(0, len(positions), chunk)])
    frame_dt = trainer.sampling.integrator.dt * trainer.sampling.stride
    segments = np.array_split(positions, DIFFUSION_SEGMENTS)
    span = len(segments[-1]) * frame_dt
    diffusion = [nm2_per_ps_to_cm2_per_s(self_diffusion(segment, frame_dt, (0.1 * span, 0.4 * span)))
                 for segment in segments]
    return {"tetrahedral_order": float(q.mean()), "tetrahedral_order_standard_error": float(block_standard_error(q)),
            "self_diffusion_cm2_per_s": float(np.mean(diffusion)),
            "self_diffusion_standard_error_cm2_per_s": float(np.std(diffusion, ddof=1) / np.sqrt(len(diffusion))),
            "self_diffusion_experiment_cm2_per_s": 2.3e-5}
