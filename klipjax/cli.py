"""Command line: ``klipjax train``, ``reproduce`` and ``plot``.

A shell over the library: parse arguments, call ``klipjax.train``, print. All
printing lives here, and only here are errors turned into exit codes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
from pathlib import Path

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


def run_experiment(experiment: config_files.Experiment, out: Path, resume: bool):
    """Trains one sweep into ``out`` with a progress bar; returns its ``Results``."""
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
        **experiment.options,
    )


def _exit_code(results) -> int:
    return 0 if results.complete else 128 + (results.stopped_by or 2)


def train_command(args) -> int:
    experiment, out, resume = _experiment(args)
    results = run_experiment(experiment, out, resume)
    if results.complete:
        _print_summary(results, out)
    else:
        console.print(f"resume with: klipjax train --resume {out}", highlight=False)
    return _exit_code(results)


def reproduce_command(args) -> int:
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
        results = run_experiment(experiment, group_dir, resume)
        if not results.complete:
            console.print(
                f"continue with: klipjax reproduce {' '.join(names)} --out {out}",
                highlight=False,
            )
            return _exit_code(results)
    path = report.write_report(out, args.quick)
    console.print(f"report: {path}", highlight=False)
    return 0


def _print_summary(results, out: Path) -> None:
    table = Table(title=f"{results.config.env}: final return (last 10% of env steps)")
    table.add_column("setting")
    table.add_column("mean ± std", justify="right")
    table.add_column("seeds", justify="right")
    table.add_column("status")
    from klipjax.config.run_table import run_values
    from klipjax.outputs.tables import setting_label

    diverged: dict[str, int] = {}
    for run, status in enumerate(results.status):
        if status == "diverged":
            label = setting_label(run_values(results.hparams, run), results.varying)
            diverged[label] = diverged.get(label, 0) + 1
    for setting in results.settings():
        label = setting["setting"]
        status = f"{diverged[label]} diverged" if label in diverged else "ok"
        mean, std = setting["mean"], setting["std"]
        value = "nan" if mean is None or math.isnan(mean) else f"{mean:.1f} ± {std:.1f}"
        table.add_row(label, value, str(setting["seeds"]), status)
    console.print(table)
    timing = results.timing
    rate = timing["env_steps_per_second"]
    rate_text = f"{rate:,.0f} env-steps/s" if rate else "n/a"
    console.print(
        f"wall {timing['wall_seconds']:.1f} s, compile {timing['compile_seconds']:.1f} s, "
        f"{rate_text} (all runs, after compile)",
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
    from klipjax.outputs import plots
    from klipjax.outputs.results import PANEL_METRICS, load

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.parquet").is_file():
        raise UsageError(
            f"{str(run_dir)!r} is not a run directory (no metrics.parquet)"
        )
    results = load(run_dir)
    frame, swept = results.frame(), results.varying
    plots.plot_curves(
        frame, run_dir / "curves.png", swept=swept, title=results.config.env
    )
    present = [m for m in PANEL_METRICS if m in frame.columns]
    plots.plot_metric_panels(frame, run_dir / "diagnostics.png", present, swept=swept)
    console.print(
        f"wrote {run_dir}/curves.png and {run_dir}/diagnostics.png", highlight=False
    )
    return 0


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
    reproduce.set_defaults(handler=reproduce_command)
    plot = commands.add_parser("plot", help="redraw the figures of a run directory")
    plot.add_argument("run_dir")
    plot.set_defaults(handler=plot_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_library_messages()
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
