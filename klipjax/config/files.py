"""Sweeps as YAML: config files, ``--set key=value`` overrides, and back.

A file is a mapping of ``Config`` keys, traced keys and run options. A traced key
given a list is a grid axis; ``seeds: N`` (or a list) is the seed axis; a ``runs:``
list of mappings gives the run table row by row instead (what ``to_dict`` writes for
tables that are not a grid, such as a random search).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from klipjax.config import checks, run_table
from klipjax.config.checks import ConfigError
from klipjax.config.settings import STATIC_KEYS, TRACED_KEYS, Config, HParams

OPTION_KEYS = ("chunk_updates", "checkpoint_every", "parallel_runs")
ALL_KEYS = STATIC_KEYS + TRACED_KEYS + ("seeds", "runs") + OPTION_KEYS


class Experiment(NamedTuple):
    """A sweep as a file describes it: ``train(config, hparams, **options)``."""

    config: Config
    hparams: HParams
    options: dict[str, int]  # the run options given (chunk_updates, ...)


def parse_override(text: str) -> tuple[str, Any]:
    """Parses ``key=value``; the value is read as YAML (``[a,b]`` is a list)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, _, value = text.partition("=")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
    return key.strip(), parsed


def load_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML config file into a dict (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{where}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of key: value")
    return data


def default_values() -> dict[str, Any]:
    """``klipjax train`` without a file: the paper's CartPole-v1 grid (4 x 5 seeds)."""
    return {
        "env": "CartPole-v1",
        "loss": ["ppo_clip", "klip", "kl_fixed", "kl_adaptive"],
        "seeds": 5,
        "total_steps": 100_000,
        "num_envs": 4,
        "num_steps": 128,
    }


def from_dict(values: dict[str, Any]) -> Experiment:
    """Checks a config mapping and builds its ``Config``, run table and options.

    Raises:
        ConfigError: An unknown key or any bad value (one line naming it).
    """
    for key in values:
        if key not in ALL_KEYS:
            hint = (
                checks.suggest(key, ALL_KEYS) or f" (known keys: {', '.join(ALL_KEYS)})"
            )
            raise ConfigError(f"unknown config key {key!r}{hint}")
    config = Config(**{k: values[k] for k in STATIC_KEYS if k in values})
    options = {}
    for key in OPTION_KEYS:
        if values.get(key) is not None:
            minimum = 1 if key == "chunk_updates" else 0
            options[key] = checks.as_int(key, values[key], minimum)
    traced = {k: v for k, v in values.items() if k in TRACED_KEYS}
    if "runs" in values:
        table = _table_of_rows(values["runs"], traced, values.get("seeds"))
    else:
        table = run_table.grid(seeds=values.get("seeds", 1), **traced)
    return Experiment(config, table, options)


def _table_of_rows(rows: Any, shared: dict[str, Any], seeds: Any) -> HParams:
    if seeds is not None:
        raise ConfigError("seeds: give each run's seed inside runs: instead")
    if (
        not isinstance(rows, list)
        or not rows
        or not all(isinstance(r, dict) for r in rows)
    ):
        raise ConfigError("runs: expected a non-empty list of key: value mappings")
    lists = [k for k, v in shared.items() if isinstance(v, list)]
    if lists:
        raise ConfigError(f"{lists[0]}: no grid axes beside runs:")
    return run_table.concat(*(run_table.hparams(**{**shared, **row}) for row in rows))


def load(path: str | Path | None, overrides: list[str] = ()) -> Experiment:
    """A config file (or the default grid) with ``key=value`` overrides applied."""
    values = load_file(path) if path is not None else default_values()
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    return from_dict(values)


def to_dict(
    config: Config, table: HParams, options: dict[str, int] | None = None
) -> dict:
    """The mapping that ``from_dict`` turns back into this exact sweep: every
    ``Config`` key, then the traced keys (grid axes as lists) or a ``runs:`` list."""
    values: dict[str, Any] = {}
    for key in STATIC_KEYS:
        value = getattr(config, key)
        values[key] = list(value) if isinstance(value, tuple) else value
    table = run_table.as_table(table)
    axes = _as_grid(table)
    if axes is not None:
        axes_values, seeds = axes
        values.update(axes_values)
        values["seeds"] = len(seeds) if seeds == list(range(len(seeds))) else seeds
    else:
        columns = {key: run_table.column(table, key) for key in ("seed",) + TRACED_KEYS}
        shared = {k: c[0] for k, c in columns.items() if len(set(map(repr, c))) == 1}
        values.update({k: v for k, v in shared.items() if k != "seed"})
        values["runs"] = [
            {k: c[i] for k, c in columns.items() if k not in shared or k == "seed"}
            for i in range(run_table.num_runs(table))
        ]
    values.update({k: v for k, v in (options or {}).items() if v})
    return values


def _as_grid(table: HParams) -> tuple[dict[str, Any], list[int]] | None:
    """The axes and seeds whose ``grid`` is ``table``, or None if it is not one."""
    columns = {key: run_table.column(table, key) for key in TRACED_KEYS}
    seeds = list(dict.fromkeys(run_table.column(table, "seed")))
    axes = {}
    for key, values in columns.items():
        distinct = list(dict.fromkeys(values))
        axes[key] = distinct if len(distinct) > 1 else distinct[0]
    # Axes in the order in which they vary, slowest first (the grid's key order).
    varying = [k for k, v in axes.items() if isinstance(v, list)]
    varying.sort(key=lambda k: _first_change(columns[k]), reverse=True)
    ordered = {k: axes[k] for k in TRACED_KEYS if k not in varying}
    ordered.update({k: axes[k] for k in varying})
    try:
        rebuilt = run_table.grid(seeds=seeds, **ordered)
    except ConfigError:
        return None
    same = run_table.num_runs(rebuilt) == run_table.num_runs(table) and all(
        np.array_equal(a, b) for a, b in zip(rebuilt, table)
    )
    return (ordered, seeds) if same else None


def _first_change(values: list[Any]) -> int:
    """Index of the first run whose value differs from run 0's (larger: slower)."""
    return next((i for i, v in enumerate(values) if v != values[0]), len(values))
