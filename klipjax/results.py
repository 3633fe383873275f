"""Run results on the host: tidy tables, the paper's final return, atomic files.

Everything here works on numpy arrays the trainer has already pulled off the device,
so it never imports JAX. A run is described by a dict
``{"run": int, "loss": str, "seed": int, "hparams": {name: value}}``; ``swept`` names
the hyperparameters whose value varies across runs. Metrics are ``[runs, updates]``
arrays keyed by name, always including ``env_steps``, ``episode_return``,
``episode_length`` and ``episodes``.

Every writer is atomic: it writes a temporary file next to the target, fsyncs it and
renames it over the target, so a crash leaves either the old file or the new one,
never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# The paper scores a run on the updates in the last 10% of its environment steps.
TAIL_START_FRACTION = 0.9
METRICS_FILE = "metrics.parquet"
INDEX_COLUMNS = ("run", "update", "loss", "seed")


def metrics_frame(
    runs: Sequence[Mapping[str, Any]],
    swept: Sequence[str],
    metrics: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """Lays per-update metrics out as a long table, one row per (run, update).

    Args:
        runs: One dict per run, in the row order of the metric arrays.
        swept: Hyperparameter names that vary across runs; each gets a column.
        metrics: Arrays shaped ``[len(runs), updates]``, one per metric name.

    Returns:
        Columns ``run, update, loss, seed``, then the swept names, then one column
        per metric; rows ordered by run, then update.

    Raises:
        ValueError: If array shapes disagree with each other or with ``runs``, or a
            metric name collides with an index or swept column.
    """
    arrays = {name: np.asarray(values) for name, values in metrics.items()}
    num_runs, num_updates = _check_layout(runs, swept, arrays)

    def per_run(values: list[Any]) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=object), num_updates)

    columns: dict[str, Any] = {
        "run": np.repeat([run["run"] for run in runs], num_updates),
        "update": np.tile(np.arange(num_updates), num_runs),
        "loss": per_run([run["loss"] for run in runs]),
        "seed": np.repeat([run["seed"] for run in runs], num_updates),
    }
    for name in swept:
        columns[name] = per_run([run["hparams"][name] for run in runs])
    columns.update({name: values.reshape(-1) for name, values in arrays.items()})
    # Object columns came from python scalars; let pandas pick their real dtypes.
    return pd.DataFrame(columns).infer_objects()


def _check_layout(
    runs: Sequence[Mapping[str, Any]],
    swept: Sequence[str],
    arrays: Mapping[str, np.ndarray],
) -> tuple[int, int]:
    """Returns ``(runs, updates)`` after checking the metrics agree on it."""
    shape = arrays["env_steps"].shape
    for name, values in arrays.items():
        if values.shape != shape or len(shape) != 2:
            raise ValueError(
                f"metric {name!r} has shape {values.shape}, expected "
                f"[runs, updates] like env_steps {shape}"
            )
    if len(runs) != shape[0]:
        raise ValueError(f"{len(runs)} runs but metrics hold {shape[0]} rows")
    clashes = set(arrays) & {*INDEX_COLUMNS, *swept}
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


def format_value(value: Any) -> str:
    """Formats a hyperparameter value compactly: numbers with ``:g``, others as str."""
    # bool is a Number in Python, but "1" would hide that it is a switch.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Number):
        return str(value)
    return f"{value:g}"


def setting_label(run: Mapping[str, Any], swept: Sequence[str]) -> str:
    """Labels a run's setting without its seed, e.g. ``"klip clip_eps=0.1"``.

    Args:
        run: A run dict with ``loss`` and ``hparams``.
        swept: The hyperparameter names to show, in order.

    Returns:
        The loss name followed by ``name=value`` for each swept name.
    """
    values = [f"{name}={format_value(run['hparams'][name])}" for name in swept]
    return " ".join([run["loss"], *values])


def group_final_returns(
    runs: Sequence[Mapping[str, Any]],
    swept: Sequence[str],
    finals: Sequence[float] | np.ndarray,
) -> list[dict[str, Any]]:
    """Aggregates final returns over seeds, one entry per setting.

    A setting is a loss together with the values of the swept hyperparameters.

    Args:
        runs: One dict per run.
        swept: Hyperparameter names that vary across runs.
        finals: The final return of each run, aligned with ``runs``.

    Returns:
        Settings in first-appearance order, each ``{"setting", "loss", <swept
        names>..., "mean", "std", "seeds", "values"}``. ``mean`` and ``std``
        (population, ddof=0) skip NaN finals and are NaN if every seed is NaN;
        ``seeds`` counts all runs of the setting and ``values`` lists their finals
        in run order, NaN included.
    """
    if len(finals) != len(runs):
        raise ValueError(f"{len(finals)} final returns for {len(runs)} runs")
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run, final in zip(runs, finals):
        key = (run["loss"], *(run["hparams"][name] for name in swept))
        if key not in groups:
            groups[key] = {"setting": setting_label(run, swept), "loss": run["loss"]}
            groups[key].update({name: run["hparams"][name] for name in swept})
            groups[key]["values"] = []
        groups[key]["values"].append(float(final))
    return [_with_seed_stats(entry) for entry in groups.values()]


def _with_seed_stats(entry: dict[str, Any]) -> dict[str, Any]:
    """Adds mean, std and seed count to a setting entry, keeping ``values`` last."""
    values = entry.pop("values")
    finite = np.array([value for value in values if not math.isnan(value)])
    # Computed by hand on the non-NaN values: np.nanmean warns on all-NaN input.
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=0)) if finite.size else math.nan
    return {**entry, "mean": mean, "std": std, "seeds": len(values), "values": values}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path`` with it.

    The temporary file sits in the same directory (so the final rename is atomic)
    and keeps ``path``'s suffix (so writers that infer the format still work). It
    is fsynced before the rename, and removed if the body raises, leaving any old
    file at ``path`` untouched. Missing parent directories are created.

    Args:
        path: The file to produce.

    Yields:
        The temporary path; it exists, empty, when the body starts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")
    # O_EXCL claims the name; creating it through os.open keeps the umask's mode
    # rather than mkstemp's 0600.
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable; only POSIX can open a directory for this."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Atomically writes bytes, or a str as UTF-8, to ``path``; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(payload)
    return Path(path)


def to_builtin(obj: Any, *, nonfinite_to_none: bool = False) -> Any:
    """Converts numpy scalars and arrays, tuples and mappings to plain Python.

    Args:
        obj: A nest of dicts, lists, tuples, numpy values and Python scalars.
        nonfinite_to_none: Replace NaN and +-inf floats by None (strict JSON).

    Returns:
        The same nest made of dict, list, and Python scalars; anything else is
        passed through unchanged for the serialiser to accept or reject.
    """

    def convert(value: Any) -> Any:
        return to_builtin(value, nonfinite_to_none=nonfinite_to_none)

    if isinstance(obj, Mapping):
        # Keys stay hashable: only numpy scalars are unwrapped, tuples stay tuples.
        return {
            key.item() if isinstance(key, np.generic) else key: convert(value)
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [convert(value) for value in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return convert(obj.tolist())
    if isinstance(obj, float) and nonfinite_to_none and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically writes strict JSON: NaN and inf become null, numpy becomes Python.

    Raises:
        TypeError: If ``obj`` holds something JSON cannot represent; the file at
            ``path`` is then left as it was.
    """
    # Serialising before touching the disk means a failure cannot leave a stub.
    text = json.dumps(
        to_builtin(obj, nonfinite_to_none=True), indent=2, allow_nan=False
    )
    return write_atomic(path, text + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically writes YAML with ``yaml.safe_dump``, keeping key order."""
    text = yaml.safe_dump(to_builtin(obj), sort_keys=False, allow_unicode=True)
    return write_atomic(path, text)


def write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Atomically writes ``frame`` (without its index) as Parquet via pyarrow."""
    with atomic_path(path) as temp:
        frame.to_parquet(temp, engine="pyarrow", index=False)
    return Path(path)


def read_metrics(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Reads the per-update metrics table a run directory holds."""
    return pd.read_parquet(Path(run_dir) / METRICS_FILE, engine="pyarrow")
