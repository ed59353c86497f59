"""Plots of the diamond experiment."""
import numpy as np

from difftre import plots
from difftre.md import GPA
from difftre.plots import plt


def write_plots(out_dir, metrics, targets_gpa):
    """elastic.png (C11, C12, C44 and the largest stress per update against their targets), training.png."""
    steps = [m["step"] for m in metrics]
    fig, (ax_c, ax_s) = plt.subplots(1, 2, figsize=(10, 3.8))
    constants = np.array([m["predictions"]["cubic_constants"] for m in metrics]) / GPA
    for k, (name, color) in enumerate((("C11", "tab:blue"), ("C12", "tab:orange"), ("C44", "tab:green"))):
        if len(constants):
            ax_c.plot(steps, constants[:, k], ".-", color=color, label=name)
        ax_c.axhline(targets_gpa[k], color=color, lw=0.8, ls="--")
    ax_c.set_xlabel("update")
    ax_c.set_ylabel("GPa (dashed: experiment)")
    ax_c.legend()
    stress = [np.abs(np.asarray(m["predictions"]["stress"])).max() / GPA for m in metrics]
    ax_s.semilogy(steps, stress, "k.-")
    ax_s.set_xlabel("update")
    ax_s.set_ylabel("max |stress| (GPa)")
    plots.save(fig, out_dir / "elastic.png")
    plots.training_curves(out_dir / "training.png", metrics)
