"""Learning curves and diagnostic panels from a metrics table, rendered headless.

Input is the long table of `klipjax.outputs.tables.metrics_frame` (one row per run and
update). Runs that share a loss and swept values form one setting, drawn as the mean
over seeds with a +-1 std band.

Figures are built with `matplotlib.figure.Figure` and rendered by the Agg canvas
directly, never through pyplot: no display is needed, no global figure registry
fills up, and importing this module does not switch the backend of a caller who
already uses pyplot interactively (``matplotlib.use`` would close their figures).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from klipjax.outputs.files import atomic_path
from klipjax.outputs.tables import setting_label

CURVE_FIGSIZE = (7.0, 4.5)
PANEL_SIZE = (3.6, 2.8)
MAX_PANEL_COLUMNS = 3
DPI = 120
BAND_ALPHA = 0.2
LINE_STYLES = ("-", "--", "-.", ":")
# Fixed margins around every panel, in inches: room for tick labels and a y label
# on the left, tick labels and an x label below, a title above. Measuring the
# labels instead ("tight" layout) lays every figure out in an extra draw, about a
# third of the time a run's figures take.
MARGINS = {"left": 0.85, "right": 0.2, "bottom": 0.6, "top": 0.4}
AXIS_LABELS = {
    "env_steps": "environment steps",
    "episode_return": "episode return",
    "eval_return_det": "evaluation return (greedy)",
    "eval_return": "evaluation return (sampled)",
}


class Band(NamedTuple):
    """One setting's curve: mean over seeds with its population std, per update."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def setting_bands(
    frame: pd.DataFrame, *, x: str, y: str, swept: Sequence[str] = ()
) -> list[Band]:
    """Computes the mean +- std curve of each setting in first-appearance order.

    A run's ``y`` is NaN at updates in which no episode ended; each run is
    forward-filled, then back-filled at its start, before averaging so the curve
    has no holes. ``x`` at each update index is averaged over the setting's runs.

    Args:
        frame: Long table with ``run``, ``update``, ``loss``, the swept columns,
            ``x`` and ``y``.
        x: Column for the horizontal axis.
        y: Column to average over seeds.
        swept: Swept hyperparameter columns that, with ``loss``, define a setting.

    Returns:
        One `Band` per setting, arrays indexed by update.
    """
    keys = ["loss", *swept]
    bands = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        per_run = group.pivot(index="update", columns="run", values=y)
        per_run = per_run.ffill().bfill()
        x_mean = group.pivot(index="update", columns="run", values=x).mean(axis=1)
        setting = {"loss": key[0], **dict(zip(swept, key[1:]))}
        bands.append(
            Band(
                label=setting_label(setting, swept),
                x=x_mean.to_numpy(np.float64),
                mean=per_run.mean(axis=1).to_numpy(np.float64),
                std=per_run.std(axis=1, ddof=0).to_numpy(np.float64),
            )
        )
    return bands


def plot_curves(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    x: str = "env_steps",
    y: str = "episode_return",
    swept: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """Draws one learning curve per setting and saves it atomically.

    Args:
        frame: Long metrics table, as from `klipjax.outputs.tables.metrics_frame`.
        path: Image file to write; its suffix picks the format (PNG if none).
        x: Column for the horizontal axis.
        y: Column to plot, averaged over seeds.
        swept: Swept hyperparameter columns that distinguish settings.
        title: Optional figure title.

    Returns:
        ``path`` as a `Path`.
    """
    figure = Figure(figsize=CURVE_FIGSIZE, dpi=DPI)
    _place_panels(figure, rows=1, columns=1)
    axes = figure.add_subplot()
    _draw_bands(axes, setting_bands(frame, x=x, y=y, swept=swept), x=x)
    axes.set_ylabel(_axis_label(y))
    if title is not None:
        axes.set_title(title)
    return _save(figure, path)


def plot_metric_panels(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    metrics: Sequence[str],
    *,
    swept: Sequence[str] = (),
) -> Path:
    """Draws one panel per metric against environment steps, up to 3 per row.

    Args:
        frame: Long metrics table, as from `klipjax.outputs.tables.metrics_frame`.
        path: Image file to write; its suffix picks the format (PNG if none).
        metrics: Columns to plot, one panel each (e.g. ``kill_fraction``).
        swept: Swept hyperparameter columns that distinguish settings.

    Returns:
        ``path`` as a `Path`.

    Raises:
        ValueError: If ``metrics`` is empty.
    """
    if not metrics:
        raise ValueError("plot_metric_panels needs at least one metric")
    figure, grid = _panel_grid(len(metrics))
    for index, (axes, metric) in enumerate(zip(grid, metrics)):
        bands = setting_bands(frame, x="env_steps", y=metric, swept=swept)
        # One legend is enough: every panel has the same settings and colours.
        _draw_bands(axes, bands, x="env_steps", legend=index == 0)
        # The title names the metric, so a y label would only repeat it.
        axes.set_title(_axis_label(metric), fontsize="medium")
    return _save(figure, path)


def _panel_grid(count: int):
    """A figure with ``count`` panels, up to 3 per row, and its flat axes list."""
    columns = min(count, MAX_PANEL_COLUMNS)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), dpi=DPI)
    _place_panels(figure, rows, columns)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in grid[count:]:
        figure.delaxes(unused)
    return figure, grid[:count]


