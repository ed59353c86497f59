"""Plots of the double-well experiment."""
import numpy as np

from difftre import plots
from difftre.plots import plt


def write_plots(out_dir, metrics, density_grid, density_target, x, learned, true, region):
    """density.png, potential.png and training.png of a double-well run."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(density_grid, density_target, "k-", label="target")
    if metrics:
        ax.plot(density_grid, metrics[-1]["predictions"]["density"], "r--", label="learned (last update)")
        ax.plot(density_grid, metrics[0]["predictions"]["density"], ":", color="gray", label="initial")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend()
    plots.save(fig, out_dir / "density.png")
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(x, true, "k-", label="U_DW")
    ax.plot(x, np.where(region, learned, np.nan), "r--", label="learned spline + prior (shifted)")
    ax.set_ylim(true[region].min() - 1, true[region].max() + 3)
    ax.set_xlabel("x")
    ax.set_ylabel("U / kT")
    ax.legend()
    plots.save(fig, out_dir / "potential.png")
    plots.training_curves(out_dir / "training.png", metrics)
