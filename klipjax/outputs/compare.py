"""Compare the settings of one or more run directories, with honest statistics.

Every run is scored by its final return (or final evaluation) as recorded in its
directory's ``summary.json``, so a directory with only ``config.yaml`` and
``summary.json`` is enough. A setting is everything that shapes training except
the seed: the task, the ``Config`` and the hyperparameters. Per setting the
comparison gives the IQM of its runs with a stratified bootstrap confidence
interval (seeds as the replication unit), the mean, the number of runs, and the
probability that it improves on a baseline setting (`klipjax.stats`).

Several tasks are compared over the settings present on every task, matched by
their label (``klip clip_eps=0.1``); their scores are normalised per task to a
common scale before pooling, with given ranges or the task's own min and max.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from klipjax import stats
from klipjax.config import files as config_files
from klipjax.config.checks import ConfigError, suggest
from klipjax.config.settings import STATIC_KEYS
from klipjax.outputs.files import atomic_path, write_atomic, write_json
from klipjax.outputs.tables import setting_label

SCORES = ("final_return", "final_eval_return_det", "final_eval_return")
# Config fields that add measurements and leave training as it is: runs that differ
# only in these belong to one setting.
DIAGNOSTIC_KEYS = (
    "identity_check",
    "eval_every",
    "eval_episodes",
    "final_eval_episodes",
)
MIN_SEEDS = 5  # below this a bootstrap interval covers much less than it states
PROFILE_POINTS = 201
FIGURE_DPI = 120
LINE_STYLES = ("-", "--", "-.", ":")


class RunScore(NamedTuple):
    """One run of one directory, as the comparison sees it."""

    task: str
    values: dict[str, Any]  # loss, seed, hyperparameters and Config fields
    score: float  # NaN when the run has none
    params_sha256: str | None


class Row(NamedTuple):
    """One setting's line of the comparison."""

    setting: str
    iqm: stats.Estimate
    mean: stats.Estimate
    n: int  # runs with a score, over all tasks
    missing: int  # runs without one (no episode ended late in training)
    improvement: stats.Estimate | None  # P(setting > baseline); None: the baseline


class Comparison(NamedTuple):
    """What `compare` found: rows in the order the settings first appear."""

    tasks: list[str]
    score: str
    ranges: dict[str, tuple[float, float]] | None  # per task, when normalised
    baseline: str
    confidence: float
    rows: list[Row]
    scores: dict[str, list[np.ndarray]]  # per setting, per task (normalised)
    notes: list[str]


def read_runs(run_dir: str | os.PathLike[str], score: str) -> list[RunScore]:
    """The scored runs of one directory (``config.yaml`` and ``summary.json``).

    Raises:
        ConfigError: Not a run directory, or its runs lack ``score``.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "summary.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a run directory (no {name})")
    config = config_files.load(run_dir / "config.yaml").config
    summary = json.loads((run_dir / "summary.json").read_text())
    static = {
        key: getattr(config, key)
        for key in STATIC_KEYS
        if key not in DIAGNOSTIC_KEYS and key != "env"
    }
    runs = []
    for run in summary["runs"]:
        if score not in run:
            raise ConfigError(
                f"{run_dir}/summary.json has no {score!r} per run (it has "
                f"{', '.join(k for k in SCORES if k in run) or 'none'})"
            )
        value = run[score]
        runs.append(
            RunScore(
                task=config.env,
                values={
                    "loss": run["loss"],
                    "seed": run["seed"],
                    **run["hparams"],
                    **static,
                },
                score=math.nan if value is None else float(value),
                params_sha256=run.get("params_sha256"),
            )
        )
    return runs


def _labels(runs: list[RunScore]) -> list[str]:
    """Each run's setting label, naming the keys that differ between the runs."""
    keys = [k for k in runs[0].values if k not in ("loss", "seed")]
    varying = [k for k in keys if len({repr(r.values.get(k)) for r in runs}) > 1]
    return [setting_label(r.values, varying) for r in runs]


