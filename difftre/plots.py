"""PNG plots of training runs (matplotlib, non-interactive backend)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    save(fig, path)


def save(fig, path):
    """Lay out, write as PNG (120 dpi) and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
