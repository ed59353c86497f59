"""PNG plots of training runs (matplotlib, non-interactive backend)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(path, metrics):
    """Loss and N_eff per update (log scale), and the wall time per update split into its parts."""
    steps = [m["step"] for m in metrics]
    fig, (ax_loss, ax_time) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.semilogy(steps, [m["loss"] for m in metrics], label="loss")
    ax_loss.set_xlabel("update")
    ax_loss.set_ylabel("loss")
    ax_neff = ax_loss.twinx()
    ax_neff.plot(steps, [m["n_eff_before"] for m in metrics], color="tab:orange", lw=0.8, label="N_eff")
    ax_neff.set_ylabel("N_eff before update", color="tab:orange")
    ax_time.bar(steps, [m["sampling_time_s"] for m in metrics], label="sampling", color="tab:blue")
    ax_time.bar(steps, [m["reweighting_time_s"] for m in metrics], bottom=[m["sampling_time_s"] for m in metrics],
                label="reweighting + gradient", color="tab:green")
    ax_time.set_xlabel("update")
    ax_time.set_ylabel("wall time (s)")
    ax_time.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def double_well(out_dir, metrics, density_grid, density_target, x, learned, true, region):
    """density.png, potential.png and training.png for the double-well experiment."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(density_grid, density_target, "k-", label="target")
    if metrics:
        ax.plot(density_grid, metrics[-1]["predictions"]["density"], "r--", label="learned (last update)")
        ax.plot(density_grid, metrics[0]["predictions"]["density"], ":", color="gray", label="initial")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "density.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(x, true, "k-", label="U_DW")
    ax.plot(x, np.where(region, learned, np.nan), "r--", label="learned spline + prior (shifted)")
    ax.set_ylim(true[region].min() - 1, true[region].max() + 3)
    ax.set_xlabel("x")
    ax.set_ylabel("U / kT")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "potential.png", dpi=120)
    plt.close(fig)
    training_curves(out_dir / "training.png", metrics)