def _digits(values: Sequence[float]) -> int:
    """Decimals that show about four significant digits of the largest value."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    largest = max(finite, default=0.0)
    if largest == 0:
        return 2
    return int(min(3, max(0, 3 - math.floor(math.log10(largest)))))


def format_interval(estimate: stats.Estimate, digits: int) -> str:
    """``[low, high]`` with ``digits`` decimals."""
    return f"[{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def _parse_ranges(
    ranges: Mapping[str, tuple[float, float]] | None, tasks: list[str]
) -> dict[str, tuple[float, float]]:
    ranges = dict(ranges or {})
    for task, (low, high) in ranges.items():
        if task not in tasks:
            raise ConfigError(
                f"score range for {task!r}: no such task{suggest(task, tasks)}"
            )
        if not high > low:
            raise ConfigError(f"score range for {task!r}: {high} is not above {low}")
    return ranges


def compare(
    run_dirs: Sequence[str | os.PathLike[str]],
    *,
    baseline: str | None = None,
    score: str = "final_return",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    confidence: float = 0.95,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compares every setting found in ``run_dirs``.

    Args:
        run_dirs: Run directories (``klipjax train --out``, a reproduction's
            group directories); the same run found twice counts once.
        baseline: The setting label to compare against (default: the first).
        score: The per-run score in ``summary.json``: ``final_return`` or, when
            recorded, ``final_eval_return_det`` / ``final_eval_return``.
        ranges: Per task, ``(low, high)`` mapped to 0 and 1 before tasks are
            pooled; tasks without one use the min and max of their runs here.
            With one task and no range, scores stay as they are.
        confidence: Of every interval.
        resamples: Bootstrap replicates.
        seed: Of the bootstrap, so the comparison is reproducible.

    Raises:
        ConfigError: No run directories, a bad directory, an unknown score or
            baseline, or no setting with scores on every task.
    """
    if score not in SCORES:
        raise ConfigError(f"score {score!r}: choose from {', '.join(SCORES)}")
    if not run_dirs:
        raise ConfigError("no run directories to compare")
    notes: list[str] = []
    by_task: dict[str, list[RunScore]] = {}
    for run_dir in run_dirs:
        for run in read_runs(run_dir, score):
            by_task.setdefault(run.task, []).append(run)
    tasks = list(by_task)
    ranges = _parse_ranges(ranges, tasks)

    # per setting label, per task: the scores, duplicates (the same setting, seed
    # and final parameters, e.g. a directory given twice) counted once
    found: dict[str, dict[str, list[float]]] = {}
    duplicates = 0
    for task, runs in by_task.items():
        seen = set()
        for run, label in zip(runs, _labels(runs)):
            key = (label, run.values["seed"], run.params_sha256)
            if run.params_sha256 is not None and key in seen:
                duplicates += 1
                continue
            seen.add(key)
            found.setdefault(label, {}).setdefault(task, []).append(run.score)
    if duplicates:
        notes.append(f"{duplicates} runs found twice were counted once")
    partial = [label for label, per_task in found.items() if len(per_task) < len(tasks)]
    if partial:
        notes.append(f"not on every task, left out: {', '.join(partial)}")
    settings = {label: found[label] for label in found if label not in partial}
    if not settings:
        raise ConfigError("no setting was run on every task compared")

    raw: dict[str, list[np.ndarray]] = {}
    missing: dict[str, int] = {}
    for label, per_task in settings.items():
        arrays = [np.asarray(per_task[task], np.float64) for task in tasks]
        missing[label] = int(sum(np.isnan(a).sum() for a in arrays))
        raw[label] = [a[np.isfinite(a)] for a in arrays]
        empty = [task for task, a in zip(tasks, raw[label]) if a.size == 0]
        if empty:
            notes.append(f"{label}: no run has a {score} on {', '.join(empty)}")
    raw = {
        label: arrays for label, arrays in raw.items() if all(a.size for a in arrays)
    }
    if not raw:
        raise ConfigError(f"no setting has a {score} on every task")

    normalised = len(tasks) > 1 or bool(ranges)
    if normalised:
        for index, task in enumerate(tasks):
            if task not in ranges:
                pooled = np.concatenate([arrays[index] for arrays in raw.values()])
                low, high = float(pooled.min()), float(pooled.max())
                ranges[task] = (low, high if high > low else low + 1.0)
                notes.append(
                    f"{task}: scores scaled by the range of its runs here "
                    f"[{low:g}, {high:g}]"
                )
        scores = {
            label: stats.normalize(
                arrays, [ranges[t][0] for t in tasks], [ranges[t][1] for t in tasks]
            )
            for label, arrays in raw.items()
        }
    else:
        scores = raw

    labels = list(raw)
    if baseline is None:
        baseline = labels[0]
    elif baseline not in raw:
        raise ConfigError(
            f"baseline {baseline!r} is not a setting here{suggest(baseline, labels)}; "
            f"the settings: {', '.join(labels)}"
        )
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    rows = []
    for label in labels:
        rows.append(
            Row(
                setting=label,
                iqm=stats.interval_estimate(scores[label], stats.iqm, **options),
                mean=stats.interval_estimate(scores[label], stats.mean, **options),
                n=int(sum(a.size for a in raw[label])),
                missing=missing[label],
                improvement=None
                if label == baseline
                else stats.probability_of_improvement(
                    raw[label], raw[baseline], **options
                ),
            )
        )
    fewest = min(a.size for arrays in raw.values() for a in arrays)
    if fewest < MIN_SEEDS:
        notes.append(
            f"as few as {fewest} seeds per task: bootstrap intervals from fewer "
            f"than {MIN_SEEDS} cover less than their stated level"
        )
    return Comparison(
        tasks=tasks,
        score=score,
        ranges=ranges if normalised else None,
        baseline=baseline,
        confidence=confidence,
        rows=rows,
        scores=scores,
        notes=notes,
    )


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The comparison as text cells: ``(header, rows)``."""
    level = f"{comparison.confidence:.0%}"
    digits = _digits([value for row in comparison.rows for value in row.iqm + row.mean])
    header = [
        "setting",
        "IQM",
        f"{level} CI",
        "mean",
        "n",
        f"P(> {comparison.baseline})",
    ]
    rows = []
    for row in comparison.rows:
        improvement = (
            "baseline"
            if row.improvement is None
            else f"{row.improvement.value:.2f} {format_interval(row.improvement, 2)}"
        )
        rows.append(
            [
                row.setting,
                f"{row.iqm.value:.{digits}f}",
                format_interval(row.iqm, digits),
                f"{row.mean.value:.{digits}f}",
                str(row.n) + (f" (+{row.missing} without)" if row.missing else ""),
                improvement,
            ]
        )
    return header, rows


def describe(comparison: Comparison) -> str:
    """One sentence saying what was scored and how."""
    tasks = ", ".join(comparison.tasks)
    scale = " (normalised per task)" if comparison.ranges else ""
    return (
        f"{comparison.score}{scale} on {tasks}: IQM and mean over runs, "
        f"{comparison.confidence:.0%} stratified bootstrap CIs over seeds; "
        "P(> baseline): the probability that a run of the setting beats a run of "
        "the baseline (0.5: no difference)"
    )


def markdown(comparison: Comparison, figures: Sequence[str] = ()) -> str:
    """The comparison as a Markdown document."""
    header, rows = table_rows(comparison)
    lines = [
        "# klipjax compare",
        "",
        describe(comparison) + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 2) + "---|",
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
    ]
    if comparison.notes:
        lines += [*(f"- {note}" for note in comparison.notes), ""]
    lines += [f"![{Path(name).stem}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as plain data (``compare.json``)."""

    def estimate(value: stats.Estimate | None):
        return None if value is None else value._asdict()

    return {
        "tasks": comparison.tasks,
        "score": comparison.score,
        "ranges": comparison.ranges,
        "baseline": comparison.baseline,
        "confidence": comparison.confidence,
        "settings": [
            {
                "setting": row.setting,
                "iqm": estimate(row.iqm),
                "mean": estimate(row.mean),
                "n": row.n,
                "missing": row.missing,
                "improvement_over_baseline": estimate(row.improvement),
                "scores": [a.tolist() for a in comparison.scores[row.setting]],
            }
            for row in comparison.rows
        ],
        "notes": comparison.notes,
    }


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", bbox_inches="tight")
    return path


