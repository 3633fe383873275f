"""Command line: ``klipjax train``, ``reproduce``, ``plot``, for a trained
policy ``evaluate``, ``export`` and ``render``, and across runs ``compare`` and
``log``.

A shell over the library: parse arguments, call ``klipjax.train``, print. All
printing lives here, and only here are errors turned into exit codes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from klipjax.config import files as config_files
from klipjax.config.checks import ConfigError, suggest

console = Console(stderr=True, soft_wrap=True)  # messages stay one line
EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit code 2."""


def _show_library_messages() -> None:
    """The library's messages (resuming, stopping) as plain lines on stderr."""
    logger = logging.getLogger("klipjax")
    if not logger.handlers:
        handler = RichHandler(
            console=console, show_time=False, show_path=False, show_level=False
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _default_out(prefix: str = "") -> Path:
    return Path("runs") / f"{prefix}{dt.datetime.now():%Y%m%d-%H%M%S}"


def _experiment(args) -> tuple[config_files.Experiment, Path, bool]:
    """The sweep to run, its directory, and whether it is a resume."""
    if args.resume is not None:
        if args.config or args.set or args.checkpoint_every is not None:
            raise UsageError(
                "--resume continues a run as configured: give no CONFIG, --set or "
                "--checkpoint-every with it"
            )
        run_dir = Path(args.resume)
        path = run_dir / "config.yaml"
        if not path.is_file():
            raise UsageError(
                f"--resume {str(run_dir)!r} is not a run directory (no config.yaml)"
            )
        try:
            return config_files.load(path), run_dir, True
        except ConfigError as err:
            raise UsageError(f"{run_dir}/config.yaml: {err}") from None
    overrides = list(args.set or [])
    if args.checkpoint_every is not None:
        overrides.append(f"checkpoint_every={args.checkpoint_every}")
    experiment = config_files.load(args.config, overrides)
    return experiment, Path(args.out) if args.out else _default_out(), False


def run_experiment(
    experiment: config_files.Experiment, out: Path, resume: bool, log=None
):
    """Trains one sweep into ``out`` with a progress bar (``log``: trackers to
    write every run to); returns its ``Results``."""
    from klipjax.engine.training import train  # jax only after the arguments parse

    config = experiment.config
    console.print(
        f"[bold]klipjax[/] {config.env}: {len(experiment.hparams.seed)} runs x "
        f"{config.num_updates} updates ({config.env_steps:,} env steps each) -> {out}",
        highlight=False,
    )
    return train(
        config,
        experiment.hparams,
        out_dir=out,
        resume=resume,
        progress=True,
        log=log,
        **experiment.options,
    )


def _exit_code(results) -> int:
    return 0 if results.complete else 128 + (results.stopped_by or 2)


def _start_distributed(args) -> None:
    """With ``--distributed`` (or manual coordinates), joins the other processes
    before anything touches a device; process 0 alone prints from then on."""
    manual = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(value is None for value in manual):
        return
    if args.out is None and getattr(args, "resume", None) is None:
        raise UsageError(
            "--distributed needs --out DIR, a directory every process sees"
        )
    from klipjax.engine import distributed

    distributed.initialize(*manual)
    if not distributed.is_main():
        console.quiet = True
        logging.getLogger("klipjax").setLevel(logging.ERROR)


def train_command(args) -> int:
    _start_distributed(args)
    experiment, out, resume = _experiment(args)
    results = run_experiment(experiment, out, resume, log=args.log)
    if results.complete:
        _print_summary(results, out)
    else:
        console.print(f"resume with: klipjax train --resume {out}", highlight=False)
    return _exit_code(results)


def reproduce_command(args) -> int:
    _start_distributed(args)
    from klipjax.outputs import report

    names = report.expand_groups(args.groups)
    known = list(report.GROUPS) + list(report.ALIASES)
    unknown = [n for n in names if n not in report.GROUPS]
    if unknown:
        raise UsageError(
            f"unknown group {unknown[0]!r}{suggest(unknown[0], known)}; "
            f"choose from {', '.join(known)}"
        )
    out = Path(args.out) if args.out else _default_out("reproduce-")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    for index, name in enumerate(names, 1):
        group_dir = out / name
        console.print(f"[bold]group {index}/{len(names)}: {name}[/]", highlight=False)
        if report.is_complete(group_dir):
            console.print("already complete", highlight=False)
            continue
        resume = (group_dir / "config.yaml").is_file()
        if resume:
            experiment = config_files.load(group_dir / "config.yaml")
        else:
            experiment = report.group_experiment(name, args.quick)
        results = run_experiment(experiment, group_dir, resume, log=args.log)
        if not results.complete:
            console.print(
                f"continue with: klipjax reproduce {' '.join(names)} --out {out}",
                highlight=False,
            )
            return _exit_code(results)
    from klipjax.engine import distributed

    if distributed.is_main():  # the only process that writes files
        path = report.write_report(out, args.quick)
        console.print(f"report: {path}", highlight=False)
    return 0


def _print_summary(results, out: Path) -> None:
    table = Table(title=f"{results.config.env}: final return (last 10% of env steps)")
    table.add_column("setting")
    table.add_column("mean ± std", justify="right")
    table.add_column("seeds", justify="right")
    episodes = results.config.final_eval_episodes
    evaluated = results.settings(results.final_evaluation())
    if episodes:
        table.add_column(f"greedy eval ({episodes} ep.)", justify="right")
    table.add_column("status")
    from klipjax.config.run_table import run_values
    from klipjax.outputs.tables import setting_label

    diverged: dict[str, int] = {}
    for run, status in enumerate(results.status):
        if status == "diverged":
            label = setting_label(run_values(results.hparams, run), results.varying)
            diverged[label] = diverged.get(label, 0) + 1

    def mean_std(setting) -> str:
        mean, std = setting["mean"], setting["std"]
        return "nan" if mean is None or math.isnan(mean) else f"{mean:.1f} ± {std:.1f}"

    for setting, greedy in zip(results.settings(), evaluated):
        label = setting["setting"]
        status = f"{diverged[label]} diverged" if label in diverged else "ok"
        row = [label, mean_std(setting), str(setting["seeds"])]
        table.add_row(*row, *([mean_std(greedy)] if episodes else []), status)
    console.print(table)
    timing = results.timing
    rate = timing["env_steps_per_second"]
    rate_text = f"{rate:,.0f} env-steps/s" if rate else "n/a"
    resumes = timing.get("resumes", 0)
    console.print(
        f"wall {timing['wall_seconds']:.1f} s, compile {timing['compile_seconds']:.1f} s, "
        f"evaluation {timing.get('eval_seconds', 0.0):.1f} s"
        + (f" (summed over {resumes + 1} processes)" if resumes else "")
        + f", {rate_text} (all runs, after compile)",
        highlight=False,
    )
    mem = timing["memory_mb"]
    parallel = timing["parallel_runs"]
    console.print(
        f"memory: program {mem['program']:,.0f} MB, peak host {mem['peak_host']:,.0f} MB"
        + (
            f", peak device {mem['peak_device']:,.0f} MB"
            if "peak_device" in mem
            else ""
        )
        + (
            f"; {parallel} of {results.num_runs} runs at a time"
            if parallel < results.num_runs
            else ""
        ),
        highlight=False,
    )
    gap = results.identity.get("max_param_difference")
    if gap is not None:
        console.print(
            f"ppo_clip vs klip, same seed: largest parameter difference {gap:g}",
            highlight=False,
        )
    console.print(f"results in {out}/", highlight=False)


def plot_command(args) -> int:
    from klipjax.outputs.results import load

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.parquet").is_file():
        raise UsageError(
            f"{str(run_dir)!r} is not a run directory (no metrics.parquet)"
        )
    drawn = load(run_dir).draw(run_dir)
    console.print(f"wrote {', '.join(str(p) for p in drawn)}", highlight=False)
    return 0


def _policy(source: str, run: int | None):
    """The policy in a policy directory, or run ``run`` of a run directory."""
    from klipjax.outputs.results import CONFIG_FILE, load
    from klipjax.policy import POLICY_FILE, load_policy

    path = Path(source)
    if (path / POLICY_FILE).is_file():
        if run is not None:
            raise UsageError(
                f"{source} is a policy directory: it holds one policy, no --run"
            )
        return load_policy(path), {}
    if not (path / CONFIG_FILE).is_file():
        raise UsageError(
            f"{source!r} is neither a run directory ({CONFIG_FILE}) nor a policy "
            f"directory ({POLICY_FILE})"
        )
    results = load(path)
    if run is None:
        if results.num_runs != 1:
            raise UsageError(
                f"{source} holds {results.num_runs} runs: choose one with --run "
                f"(0..{results.num_runs - 1})"
            )
        run = 0
    policy = results.policy(run)
    summary = results.summary_dict()["runs"][run]
    return policy, {"run_dir": str(path.resolve()), **summary}


def evaluate_command(args) -> int:
    from klipjax.engine.evaluation import evaluate

    policy, _ = _policy(args.source, args.run)
    mode = "sampled" if args.stochastic else "greedy"
    returns, lengths = evaluate(
        policy, args.episodes, seed=args.seed, deterministic=not args.stochastic
    )
    console.print(
        f"{policy.spec.env}, {args.episodes} episodes, {mode} actions: return "
        f"{returns.mean():.2f} ± {returns.std():.2f} (min {returns.min():g}, "
        f"max {returns.max():g}), length {lengths.mean():.1f}",
        highlight=False,
    )
    return 0


def export_command(args) -> int:
    policy, source = _policy(args.run_dir, args.run)
    out = policy.save(args.out, source=source)
    console.print(
        f"run {source.get('run', 0)} of {args.run_dir} -> {out}/ "
        "(load it with klipjax.load_policy)",
        highlight=False,
    )
    return 0


def render_command(args) -> int:
    from klipjax.outputs.render import render

    policy, _ = _policy(args.source, args.run)
    drawn = render(
        policy,
        args.out,
        seed=args.seed,
        deterministic=not args.stochastic,
        max_frames=args.max_frames,
    )
    console.print(
        f"episode return {drawn['return']:g} over {drawn['length']} steps; "
        f"{drawn['frames']} frames -> {drawn['path']}",
        highlight=False,
    )
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 1")
    return value


def _add_policy_source(parser) -> None:
    """The policy that ``evaluate`` and ``render`` play, and how it acts."""
    parser.add_argument(
        "source",
        metavar="DIR",
        help="a run directory (with --run) or a policy directory",
    )
    parser.add_argument("--run", type=_non_negative, help="run index in a sweep")
    parser.add_argument("--seed", type=_non_negative, default=0)
    parser.add_argument(
        "--stochastic", action="store_true", help="sample actions (default: greedy)"
    )


def _add_policy_commands(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="play episodes with a trained policy and print its return",
        description="Evaluate a run's final policy, or an exported one, on fresh "
        "episodes of its env.",
    )
    _add_policy_source(evaluate)
    evaluate.add_argument("--episodes", type=_positive, default=100)
    evaluate.set_defaults(handler=evaluate_command)
    export = commands.add_parser(
        "export",
        help="write one run's policy to a self-describing directory",
        description="Export a run's actor, observation normalisation and action "
        "space to POLICY_DIR (policy.json + actor.npz; no pickle).",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--run", type=_non_negative, help="run index in a sweep")
    export.add_argument("--out", required=True, metavar="POLICY_DIR")
    export.set_defaults(handler=export_command)
    render = commands.add_parser(
        "render",
        help="draw one episode of a policy (GIF for gymnax, HTML for Brax)",
        description="Play one greedy episode and draw it: a .gif through gymnax's "
        "visualiser, or a .html through brax's renderer.",
    )
    _add_policy_source(render)
    render.add_argument("--out", required=True, metavar="FILE", help=".gif or .html")
    render.add_argument("--max-frames", type=_positive, help="draw at most N steps")
    render.set_defaults(handler=render_command)


def _score_ranges(texts: list[str] | None) -> dict[str, tuple[float, float]]:
    """``--range ENV=LOW:HIGH`` options as ``{env: (low, high)}``."""
    ranges = {}
    for text in texts or ():
        task, _, bounds = text.rpartition("=")
        low, _, high = bounds.partition(":")
        try:
            ranges[task] = (float(low), float(high))
        except ValueError:
            raise UsageError(f"--range {text!r}: expected ENV=LOW:HIGH") from None
        if not task:
            raise UsageError(f"--range {text!r}: expected ENV=LOW:HIGH")
    return ranges


def compare_command(args) -> int:
    from klipjax.outputs import compare

    comparison = compare.compare(
        args.run_dirs,
        baseline=args.baseline,
        score=args.score,
        ranges=_score_ranges(args.range),
    )
    header, rows = compare.table_rows(comparison)
    table = Table(
        title=f"{comparison.score} on {', '.join(comparison.tasks)}",
        caption=compare.describe(comparison),
    )
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index in (0, 5) else "right")
    for cells in rows:
        table.add_row(*map(escape, cells))
    console.print(table)
    for note in comparison.notes:
        console.print(f"note: {note}", highlight=False)
    out = Path(args.out) if args.out else _default_out("compare-")
    paths = compare.write(comparison, out)
    names = ", ".join(path.name for path in paths)
    console.print(f"wrote {names} in {out}/", highlight=False)
    return 0


def log_command(args) -> int:
    from klipjax.outputs import tracking
    from klipjax.outputs.results import METRICS_FILE, load

    run_dir = Path(args.run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run directory (no {METRICS_FILE})")
    results = load(run_dir)
    if args.to == "tensorboard":
        destination = tracking.TensorBoard(dir=args.out)
    else:
        destination = tracking.WandB(dir=args.out)
    logged = tracking.log_results(results, destination, run_dir=run_dir)
    if logged.failures:
        raise UsageError(logged.failures[0])
    console.print(
        f"logged {results.num_runs} runs x {logged.logged} updates of {run_dir}",
        highlight=False,
    )
    return 0


def _add_log_option(parser) -> None:
    parser.add_argument(
        "--log",
        action="append",
        choices=("tensorboard", "wandb"),
        help="also log every run, live, to TensorBoard (RUN_DIR/tensorboard) or "
        "W&B (WANDB_MODE=offline for local files); repeat for both",
    )


def _add_analysis_commands(commands) -> None:
    from klipjax.outputs.compare import SCORES

    compare = commands.add_parser(
        "compare",
        help="compare settings: IQM, 95%% CIs, P(improvement) over a baseline",
        description="Compare the settings of run directories by the IQM of their "
        "runs' scores with stratified bootstrap confidence intervals over seeds, "
        "and the probability of improving on a baseline; writes compare.md, "
        "compare.json, intervals.png and profiles.png.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument(
        "--baseline", metavar="SETTING", help="setting label (default: the first)"
    )
    compare.add_argument(
        "--score", choices=SCORES, default="final_return", help="per-run score"
    )
    compare.add_argument(
        "--range",
        action="append",
        metavar="ENV=LOW:HIGH",
        help="a task's score range, mapped to [0, 1] before tasks are pooled "
        "(default: the min and max of its runs)",
    )
    compare.add_argument("--out", help="directory (default runs/compare-<timestamp>)")
    compare.set_defaults(handler=compare_command)
    log = commands.add_parser(
        "log",
        help="log a finished run directory to TensorBoard or W&B",
        description="Write every run of RUN_DIR (metrics.parquet) to TensorBoard or "
        "W&B, as --log does during training.",
    )
    log.add_argument("run_dir", metavar="RUN_DIR")
    log.add_argument("--to", required=True, choices=("tensorboard", "wandb"))
    log.add_argument(
        "--out",
        metavar="DIR",
        help="log directory (default RUN_DIR/tensorboard; W&B: RUN_DIR/wandb)",
    )
    log.set_defaults(handler=log_command)


def _add_distributed_options(parser) -> None:
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one of several processes training the sweep together (JAX's "
        "distributed runtime; SLURM, Open MPI, Cloud TPU and Kubernetes detected); "
        "see docs/distributed.md",
    )
    parser.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address (manual)"
    )
    parser.add_argument(
        "--num-processes", type=_positive, metavar="N", help="processes (manual)"
    )
    parser.add_argument(
        "--process-id", type=_non_negative, metavar="I", help="this one (manual)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klipjax", description="PPO-Clip and its per-sample KL forms in JAX."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a sweep (default: the paper's CartPole-v1 grid)",
        description="Train every run of a sweep as one compiled program.",
    )
    train.add_argument(
        "config", nargs="?", help="YAML config (default: the CartPole grid)"
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key; a list value [a,b] becomes a grid axis",
    )
    train.add_argument("--out", help="output directory (default runs/<timestamp>)")
    train.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="checkpoint every N updates (always on interrupt and at the end)",
    )
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    _add_log_option(train)
    _add_distributed_options(train)
    train.set_defaults(handler=train_command)
    reproduce = commands.add_parser(
        "reproduce",
        help="run the paper's preset groups and write REPORT.md",
        description="Run preset groups (klipjax/presets/) and build a report; rerun "
        "with the same --out to continue an interrupted reproduction.",
    )
    reproduce.add_argument("groups", nargs="*", metavar="GROUP", help="default: all")
    reproduce.add_argument(
        "--quick", action="store_true", help="2 seeds, a few updates per run"
    )
    reproduce.add_argument(
        "--out", help="directory (default runs/reproduce-<timestamp>)"
    )
    _add_log_option(reproduce)
    _add_distributed_options(reproduce)
    reproduce.set_defaults(handler=reproduce_command)
    plot = commands.add_parser("plot", help="redraw the figures of a run directory")
    plot.add_argument("run_dir")
    plot.set_defaults(handler=plot_command)
    _add_policy_commands(commands)
    _add_analysis_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_library_messages()
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        return EXIT_USAGE


def run() -> NoReturn:
    """The ``klipjax`` command: ``main``, then an exit without the interpreter's
    teardown. Everything is written and closed when ``main`` returns (files are
    written atomically, checkpoints and trackers closed); what is left is freeing
    XLA's clients and thread pools and thousands of modules, about a second that
    nobody needs to wait for. ``main`` itself returns normally, for callers in
    Python."""
    code = main()
    logging.shutdown()  # flushes every handler
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
