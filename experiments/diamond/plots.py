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


def write_phonon_dos_plot(out_dir, held_out):
    """phonon_dos.png: the DOS at the prior (theta = 0) and at the learned parameters, with +-1 standard
    error bands and their peaks, from ``held_out``'s "phonon_dos" (``validation.held_out``)."""
    dos = held_out["phonon_dos"]
    frequency = np.asarray(dos["frequency_thz"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, color, style in (("prior", "tab:gray", "--"), ("learned", "tab:red", "-")):
        values, errors = np.asarray(dos[label]["dos_per_thz"]), np.asarray(dos[label]["standard_error_per_thz"])
        peaks = ", ".join(f"{p:.1f}" for p in dos[label]["peaks_thz"])
        ax.plot(frequency, values, style, color=color, label=f"{label} (peaks {peaks} THz)")
        ax.fill_between(frequency, values - errors, values + errors, color=color, alpha=0.3, lw=0)
    ax.set_xlabel("frequency (THz)")
    ax.set_ylabel("phonon DOS (1/THz)")
    ax.legend()
    plots.save(fig, out_dir / "phonon_dos.png")
