"""Command line: ``klipjax train`` and ``klipjax plot``. All printing lives here."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from klipjax import config as config_lib

console = Console(stderr=True)
EXIT_USAGE = 2

# Metrics shown as small multiples beside the learning curves.
PANEL_METRICS = (
    "kill_fraction",
    "pass_fraction",
    "beta_t_kill_abs_mean",
    "approx_kl",
    "entropy",
    "explained_variance",
)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(EXIT_USAGE)


def _output_dir(requested: str | None) -> Path:
    """Checks (before any compile) that the output directory can be created and written."""
    if requested is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / stamp
    else:
        path = Path(requested)
    if path.exists() and not path.is_dir():
        _fail(f"--out {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _fail(f"--out {str(path)!r} cannot be created: {err.strerror}")
    if not os.access(path, os.W_OK):
        _fail(f"--out {str(path)!r} is not writable")
    return path


def _run_records(sweep) -> list[dict]:
    traced = [k for k in config_lib.TRACED_DEFAULTS if k != "loss"]
    return [
        {
            "run": index,
            "loss": run["loss"],
            "seed": run["seed"],
            "hparams": {key: run[key] for key in traced},
        }
        for index, run in enumerate(sweep.runs)
    ]


def train_command(args) -> int:
    try:
        sweep_config = config_lib.load(args.config, args.set or [])
    except config_lib.ConfigError as err:
        _fail(str(err))
    out = _output_dir(args.out)

    # Heavy imports after validation, so a typo is reported within a second.
    from klipjax import results, sweep

    static = sweep_config.static
    results.write_yaml(out / "config.yaml", config_lib.resolved_dict(sweep_config))
    console.print(
        f"[bold]klipjax[/] {static.env}: {sweep_config.num_runs} runs x "
        f"{static.num_updates} updates ({static.num_updates * static.batch_size:,} env "
        f"steps each) -> {out}",
        highlight=False,
    )
    program = sweep.build(sweep_config)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} updates"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    started = time.perf_counter()

    with progress:
        task = progress.add_task("compiling", total=static.num_updates, rate="")

        def on_chunk(report, runner, metrics):
            rate = report.steps_per_second
            rate = f"{rate:,.0f} env-steps/s" if rate else ""
            progress.update(
                task, completed=report.updates_done, description="training", rate=rate
            )
            if not console.is_terminal:  # logs get a plain line per chunk instead
                console.print(
                    f"update {report.updates_done}/{static.num_updates} "
                    f"{report.seconds:.0f}s {rate}",
                    highlight=False,
                )

        runner, metrics, report = sweep.train(sweep_config, on_chunk, program=program)
    wall = time.perf_counter() - started

    records = _run_records(sweep_config)
    total_steps = static.num_updates * static.batch_size
    finals = results.final_returns(metrics, total_steps)
    hashes = sweep.params_sha256(runner)
    diverged_at = [int(x) for x in runner.diverged_at]
    for record, final, digest, div in zip(records, finals, hashes, diverged_at):
        record["final_return"] = float(final)
        record["params_sha256"] = digest
        record["status"] = "diverged" if div >= 0 else "ok"
        if div >= 0:
            record["diverged_at_update"] = div
    frame = results.metrics_frame(records, sweep_config.swept, metrics)
    results.write_parquet(out / results.METRICS_FILE, frame)
    settings = results.group_final_returns(records, sweep_config.swept, finals)
    identity = sweep.identity_differences(sweep_config, runner)
    summary = {
        "env": static.env,
        "total_steps": total_steps,
        "num_runs": sweep_config.num_runs,
        "swept": list(sweep_config.swept),
        "wall_seconds": wall,
        "compile_seconds": report.compile_seconds,
        "env_steps_per_second": report.steps_per_second,
        "identity": identity,
        "settings": settings,
        "runs": records,
    }
    results.write_json(out / "summary.json", summary)
    from klipjax import plots

    plots.plot_curves(
        frame, out / "curves.png", swept=sweep_config.swept, title=static.env
    )
    plots.plot_metric_panels(
        frame, out / "diagnostics.png", list(PANEL_METRICS), swept=sweep_config.swept
    )
    _print_summary(summary, out)
    return 0


def _print_summary(summary: dict, out: Path) -> None:
    table = Table(title=f"{summary['env']}: final return (last 10% of env steps)")
    table.add_column("setting")
    table.add_column("mean ± std", justify="right")
    table.add_column("seeds", justify="right")
    table.add_column("status")
    from klipjax.results import setting_label

    diverged: dict[str, int] = {}
    for run in summary["runs"]:
        if run["status"] == "diverged":
            label = setting_label(run, summary["swept"])
            diverged[label] = diverged.get(label, 0) + 1
    for setting in summary["settings"]:
        label = setting["setting"]
        status = f"{diverged[label]} diverged" if label in diverged else "ok"
        mean, std = setting["mean"], setting["std"]
        value = "nan" if mean is None or math.isnan(mean) else f"{mean:.1f} ± {std:.1f}"
        table.add_row(label, value, str(setting["seeds"]), status)
    console.print(table)
    rate = summary["env_steps_per_second"]
    rate_text = f"{rate:,.0f} env-steps/s" if rate else "n/a"
    console.print(
        f"wall {summary['wall_seconds']:.1f} s, compile {summary['compile_seconds']:.1f} s, "
        f"{rate_text} (all runs, after compile)",
        highlight=False,
    )
    gap = summary["identity"].get("max_param_difference")
    if gap is not None:
        console.print(
            f"ppo_clip vs klip, same seed: largest parameter difference {gap:g}",
            highlight=False,
        )
    console.print(f"results in {out}/", highlight=False)


def plot_command(args) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.parquet").is_file():
        _fail(f"{str(run_dir)!r} is not a run directory (no metrics.parquet)")
    from klipjax import plots, results

    frame = results.read_metrics(run_dir)
    swept = []
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        import json

        swept = json.loads(summary_path.read_text()).get("swept", [])
    plots.plot_curves(frame, run_dir / "curves.png", swept=swept)
    present = [m for m in PANEL_METRICS if m in frame.columns]
    plots.plot_metric_panels(frame, run_dir / "diagnostics.png", present, swept=swept)
    console.print(f"wrote {run_dir}/curves.png and {run_dir}/diagnostics.png", highlight=False)
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
    train.add_argument("config", nargs="?", help="YAML config (default: the CartPole grid)")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key; a list value [a,b] becomes a grid axis",
    )
    train.add_argument("--out", help="output directory (default runs/<timestamp>)")
    train.set_defaults(handler=train_command)
    plot = commands.add_parser("plot", help="redraw the figures of a run directory")
    plot.add_argument("run_dir")
    plot.set_defaults(handler=plot_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
