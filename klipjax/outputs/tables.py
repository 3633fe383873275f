"""Run results as tables: the long metrics frame, the paper's final return, settings.

Everything here works on numpy arrays already pulled off the device and on the run
table (``HParams`` stacked to ``[runs]``). Metrics are ``[runs, updates]`` arrays
keyed by name, always including ``env_steps``, ``episode_return``,
``episode_length`` and ``episodes``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from klipjax.config import run_table
from klipjax.config.settings import HParams

if TYPE_CHECKING:
    import pandas as pd

# The paper scores a run on the updates in the last 10% of its environment steps.
TAIL_START_FRACTION = 0.9
INDEX_COLUMNS = ("run", "update", "loss", "seed")


def metrics_frame(
    table: HParams, metrics: Mapping[str, np.ndarray], columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Lays per-update metrics out as a long table, one row per (run, update).

    Args:
        table: The run table, ``[runs]``.
        metrics: Arrays shaped ``[runs, updates]``, one per metric name.
        columns: Hyperparameters to give a column each (those that vary).

    Returns:
        Columns ``run, update, loss, seed``, then ``columns``, then one column per
        metric; rows ordered by run, then update.

    Raises:
        ValueError: If array shapes disagree with each other or with the table, or
            a metric name collides with an index or hyperparameter column.
    """
    arrays = {name: np.asarray(values) for name, values in metrics.items()}
    num_runs, num_updates = _check_layout(table, columns, arrays)

    def per_run(values: list[Any]) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=object), num_updates)

    frame: dict[str, Any] = {
        "run": np.repeat(np.arange(num_runs), num_updates),
        "update": np.tile(np.arange(num_updates), num_runs),
        "loss": per_run(run_table.column(table, "loss")),
        "seed": np.repeat(run_table.column(table, "seed"), num_updates),
    }
    for name in columns:
        frame[name] = per_run(run_table.column(table, name))
    frame.update({name: values.reshape(-1) for name, values in arrays.items()})
    # Object columns came from python scalars; let pandas pick their real dtypes.
    import pandas as pd  # here, not at import: half a second klipjax's start skips

    return pd.DataFrame(frame).infer_objects()


def _check_layout(
    table: HParams, columns: Sequence[str], arrays: Mapping[str, np.ndarray]
) -> tuple[int, int]:
    """Returns ``(runs, updates)`` after checking the metrics agree on it."""
    shape = arrays["env_steps"].shape
    for name, values in arrays.items():
        if values.shape != shape or len(shape) != 2:
            raise ValueError(
                f"metric {name!r} has shape {values.shape}, expected "
                f"[runs, updates] like env_steps {shape}"
            )
    runs = run_table.num_runs(table)
    if runs != shape[0]:
        raise ValueError(f"{runs} runs but metrics hold {shape[0]} rows")
    clashes = set(arrays) & {*INDEX_COLUMNS, *columns}
    if clashes:
        raise ValueError(f"metric names clash with index columns: {sorted(clashes)}")
    return shape


def final_return(
    env_steps: np.ndarray,
    episode_return: np.ndarray,
    episodes: np.ndarray,
    total_steps: int,
) -> float:
    """The paper's final return of one run.

    Mean of the per-update mean episode return over the updates whose cumulative
    environment steps exceed 90% of ``total_steps``, skipping updates in which no
    episode ended.

    Args:
        env_steps: Cumulative environment steps after each update, ``[updates]``.
        episode_return: Mean return of the episodes that ended in each update
            (NaN where none ended), ``[updates]``.
        episodes: Number of episodes that ended in each update, ``[updates]``.
        total_steps: The run's environment-step budget.

    Returns:
        The final return, or NaN if no episode ended in the last 10% of steps.
    """
    env_steps = np.asarray(env_steps, dtype=np.float64)
    episode_return = np.asarray(episode_return, dtype=np.float64)
    episodes = np.asarray(episodes)
    in_tail = env_steps > TAIL_START_FRACTION * total_steps
    ended = (episodes > 0) & ~np.isnan(episode_return)
    chosen = episode_return[in_tail & ended]
    return float(chosen.mean()) if chosen.size else math.nan


def final_returns(metrics: Mapping[str, np.ndarray], total_steps: int) -> np.ndarray:
    """Applies `final_return` to every run of ``[runs, updates]`` metric arrays.

    Args:
        metrics: Must hold ``env_steps``, ``episode_return`` and ``episodes``.
        total_steps: The environment-step budget of every run.

    Returns:
        Float64 array ``[runs]``, NaN for runs with no episode in the tail.
    """
    per_run = zip(metrics["env_steps"], metrics["episode_return"], metrics["episodes"])
    return np.array([final_return(*run, total_steps) for run in per_run], np.float64)


def final_evaluation(
    metrics: Mapping[str, np.ndarray], column: str = "eval_return_det"
) -> np.ndarray:
    """``[runs]`` the evaluation after each run's last update (``column`` at the
    last update: ``eval_return_det`` or ``eval_return``); NaN where none was made."""
    values = metrics.get(column)
    if values is None or values.shape[1] == 0:
        return np.full(len(metrics["env_steps"]), np.nan)
    return np.asarray(values[:, -1], np.float64)


def format_value(value: Any) -> str:
    """Formats a hyperparameter value compactly: numbers with ``:g``, others as str."""
    # bool is a Number in Python, but "1" would hide that it is a switch.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Number):
        return str(value)
    return f"{value:g}"


def setting_label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    """Labels a setting without its seed, e.g. ``"klip clip_eps=0.1"``.

    Args:
        values: ``loss`` and each of ``keys`` mapped to the setting's value.
        keys: The hyperparameter names to show, in order.
    """
    shown = [f"{key}={format_value(values[key])}" for key in keys]
    return " ".join([values["loss"], *shown])


def group_final_returns(
    table: HParams, columns: Sequence[str], finals: Sequence[float] | np.ndarray
) -> list[dict[str, Any]]:
    """Aggregates final returns over seeds, one entry per setting.

    A setting is a loss together with the values of the ``columns`` hyperparameters
    (those that vary).

    Args:
        table: The run table, ``[runs]``.
        columns: Hyperparameter names that vary across runs.
        finals: The final return of each run, ``[runs]``.

    Returns:
        Settings in first-appearance order, each ``{"setting", "loss", <columns>...,
        "mean", "std", "seeds", "values"}``. ``mean`` and ``std`` (population,
        ddof=0) skip NaN finals and are NaN if every seed is NaN; ``seeds`` counts all
        runs of the setting and ``values`` lists their finals in run order.
    """
    runs = run_table.num_runs(table)
    if len(finals) != runs:
        raise ValueError(f"{len(finals)} final returns for {runs} runs")
    keys = ("loss", *columns)
    values = {key: run_table.column(table, key) for key in keys}
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run, final in enumerate(finals):
        setting = {key: values[key][run] for key in keys}
        entry = groups.setdefault(
            tuple(setting.values()),
            {"setting": setting_label(setting, columns), **setting, "values": []},
        )
        entry["values"].append(float(final))
    return [_with_seed_stats(entry) for entry in groups.values()]


def _with_seed_stats(entry: dict[str, Any]) -> dict[str, Any]:
    """Adds mean, std and seed count to a setting entry, keeping ``values`` last."""
    values = entry.pop("values")
    finite = np.array([value for value in values if not math.isnan(value)])
    # Computed by hand on the non-NaN values: np.nanmean warns on all-NaN input.
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=0)) if finite.size else math.nan
    return {**entry, "mean": mean, "std": std, "seeds": len(values), "values": values}
