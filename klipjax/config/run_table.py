"""The run table: ``HParams`` stacked to ``[runs]``, built from names and values.

``hparams`` makes one run, ``grid`` a Cartesian product, ``sample`` a random search;
all check every name and value when called and raise ``ConfigError``. After that
the table is the only description of a run: labels, frames, figures and the
identity check read it through the functions below.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from klipjax.config import checks
from klipjax.config.checks import ConfigError
from klipjax.config.settings import (
    FIELD_OF,
    INT_FIELDS,
    NAMES_OF,
    TRACED_KEYS,
    CodePaths,
    HParams,
    default_value,
)
from klipjax.core.variants import KL_ESTIMATORS, LOSSES


def _check_keys(keys, allowed) -> None:
    for key in keys:
        if key not in allowed:
            hint = checks.suggest(key, allowed) or f" (known: {', '.join(allowed)})"
            raise ConfigError(f"unknown hyperparameter {key!r}{hint}")


def _encode(key: str, value: Any) -> float | int:
    """A checked user value as the number the table stores."""
    field = FIELD_OF.get(key, key)
    if field in NAMES_OF:
        return NAMES_OF[field].index(value)
    return float(value)


def _dtype(field: str):
    return np.int32 if field in INT_FIELDS else np.float32


def _from_rows(rows: Sequence[dict[str, Any]]) -> HParams:
    """Stacks checked rows ``{key: user value, "seed": int}`` into a run table."""
    columns = {}
    for field in HParams._fields:
        key = next((k for k, f in FIELD_OF.items() if f == field), field)
        values = [_encode(key, row[key]) if key != "seed" else row[key] for row in rows]
        columns[field] = np.asarray(values, _dtype(field))
    return HParams(**columns)


def _defaults() -> dict[str, Any]:
    return {key: default_value(key) for key in TRACED_KEYS}


def hparams(**values: Any) -> HParams:
    """One run's hyperparameters; unnamed ones keep the paper's defaults.

    Args:
        **values: ``seed`` and any traced key, by name: ``loss="klip"``,
            ``kl_estimator="k3"``, ``clip_eps=0.1``, ``normalize_obs=True``...

    Returns:
        ``HParams`` of 0-d numpy arrays (``klipjax.train`` takes it as one run).

    Raises:
        ConfigError: An unknown name or a value out of range.
    """
    _check_keys(values, ("seed",) + TRACED_KEYS)
    row = _defaults()
    for key, value in values.items():
        if key == "seed":
            row["seed"] = checks.as_int("seed", value, minimum=0)
        else:
            row[key] = checks.traced_value(key, value)
    row.setdefault("seed", 0)
    table = _from_rows([row])
    return HParams(*(column[0] for column in table))


def grid(*, seeds: int | Sequence[int] = 1, **axes: Any) -> HParams:
    """The Cartesian product of hyperparameter values, seeds innermost.

    Args:
        seeds: A count N (seeds ``0..N-1``) or a list of seeds.
        **axes: Traced keys by name. A list is an axis; a scalar is used by every
            run. Axes vary in the order given, the last fastest (before seeds).

    Returns:
        The run table, every field ``[runs]`` with ``runs = prod(len(axis)) *
        len(seeds)``: run ``i`` has seed ``seeds[i % len(seeds)]``.

    Raises:
        ConfigError: An unknown name, an empty or repeated axis, a bad value.

    Example:
        ``grid(loss=["ppo_clip", "klip"], clip_eps=[0.1, 0.2], seeds=3)`` is 12 runs.
    """
    _check_keys(axes, TRACED_KEYS)
    seed_values = checks.seed_list(seeds)
    fixed = _defaults()
    names, value_lists = [], []
    for key, value in axes.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            values = list(value)
            if not values:
                raise ConfigError(f"{key}=[]: a grid axis needs at least one value")
            checked = [checks.traced_value(key, v) for v in values]
            if len(set(map(repr, checked))) != len(checked):
                raise ConfigError(f"{key}={values!r}: grid values must be distinct")
            names.append(key)
            value_lists.append(checked)
        else:
            fixed[key] = checks.traced_value(key, value)
    rows = [
        {**fixed, **dict(zip(names, combo)), "seed": seed}
        for combo in itertools.product(*value_lists)
        for seed in seed_values
    ]
    return _from_rows(rows)


class Distribution(NamedTuple):
    """A hyperparameter's distribution for ``sample``."""

    kind: str  # "uniform", "loguniform" or "choice"
    values: tuple  # (low, high) or the choices

    def draw(self, key: str, rng: np.random.Generator, n: int) -> list:
        if self.kind == "choice":
            checked = [checks.traced_value(key, v) for v in self.values]
            return [checked[i] for i in rng.integers(len(checked), size=n)]
        if key in ("loss", "kl_estimator") or key in checks.BOOL_KEYS:
            raise ConfigError(f"{key}: draw it with klipjax.choice([...])")
        low, high = (checks.traced_value(key, v) for v in self.values)
        if self.kind == "loguniform":
            if low <= 0:
                raise ConfigError(f"{key}=loguniform({low:g}, {high:g}): needs low > 0")
            drawn = np.exp(rng.uniform(math.log(low), math.log(high), size=n))
        else:
            drawn = rng.uniform(low, high, size=n)
        # float32, as the table stores it, so bounds stay inside the valid range
        return [checks.traced_value(key, float(np.float32(v))) for v in drawn]


def uniform(low: float, high: float) -> Distribution:
    """Uniform on ``[low, high)`` for ``sample``."""
    return _bounded("uniform", low, high)


