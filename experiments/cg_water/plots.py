"""Plots of the coarse-grained water experiment."""
from difftre import plots
from difftre.md import BAR
from difftre.plots import plt


def write_plots(out_dir, metrics, rdf_centers, adf_centers, targets):
    """structure.png (RDF and ADF: experiment, first and last update), pressure.png, training.png."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name, x, label in ((axes[0], "rdf", rdf_centers, "r (nm)"), (axes[1], "adf", adf_centers, "angle (rad)")):
        target = next(t for t in targets if t.name == name).target
        ax.plot(x, target, "k-", label="experiment")
        if metrics:
            ax.plot(x, metrics[0]["predictions"][name], ":", color="gray", label="initial")
            ax.plot(x, metrics[-1]["predictions"][name], "r--", label="learned (last update)")
        ax.set_xlabel(label)
        ax.set_ylabel(name.upper())
        ax.legend()
    plots.save(fig, out_dir / "structure.png")
    fig, ax = plt.subplots(figsize=(5, 3.8))
    target = float(next(t for t in targets if t.name == "pressure").target) / BAR
    ax.plot([m["step"] for m in metrics], [m["predictions"]["pressure"] / BAR for m in metrics], "b.-",
            label="reweighted prediction")
    ax.axhline(target, color="k", lw=0.8, label="target")
    ax.set_yscale("symlog", linthresh=100)
    ax.set_xlabel("update")
    ax.set_ylabel("pressure (bar)")
    ax.legend()
    plots.save(fig, out_dir / "pressure.png")
    plots.training_curves(out_dir / "training.png", metrics)


def write_model_plot(out_dir, spec, theta, prior_epsilon, prior_sigma):
    """model.png: the learned pair term V2(r) + eps (sigma/r)^12 beside the prior alone (kJ/mol), and
    slices of the three-body term V3(r, r, r_jk) over the angle between two equal legs r."""
    import numpy as np
    from difftre import uf3
    fig, (ax_pair, ax_triplet) = plt.subplots(1, 2, figsize=(10, 3.8))
    r = np.linspace(max(0.24, spec.pair_r_min), spec.pair_cutoff, 300)
    prior = prior_epsilon * (prior_sigma / r) ** 12
    ax_pair.plot(r, prior, "k:", label="prior")
    ax_pair.plot(r, prior + uf3.pair_term(spec, theta, r), "r-", label="prior + learned pair term")
    ax_pair.set_ylim(-3.0, 10.0)
    ax_pair.set_xlabel("r (nm)")
    ax_pair.set_ylabel("pair energy (kJ/mol)")
    ax_pair.legend()
    angle = np.linspace(np.radians(40.0), np.pi, 200)
    for leg in (0.27, 0.29, 0.31):
        if spec.leg_r_min <= leg < spec.leg_cutoff:
            v3 = uf3.three_body_term(spec, theta, leg, leg, 2.0 * leg * np.sin(angle / 2.0))
            ax_triplet.plot(np.degrees(angle), v3, label=f"legs {leg} nm")
    ax_triplet.set_xlabel("angle j-i-k (degrees)")
    ax_triplet.set_ylabel("three-body energy (kJ/mol)")
    ax_triplet.legend()
    plots.save(fig, out_dir / "model.png")
