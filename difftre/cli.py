"""The ``difftre`` command line.

    difftre run double-well --out runs/double_well [--config FILE] [--set SECTION.FIELD=VALUE] [--resume]
    difftre experiments
    difftre bench md --potential lj --n 1000 --steps 2000 --json
    difftre bench md --potential sw --n 1000 --steps 1000 --engine lammps --json
    difftre bench grad --json
"""
import argparse
import json
import sys


def _int_at_least(minimum):
    """argparse type: an integer >= minimum (argparse prefixes the argument's name to the error)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {value}")
    return value


def build_parser():
    from difftre.benchmarks import md_speed

    parser = argparse.ArgumentParser(prog="difftre", description="Differentiable trajectory reweighting tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    bench_parser = commands.add_parser(
        "bench", help="benchmarks", description="Benchmarks: MD speed against JAX MD and LAMMPS (md), DiffTRe "
                                                "against direct AD through the simulation (grad).")
    workloads = bench_parser.add_subparsers(dest="workload", metavar="WORKLOAD")
    workloads.required = True
    md = workloads.add_parser(
        "md", help="MD steps per second (difftre, or a peer: JAX MD, LAMMPS)",
        description="Time NVE velocity-Verlet MD of an LJ liquid (reduced units, rho*=0.8442, rc=2.5, skin 0.3, "
                    "dt=0.005, T*=0.72) or Stillinger-Weber diamond silicon (N = 8 n^3, dt = 1 fs, 300 K). "
                    "The lattice is equilibrated by a difftre Langevin run first (not timed); the timed run "
                    "follows a warm-up run; compile time is reported separately.")
    md.add_argument("--potential", choices=md_speed.POTENTIALS, required=True,
                    help="lj: Lennard-Jones liquid; sw: Stillinger-Weber diamond silicon")
    md.add_argument("--n", type=_int_at_least(1), required=True,
                    help="number of atoms (lj: N >= 149, so that the box exceeds 2 (cut-off + skin); "
                         "sw: N = 8 n^3 >= 64)")
    md.add_argument("--steps", type=_int_at_least(1), required=True, help="timed steps")
    md.add_argument("--dtype", choices=tuple(md_speed.DTYPES), default="float64",
                    help="floating-point precision of difftre's run (the peers run float64)")
    md.add_argument("--device", choices=md_speed.DEVICES, default="cpu",
                    help="cpu (Numba kernels) or cuda (difftre.md_cuda)")
    md.add_argument("--replicas", type=_int_at_least(1), default=1,
                    help="independent replicas (CPU: run one after another; steps/s counts all of them)")
    md.add_argument("--engine", choices=md_speed.ENGINES, default="difftre",
                    help="difftre (default) or a peer on the same system: jaxmd, lammps (float64, CPU)")
    md.add_argument("--equilibration", type=_int_at_least(0),
                    default=md_speed.DEFAULT_EQUILIBRATION, help="untimed difftre Langevin steps from the lattice")
    md.add_argument("--warmup", type=_int_at_least(0), default=None,
                    help="untimed steps before the timed run (default: min(steps, 100); jaxmd: one chunk)")
    md.add_argument("--chunk", type=_int_at_least(1), default=None,
                    help="jaxmd only: steps per jit-compiled fori_loop (default min(steps, 100))")
    md.add_argument("--seed", type=int, default=0,
                    help="random seed of the initial velocities and the equilibration noise (default 0)")
    md.add_argument("--json", action="store_true", help="print one JSON object (default: a one-line summary)")
    md.set_defaults(handler=_bench_md, owner=md)

    grad = workloads.add_parser(
        "grad", help="DiffTRe against direct reverse-mode AD through the MD (paper's speed-up study)",
        description="Double well with a 1-100-100-1 MLP: time of one gradient and of one whole update by "
                    "DiffTRe and by direct AD, memory of both, gradient norms against trajectory length.")
    grad.add_argument("--n-particles", type=_int_at_least(1), default=1000,
                      help="particles of the timed runs (default 1000; the gradient-norm study uses --norm-particles)")
    grad.add_argument("--repeats", type=_int_at_least(1), default=3,
                      help="timed repetitions of each measurement; the median is reported (default 3; "
                           "the DiffTRe gradient alone at least 5)")
    grad.add_argument("--lengths", type=_int_at_least(2), nargs="+", default=[5, 10, 15, 20, 25, 30, 35, 40],
                      help="retained states for the gradient-norm study (one state has weight 1 whatever the "
                           "parameters, so no reweighting gradient)")
    grad.add_argument("--norm-particles", type=_int_at_least(1), default=100,
                      help="particles in the gradient-norm study")
    grad.add_argument("--draws", type=_int_at_least(1), default=8,
                      help="independent trajectories per length in the gradient-norm study")
    grad.add_argument("--dt", type=_positive_float, default=1e-3, help="Langevin time step (the paper's 1e-3)")
    grad.add_argument("--friction", type=_positive_float, default=0.1, help="Langevin friction (the paper's 0.1)")
    grad.add_argument("--seed", type=int, default=0,
                      help="random seed of the MLP's initial weights, the starts and the noise (default 0)")
    grad.add_argument("--json", action="store_true", help="print one JSON object (default: indented JSON)")
    grad.set_defaults(handler=_bench_grad, owner=grad)

    run = commands.add_parser(
        "run", help="train a potential with DiffTRe (an experiment, see 'difftre experiments')",
        description="Train an experiment: its default configuration, merged with --config and --set, validated, "
                    "then trained into --out (metrics.jsonl, checkpoint.npz after every update, summary.json, "
                    "config.json, plots). Ctrl-C leaves the last complete update's checkpoint; --resume continues.")
    run.add_argument("experiment", metavar="NAME|CONFIG.toml",
                     help="an experiment name, or a TOML file naming one (top-level experiment = \"NAME\") whose "
                          "fields replace the defaults")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--preset", default=None,
                     help="a preset of the experiment (a partial configuration in its folder, e.g. quick)")
    run.add_argument("--config", default=None, help="TOML file with the fields to change (a partial configuration)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="change one field (a TOML value); repeatable")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    run.add_argument("--seed", type=_int_at_least(0), default=None, help="the same as --set system.seed=S")
    run.add_argument("--updates", type=_int_at_least(0), default=None,
                     help="the same as --set training.n_updates=N (also allowed with --resume)")
    run.add_argument("--device", choices=["cpu", "cuda"], default=None, help="the same as --set sampling.device=D")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--write-trajectory", action="store_true",
                     help="also write the last reference trajectory as --out/trajectory.extxyz (ASE)")
    run.add_argument("--debug", action="store_true",
                     help="show the traceback of an error (default: one line naming the file, field or update)")
    run.set_defaults(handler=_run_experiment, owner=run)

    evaluate = commands.add_parser(
        "evaluate", help="validate a trained run on a new, longer trajectory",
        description="Sample --time ps with the learned parameters (the run's sampling settings) and write "
                    "RUN_DIR/evaluation.json: every target's prediction with its standard error and MSE, and the "
                    "experiment's held-out observables.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'difftre run'")
    evaluate.add_argument("--time", type=_positive_float, required=True, help="trajectory length in ps (1 ns: 1000)")
    evaluate.add_argument("--quiet", action="store_true", help="no compile note")
    evaluate.add_argument("--debug", action="store_true", help="a traceback instead of a one-line error")
    evaluate.set_defaults(handler=_evaluate_run, owner=evaluate)

    listing = commands.add_parser("experiments", help="list the experiments 'difftre run' knows",
                                  description="List the experiments with their one-line descriptions.")
    listing.set_defaults(handler=_list_experiments, owner=listing)
    return parser


def expected_failures():
    """The errors of bad input or of a run that cannot go on, each reported as one line (exit status 2):
    configuration and resource refusals, input files, the run folder, a simulation blow-up, a
    non-finite loss or parameters, a refused allocation."""
    from difftre import md, runner, trainer
    from difftre.config import ConfigError
    from difftre.io import InputFileError

    return (ConfigError, InputFileError, runner.RunFolderError, md.SimulationError, trainer.BlowUpError,
            FloatingPointError, MemoryError)


def _quiet_compiles(args):
    """--quiet: no "compiling kernels..." note either."""
    if args.quiet:
        from difftre.kernels.jit import compile_notice
        compile_notice(False)


def _reporting_failures(action, args, parser):
    """action(), or for an expected failure one line on stderr and exit status 2 (the traceback with --debug)."""
    try:
        return action()
    except expected_failures() as error:
        if args.debug:
            raise
        parser.exit(2, f"{parser.prog}: error: {_one_line(error)}\n")


def _one_line(error):
    """The error's message on one line (its type where it has none, as MemoryError often)."""
    text = " ".join(str(error).split())
    return text if text else f"{type(error).__name__} (no message)"