def _place_panels(figure: Figure, rows: int, columns: int) -> None:
    """Lays out ``rows`` x ``columns`` panels with ``MARGINS`` around each."""
    width, height = figure.get_size_inches()
    left, right, bottom, top = (MARGINS[k] for k in ("left", "right", "bottom", "top"))
    panel_width = (width - columns * (left + right)) / columns
    panel_height = (height - rows * (bottom + top)) / rows
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=(left + right) / panel_width,
        hspace=(bottom + top) / panel_height,
    )


def plot_task_curves(
    frames: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    *,
    y: str = "episode_return",
) -> Path:
    """One panel per task (title = the mapping's key), one band per loss variant."""
    if not frames:
        raise ValueError("plot_task_curves needs at least one task")
    figure, grid = _panel_grid(len(frames))
    for axes, (task, frame) in zip(grid, frames.items()):
        _draw_bands(axes, setting_bands(frame, x="env_steps", y=y), x="env_steps")
        axes.set_title(task, fontsize="medium")
    grid[0].set_ylabel(_axis_label(y))
    return _save(figure, path)


class KnobPanel(NamedTuple):
    """Final return against one swept knob: ``lines`` maps a label to
    ``(knob values, per-knob lists of per-seed final returns)``."""

    title: str
    knob: str
    lines: Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]]
    log_x: bool = False


def plot_knob_panels(panels: Sequence[KnobPanel], path: str | os.PathLike[str]) -> Path:
    """Final return (mean over seeds, standard-error bars) against each knob."""
    figure, grid = _panel_grid(len(panels))
    for axes, panel in zip(grid, panels):
        for index, (label, (knob_values, per_seed)) in enumerate(panel.lines.items()):
            means, errors = [], []
            for values in per_seed:
                finite = np.asarray([v for v in values if np.isfinite(v)], np.float64)
                means.append(finite.mean() if finite.size else np.nan)
                spread = finite.std(ddof=1) if finite.size > 1 else 0.0
                errors.append(spread / math.sqrt(max(finite.size, 1)))
            axes.errorbar(
                knob_values,
                means,
                yerr=errors,
                label=label,
                capsize=3,
                marker="o",
                linestyle=LINE_STYLES[index % len(LINE_STYLES)],
            )
        if panel.log_x:
            axes.set_xscale("log")
        axes.set_xlabel(panel.knob)
        axes.set_title(panel.title, fontsize="medium")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    grid[0].set_ylabel("final return")
    return _save(figure, path)


def _axis_label(column: str) -> str:
    return AXIS_LABELS.get(column, column.replace("_", " "))


def _draw_bands(
    axes: Axes, bands: Sequence[Band], *, x: str, legend: bool = True
) -> None:
    """Plots each band's mean line with its shaded +- std in the line's colour."""
    for index, band in enumerate(bands):
        # Dash styles cycle too, so identical curves (ppo_clip and klip) both show.
        style = LINE_STYLES[index % len(LINE_STYLES)]
        (line,) = axes.plot(
            band.x, band.mean, label=band.label, linewidth=1.5, linestyle=style
        )
        axes.fill_between(
            band.x,
            band.mean - band.std,
            band.mean + band.std,
            color=line.get_color(),
            alpha=BAND_ALPHA,
            linewidth=0,
        )
    axes.set_xlabel(_axis_label(x))
    if x == "env_steps":
        # Step counts run to millions; "500k" stays legible in a narrow panel.
        axes.xaxis.set_major_formatter(EngFormatter(sep=""))
    axes.grid(True, alpha=0.3)
    if legend and bands:
        axes.legend(fontsize="small")


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Renders ``figure`` with Agg into a temp file, then renames it onto ``path``."""
    path = Path(path)
    FigureCanvasAgg(figure)
    # An explicit format stops matplotlib appending an extension to a bare name,
    # which would make the rename miss the file it wrote.
    image_format = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as temp:
        figure.savefig(temp, format=image_format, dpi=DPI)
    return path
