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