def _run_experiment(args, parser):
    from difftre import runner

    _quiet_compiles(args)

    def train():
        overrides = dict(runner.parse_override(text) for text in args.overrides)
        for key, value in (("system.seed", args.seed), ("training.n_updates", args.updates),
                           ("sampling.device", args.device)):
            if value is not None:
                overrides[key] = value
        return runner.run(args.experiment, args.out, config_file=args.config, overrides=overrides,
                          resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                          write_trajectory=args.write_trajectory, preset=args.preset)

    try:
        summary = _reporting_failures(train, args, parser)
    except KeyboardInterrupt:
        print(f"interrupted; {args.out}/checkpoint.npz holds the last complete update (continue with --resume)",
              file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate_run(args, parser):
    from difftre import runner
    _quiet_compiles(args)
    evaluation = _reporting_failures(lambda: runner.evaluate(args.run_dir, args.time), args, parser)
    print(json.dumps(evaluation, indent=2))
    return 0


def _list_experiments(args, parser):
    from difftre import runner

    for name, description in sorted(runner.available().items()):
        print(f"{name:16s} {description}")
    return 0


def _bench_grad(args, parser):
    from difftre import speedup

    result = speedup.run(n_particles=args.n_particles, lengths=tuple(args.lengths), seed=args.seed,
                         repeats=args.repeats, norm_particles=args.norm_particles, draws=args.draws, dt=args.dt,
                         friction=args.friction, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _bench_md(args, parser):
    from difftre.benchmarks import BenchmarkUnavailable, md_speed

    try:
        result = md_speed.bench_md(potential=args.potential, n=args.n, steps=args.steps, dtype=args.dtype,
                                   device=args.device, replicas=args.replicas, engine=args.engine,
                                   equilibration=args.equilibration, warmup=args.warmup, seed=args.seed,
                                   chunk=args.chunk)
    except BenchmarkUnavailable as error:
        name = "--device" if args.device == "cuda" and args.engine == "difftre" else "--engine"
        parser.error(f"argument {name}: {error}")
    except ValueError as error:   # bench names the argument first: "--n: ..." or "--steps must be ..."
        message = str(error)
        parser.error(f"argument {message}" if message.startswith("--") else message)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['engine']} {result['potential']} N={result['n']} x{result['replicas']} "
              f"{result['dtype']} {result['device']}: {result['steps_per_second']:.1f} steps/s, "
              f"{result['atom_steps_per_second']:.3g} atom-steps/s ({result['steps']} steps in "
              f"{result['wall_seconds']:.2f} s; compile {result['compile_seconds']:.2f} s; "
              f"{result['neighbor_rebuilds']} neighbour rebuilds; T = {result['temperature']:.3g} "
              f"{result['temperature_units']})")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.owner)   # the sub-parser that owns the arguments reports their errors


if __name__ == "__main__":
    sys.exit(main())
