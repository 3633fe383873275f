"""Command line: ``klipjax train``, ``reproduce`` and ``plot``. All printing lives here."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from klipjax import config as config_lib

console = Console(stderr=True, soft_wrap=True)  # messages stay one line
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
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
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
    if (path / "config.yaml").exists():
        _fail(
            f"--out {str(path)!r} already holds a run: continue it with --resume "
            f"{path} or choose another --out"
        )
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


def _load_sweep(args):
    """The sweep to run and its directory: a new one, or one to resume."""
    if args.resume is not None:
        if args.config or args.set or args.checkpoint_every is not None:
            _fail(
                "--resume continues a run as configured: give no CONFIG, --set or "
                "--checkpoint-every with it"
            )
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            _fail(f"--resume {str(run_dir)!r} is not a run directory (no config.yaml)")
        try:
            return config_lib.load(run_dir / "config.yaml"), run_dir
        except config_lib.ConfigError as err:
            _fail(f"{run_dir}/config.yaml: {err}")
    overrides = list(args.set or [])
    if args.checkpoint_every is not None:
        overrides.append(f"checkpoint_every={args.checkpoint_every}")
    try:
        sweep_config = config_lib.load(args.config, overrides)
    except config_lib.ConfigError as err:
        _fail(str(err))
    return sweep_config, _output_dir(args.out)


class StopRequest:
    """SIGINT/SIGTERM: finish the current chunk, checkpoint, exit; twice: abort now."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        console.print(
            f"\n{signal.Signals(signum).name}: finishing the current chunk, then "
            "checkpointing (again to abort at once)",
            highlight=False,
        )

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self)


def train_command(args) -> int:
    sweep_config, out = _load_sweep(args)
    code, summary = run_sweep(sweep_config, out, resume=args.resume is not None)
    if code == 0:
        _print_summary(summary, out)
    else:
        console.print(f"resume with: klipjax train --resume {out}", highlight=False)
    return code


def run_sweep(sweep_config, out: Path, *, resume: bool) -> tuple[int, dict]:
    """Trains (or resumes) one sweep into ``out`` with progress, checkpoints and
    interrupt handling; returns the exit code and the summary written."""
    # Heavy imports after validation, so a typo is reported within a second.
    from klipjax import checkpoint, compile_cache, envs, results, sweep

    compile_cache.enable()
    hits_before = compile_cache.hits()

    static = sweep_config.static
    try:
        program = sweep.build(sweep_config)
    except envs.EnvError as err:
        _fail(str(err))
    checkpointer = checkpoint.SweepCheckpointer(out)
    runner = metrics = None
    start_chunk = 0
    if resume:
        step = checkpointer.latest_step()
        if step is None:
            console.print(
                "no checkpoint yet: starting from the beginning", highlight=False
            )
        else:
            updates_done = min(step * program.chunk_updates, static.num_updates)
            abstract = checkpoint.abstract_runner(program.init, program.hparams)
            runner, metrics = checkpointer.restore(step, abstract, updates_done)
            start_chunk = step
            console.print(
                f"resuming at update {updates_done}/{static.num_updates}",
                highlight=False,
            )
    else:
        resolved = config_lib.resolved_dict(sweep_config)
        resolved["chunk_updates"] = program.chunk_updates  # a resume must reuse it
        results.write_yaml(out / "config.yaml", resolved)
    console.print(
        f"[bold]klipjax[/] {static.env}: {sweep_config.num_runs} runs x "
        f"{static.num_updates} updates ({static.num_updates * static.batch_size:,} env "
        f"steps each) -> {out}",
        highlight=False,
    )
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} updates"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    stop = StopRequest()
    stop.install()
    every = sweep_config.checkpoint_every
    started = time.perf_counter()

    with progress:
        task = progress.add_task(
            "compiling",
            total=static.num_updates,
            completed=start_chunk * program.chunk_updates,
            rate="",
        )

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
            finished = report.updates_done >= static.num_updates
            due = every and report.updates_done % every == 0
            if due or finished or stop.signum is not None:
                checkpointer.save(report.chunks_done, runner, metrics)
            return stop.signum is not None

        runner, metrics, report = sweep.train(
            sweep_config,
            on_chunk,
            program=program,
            runner=runner,
            metrics=metrics,
            start_chunk=start_chunk,
        )
    checkpointer.close()
    complete = report.updates_done >= static.num_updates
    summary = _write_outputs(
        out,
        sweep_config,
        runner,
        metrics,
        report,
        time.perf_counter() - started,
        complete,
        cache_hits=compile_cache.hits() - hits_before,
    )
    if not complete:
        console.print(
            f"stopped at update {report.updates_done}/{static.num_updates}; partial "
            f"results and a checkpoint are in {out}/",
            highlight=False,
        )
        return 128 + (stop.signum or signal.SIGINT), summary
    return 0, summary