def loguniform(low: float, high: float) -> Distribution:
    """Log-uniform on ``[low, high)`` (``0 < low``) for ``sample``."""
    return _bounded("loguniform", low, high)


def _bounded(kind: str, low: float, high: float) -> Distribution:
    low, high = checks.as_float(kind, low), checks.as_float(kind, high)
    if not low < high:
        raise ConfigError(f"{kind}({low:g}, {high:g}): needs low < high")
    return Distribution(kind, (low, high))


def choice(values: Sequence[Any]) -> Distribution:
    """One of ``values``, each equally likely, for ``sample``."""
    if isinstance(values, (str, bytes)) or not len(values):
        raise ConfigError(f"choice({values!r}): give a non-empty list of values")
    return Distribution("choice", tuple(values))


def sample(
    n: int, *, seed: int = 0, seeds: int | Sequence[int] = 1, **axes: Any
) -> HParams:
    """A random search: ``n`` settings drawn independently, each run per seed.

    Args:
        n: Settings to draw.
        seed: Seed of the draw itself (not of training).
        seeds: Training seeds per setting: a count or a list.
        **axes: Traced keys by name: ``uniform(a, b)``, ``loguniform(a, b)``,
            ``choice([...])`` or a fixed value.

    Returns:
        The run table, ``[n * len(seeds)]``, seeds innermost. Like ``grid``'s, it
        trains as one program with one compile.

    Raises:
        ConfigError: An unknown name, a bad bound, a value out of range.
    """
    n = checks.as_int("n", n)
    _check_keys(axes, TRACED_KEYS)
    seed_values = checks.seed_list(seeds)
    rng = np.random.default_rng(checks.as_int("seed", seed, minimum=0))
    columns = {key: [value] * n for key, value in _defaults().items()}
    for key, value in axes.items():
        if isinstance(value, Distribution):
            columns[key] = value.draw(key, rng, n)
        else:
            columns[key] = [checks.traced_value(key, value)] * n
    rows = [
        {**{key: column[i] for key, column in columns.items()}, "seed": s}
        for i in range(n)
        for s in seed_values
    ]
    return _from_rows(rows)


def as_table(hp: HParams) -> HParams:
    """``hp`` as a checked ``[runs]`` table of numpy arrays (one run becomes one row).

    Raises:
        ConfigError: Fields of different lengths, ids out of range, or values a
            user could not have given (for tables built by hand).
    """
    if not isinstance(hp, HParams):
        raise ConfigError(
            f"expected klipjax.HParams (from hparams, grid or sample), got "
            f"{type(hp).__name__}"
        )
    columns = [np.asarray(value) for value in hp]
    if all(column.ndim == 0 for column in columns):
        columns = [column[None] for column in columns]
    lengths = {column.shape for column in columns}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ConfigError(
            f"HParams fields must all be scalars or all [runs]; got shapes "
            f"{sorted(map(tuple, lengths))}"
        )
    table = HParams(
        *(column.astype(_dtype(f)) for f, column in zip(HParams._fields, columns))
    )
    for field, names in NAMES_OF.items():
        ids = getattr(table, field)
        bad = ids[(ids < 0) | (ids >= len(names))]
        if bad.size:
            raise ConfigError(f"{field}={int(bad[0])}: expected an index into {names}")
    if (table.seed < 0).any():
        raise ConfigError(f"seed={int(table.seed.min())}: seeds are >= 0")
    for key in TRACED_KEYS:
        for value in dict.fromkeys(column(table, key)):
            checks.traced_value(key, value)
    return table


def concat(*tables: HParams) -> HParams:
    """One run table of several (one program for all of them)."""
    stacked = [as_table(t) for t in tables]
    return HParams(*(np.concatenate(columns) for columns in zip(*stacked)))


def num_runs(table: HParams) -> int:
    return int(np.shape(table.seed)[0])


def _user_value(field: str, number) -> Any:
    if field in NAMES_OF:
        return NAMES_OF[field][int(number)]
    if field == "seed":
        return int(number)
    key = next((k for k, f in FIELD_OF.items() if f == field), field)
    if key in checks.BOOL_KEYS:
        return bool(number)
    return float(str(np.float32(number)))  # the shortest decimal of the float32


def column(table: HParams, key: str) -> list[Any]:
    """The values of one key over the runs, as a user writes them (names, bools)."""
    field = FIELD_OF.get(key, key)
    return [_user_value(field, v) for v in np.asarray(getattr(table, field))]


def run_values(table: HParams, run: int) -> dict[str, Any]:
    """``{"seed": ..., "loss": ..., <traced key>: value}`` of one run."""
    return {key: column(table, key)[run] for key in ("seed",) + TRACED_KEYS}


def varying(table: HParams) -> tuple[str, ...]:
    """Traced keys other than ``loss`` whose value differs between runs."""
    return tuple(
        key
        for key in TRACED_KEYS
        if key != "loss"
        and len(set(np.asarray(getattr(table, FIELD_OF.get(key, key))))) > 1
    )


def code_paths(table: HParams) -> CodePaths:
    """The code paths the runs of ``table`` take (see ``CodePaths``)."""

    def present(key, order):
        values = set(column(table, key))
        return tuple(v for v in order if v in values)

    return CodePaths(
        losses=present("loss", LOSSES),
        kl_estimators=present("kl_estimator", KL_ESTIMATORS),
        normalize_obs=present("normalize_obs", (False, True)),
        normalize_reward=present("normalize_reward", (False, True)),
    )


__all__ = [
    "Distribution",
    "as_table",
    "choice",
    "code_paths",
    "column",
    "concat",
    "grid",
    "hparams",
    "loguniform",
    "num_runs",
    "run_values",
    "sample",
    "uniform",
    "varying",
]