def _colors(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def plot_intervals(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    """IQM, mean and P(> baseline) of each setting with their intervals, one
    panel each, one row per setting."""
    rows = comparison.rows
    colors = _colors(len(rows))
    figure = _figure(11.0, 0.9 + 0.42 * len(rows))
    axes = figure.subplots(1, 3, sharey=True)
    unit = "normalised score" if comparison.ranges else comparison.score
    panels = (
        ("IQM", unit, [r.iqm for r in rows]),
        ("mean", unit, [r.mean for r in rows]),
        (f"P(> {comparison.baseline})", "probability", [r.improvement for r in rows]),
    )
    positions = np.arange(len(rows))[::-1]
    for ax, (title, xlabel, estimates) in zip(axes, panels):
        for y, estimate, color in zip(positions, estimates, colors):
            if estimate is None:
                continue
            ax.plot(
                [estimate.low, estimate.high], [y, y], color=color, lw=6, alpha=0.45
            )
            ax.plot([estimate.value], [y], "|", color="black", ms=14, mew=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[2].axvline(0.5, color="gray", ls="--", lw=1)
    axes[2].set_xlim(-0.02, 1.02)
    axes[0].set_yticks(positions, [r.setting for r in rows])
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    figure.suptitle(
        f"{', '.join(comparison.tasks)}: {comparison.confidence:.0%} stratified "
        "bootstrap CIs",
        fontsize=10,
    )
    return _save(figure, Path(path))


def plot_profiles(
    comparison: Comparison,
    path: str | os.PathLike[str],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> Path:
    """Performance profiles: the fraction of each setting's runs scoring above
    tau, over the whole range of scores, with pointwise bootstrap bands."""
    pooled = np.concatenate([np.concatenate(a) for a in comparison.scores.values()])
    low, high = float(pooled.min()), float(pooled.max())
    margin = 0.02 * (high - low) or 0.5
    taus = np.linspace(low - margin, high + margin, PROFILE_POINTS)
    figure = _figure(7.0, 4.5)
    ax = figure.subplots()
    styles = itertools.cycle(LINE_STYLES)  # settings with equal scores stay visible
    for row, color in zip(comparison.rows, _colors(len(comparison.rows))):
        profile = stats.performance_profile(
            comparison.scores[row.setting],
            taus,
            confidence=comparison.confidence,
            resamples=resamples,
            seed=seed,
        )
        ax.plot(
            taus,
            profile.fraction,
            color=color,
            ls=next(styles),
            label=row.setting,
            lw=1.8,
        )
        ax.fill_between(taus, profile.low, profile.high, color=color, alpha=0.15, lw=0)
    unit = "normalised score" if comparison.ranges else comparison.score
    ax.set_xlabel(f"{unit} threshold tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{', '.join(comparison.tasks)}: performance profiles", fontsize=10)
    return _save(figure, Path(path))


def write(comparison: Comparison, out: str | os.PathLike[str]) -> list[Path]:
    """Writes ``compare.md``, ``compare.json``, ``intervals.png`` and
    ``profiles.png`` into ``out`` (created if needed); returns their paths."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} exists and is not a directory")
    figures = [
        plot_intervals(comparison, out / "intervals.png"),
        plot_profiles(comparison, out / "profiles.png"),
    ]
    text = markdown(comparison, [figure.name for figure in figures])
    return [
        write_atomic(out / "compare.md", text),
        write_json(out / "compare.json", to_json(comparison)),
        *figures,
    ]


__all__ = [
    "Comparison",
    "Row",
    "RunScore",
    "compare",
    "format_interval",
    "markdown",
    "plot_intervals",
    "plot_profiles",
    "read_runs",
    "table_rows",
    "to_json",
    "write",
]
