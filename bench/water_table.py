"""The CG-water comparison table (Markdown) from trained and evaluated run folders.

Per run folder: the method and model (config.json), updates and training wall time (summary.json),
mean time per re-sampled update (metrics.jsonl), and from evaluation.json (``difftre evaluate RUN
--time PS``) the RDF and ADF MSE against experiment, the pressure, the tetrahedral order q and the
self-diffusion coefficient D, each with its standard error; with --plot PNG also the evaluated RDF and
ADF of every run against experiment. Usage:

    python bench/water_table.py RUN_DIR [RUN_DIR ...] [--plot comparison.png]
"""
import json
import pathlib
import sys

import numpy as np

from difftre.md import BAR


def row(run_dir):
    run_dir = pathlib.Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resampled = [m["wall_time_s"] for m in metrics if m["resampled"]]
    targets, held_out = evaluation["targets"], evaluation["held_out"]
    rdf_error = np.max(targets["rdf"]["standard_error"])
    adf_error = np.max(targets["adf"]["standard_error"])
    pressure = targets["pressure"]
    return (f"| {method(run_dir)} | {summary['n_updates']} | {targets['rdf']['mse']:.3g} (max SE {rdf_error:.2g}) "
            f"| {targets['adf']['mse']:.3g} (max SE {adf_error:.2g}) "
            f"| {pressure['prediction'] / BAR:.0f} +- {pressure['standard_error'] / BAR:.0f} "
            f"| {held_out['tetrahedral_order']:.3f} +- {held_out['tetrahedral_order_standard_error']:.3f} "
            f"| {held_out['self_diffusion_cm2_per_s'] * 1e5:.2f} +- "
            f"{held_out['self_diffusion_standard_error_cm2_per_s'] * 1e5:.2f} "
            f"| {np.mean(resampled):.0f} | {summary['training_wall_time_s'] / 60:.0f} | {evaluation['time_ps'] / 1000:g} |")


def method(run_dir):
    config = json.loads((pathlib.Path(run_dir) / "config.json").read_text())["config"]
    return "IBI" if config["training"]["method"] == "ibi" else f"DiffTRe {config['model']['kind']}"


def plot(path, run_dirs):
    """RDF and ADF of each run's evaluation beside experiment."""
    from difftre.observables import bin_centers, load_adf_target, load_rdf_target
    from difftre.plots import plt, save
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name, upper, load, label in ((axes[0], "rdf", 1.0, load_rdf_target, "r (nm)"),
                                         (axes[1], "adf", np.pi, load_adf_target, "angle (rad)")):
        curves = {method(d): json.loads((pathlib.Path(d) / "evaluation.json").read_text())["targets"][name]["prediction"]
                  for d in run_dirs}
        centers = bin_centers(0.0, upper, len(next(iter(curves.values()))))
        ax.plot(centers, load(centers), "k-", lw=2, label="experiment")
        for label_run, values in curves.items():
            ax.plot(centers, values, "--", label=label_run)
        ax.set_xlabel(label)
        ax.set_ylabel(name.upper())
        ax.legend()
    save(fig, path)


def main(run_dirs):
    print("| method | updates | RDF MSE | ADF MSE | pressure (bar) | q | D (1e-5 cm^2/s) "
          "| s per re-sampled update | training (min) | check (ns) |")
    print("|---|---:|---|---|---|---|---|---:|---:|---:|")
    for run_dir in run_dirs:
        print(row(run_dir))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--plot" in arguments:
        at = arguments.index("--plot")
        plot(arguments[at + 1], arguments[:at] + arguments[at + 2:])
        del arguments[at:at + 2]
    main(arguments)