def reproduce_command(args) -> int:
    from klipjax import reproduce

    names = reproduce.expand_groups(args.groups)
    known = list(reproduce.GROUPS) + list(reproduce.ALIASES)
    unknown = [n for n in names if n not in reproduce.GROUPS]
    if unknown:
        _fail(
            f"unknown group {unknown[0]!r}{config_lib._suggest(unknown[0], known)}; "
            f"choose from {', '.join(known)}"
        )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{stamp}"
    if out.exists() and not out.is_dir():
        _fail(f"--out {str(out)!r} exists and is not a directory")
    for index, name in enumerate(names, 1):
        group_dir = out / name
        console.print(f"[bold]group {index}/{len(names)}: {name}[/]", highlight=False)
        if reproduce.is_complete(group_dir):
            console.print("already complete", highlight=False)
            continue
        resume = (group_dir / "config.yaml").is_file()
        if resume:
            sweep_config = config_lib.load(group_dir / "config.yaml")
        else:
            sweep_config = reproduce.group_config(name, args.quick)
            group_dir.mkdir(parents=True, exist_ok=True)
        code, _ = run_sweep(sweep_config, group_dir, resume=resume)
        if code:
            console.print(
                f"continue with: klipjax reproduce {' '.join(names)} --out {out}",
                highlight=False,
            )
            return code
    report = reproduce.write_report(out, args.quick)
    console.print(f"report: {report}", highlight=False)
    return 0


def _write_outputs(
    out, sweep_config, runner, metrics, report, wall, complete, cache_hits=0
) -> dict:
    """metrics.parquet, summary.json and the figures, each written atomically."""
    from klipjax import memory, plots, results, sweep

    static = sweep_config.static
    records = _run_records(sweep_config)
    total_steps = static.num_updates * static.batch_size
    finals = results.final_returns(metrics, total_steps)
    hashes = sweep.params_sha256(runner)
    diverged_at = [int(x) for x in np.asarray(runner.diverged_at)]
    for record, final, digest, div in zip(records, finals, hashes, diverged_at):
        record["final_return"] = float(final)
        record["params_sha256"] = digest
        record["status"] = "diverged" if div >= 0 else ("ok" if complete else "stopped")
        if div >= 0:
            record["diverged_at_update"] = div
    frame = results.metrics_frame(records, sweep_config.swept, metrics)
    results.write_parquet(out / results.METRICS_FILE, frame)
    summary = {
        "env": static.env,
        "total_steps": total_steps,
        "num_runs": sweep_config.num_runs,
        "complete": complete,
        "updates_done": int(metrics["env_steps"].shape[1]),
        "swept": list(sweep_config.swept),
        "wall_seconds": wall,
        "compile_seconds": report.compile_seconds,
        "compile_cache_hits": cache_hits,  # programs loaded from the persistent cache
        "env_steps_per_second": report.steps_per_second,
        "parallel_runs": report.parallel_runs,  # runs advanced at once
        "memory_mb": {
            "program": report.program_bytes / 2**20,  # XLA's analysis of one chunk
            **{f"peak_{k}": v / 2**20 for k, v in memory.peak_bytes().items()},
        },
        "identity": sweep.identity_differences(sweep_config, runner),
        "settings": results.group_final_returns(records, sweep_config.swept, finals),
        "runs": records,
    }
    results.write_json(out / "summary.json", summary)
    if len(frame):
        plots.plot_curves(
            frame, out / "curves.png", swept=sweep_config.swept, title=static.env
        )
        plots.plot_metric_panels(
            frame,
            out / "diagnostics.png",
            list(PANEL_METRICS),
            swept=sweep_config.swept,
        )
    return summary


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
    mem = summary["memory_mb"]
    parallel = summary["parallel_runs"]
    console.print(
        f"memory: program {mem['program']:,.0f} MB, peak host {mem['peak_host']:,.0f} MB"
        + (
            f", peak device {mem['peak_device']:,.0f} MB"
            if "peak_device" in mem
            else ""
        )
        + (
            f"; {parallel} of {summary['num_runs']} runs at a time"
            if parallel < summary["num_runs"]
            else ""
        ),
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
        description="Run preset groups (configs/paper/) and build a report; rerun "
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
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
