"""Configuration: static settings, traced hyperparameters, loading and validation.

A sweep is one compiled program. ``StaticConfig`` holds everything that sets a shape,
a scan length or a Python branch; it must be the same for every run of a sweep.
``HParams`` holds everything a user may sweep (the loss variant included, as an
integer id): one value per run, traced, so a whole grid shares one compile.

Configs come from a YAML file plus ``--set key=value`` overrides. A value given as a
list becomes a grid axis; ``seeds: N`` (or a list of seeds) is the seed axis.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from pathlib import Path
from typing import Any, NamedTuple

import yaml

LOSSES = (
    "ppo_clip",
    "klip",
    "klip_linear_ramp",
    "klip_sigmoid",
    "soft_min",
    "kl_fixed",
    "kl_adaptive",
    "unclipped",
)
KL_ESTIMATORS = ("analytic", "sample", "k3")
SOFT_LOSSES = ("klip_linear_ramp", "klip_sigmoid", "soft_min")
KL_PENALTY_LOSSES = ("kl_fixed", "kl_adaptive")  # the variants that use a KL estimate


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class StaticConfig:
    """Settings that fix the compiled program: shared by every run of a sweep."""

    env: str = "CartPole-v1"
    total_steps: int = 100_000
    num_envs: int = 4
    num_steps: int = 128
    epochs: int = 10
    minibatch_size: int = 64
    hidden_sizes: tuple[int, ...] = (64, 64)
    identity_check: bool = False

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_minibatches(self) -> int:
        return self.batch_size // self.minibatch_size

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.batch_size


class HParams(NamedTuple):
    """Per-run traced hyperparameters (scalars; stacked to ``[runs]`` for a sweep)."""

    seed: Any
    loss_id: Any
    kl_estimator_id: Any
    lr: Any
    anneal_lr: Any
    clip_eps: Any
    beta: Any
    kl_target: Any
    softness: Any
    gamma: Any
    gae_lambda: Any
    ent_coef: Any
    vf_coef: Any
    max_grad_norm: Any
    value_clip_eps: Any
    normalize_obs: Any
    normalize_reward: Any


# Defaults: the shared PPO recipe of the paper (CartPole-v1 settings).
TRACED_DEFAULTS: dict[str, Any] = {
    "loss": "ppo_clip",
    "kl_estimator": "analytic",
    "lr": 3e-4,
    "anneal_lr": True,
    "clip_eps": 0.2,
    "beta": 1.0,
    "kl_target": 0.02,
    "softness": 0.05,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "value_clip_eps": 0.2,
    "normalize_obs": False,
    "normalize_reward": False,
}
STATIC_KEYS = tuple(f.name for f in dataclasses.fields(StaticConfig))
RUN_KEYS = ("seeds", "chunk_updates", "checkpoint_every", "parallel_runs")
ALL_KEYS = STATIC_KEYS + tuple(TRACED_DEFAULTS) + RUN_KEYS
BOOL_KEYS = ("anneal_lr", "normalize_obs", "normalize_reward", "identity_check")
INT_KEYS = ("total_steps", "num_envs", "num_steps", "epochs", "minibatch_size")


@dataclasses.dataclass(frozen=True)
class CodePaths:
    """The code paths a sweep's runs take; the program is compiled with these alone.

    A choice every run shares becomes a compile-time constant, so a single-variant
    sweep carries no branch for the other variants and a sweep without normalisation
    no normaliser updates. The defaults keep every path (each chosen at run time).
    """

    losses: tuple[str, ...] = LOSSES
    kl_estimators: tuple[str, ...] = KL_ESTIMATORS
    normalize_obs: tuple[bool, ...] = (False, True)
    normalize_reward: tuple[bool, ...] = (False, True)

    @property
    def needs_kl(self) -> bool:
        """Whether any run's loss penalises a KL estimate."""
        return any(loss in KL_PENALTY_LOSSES for loss in self.losses)


def code_paths(runs) -> CodePaths:
    """The ``CodePaths`` that the given runs (dicts of traced values) use."""

    def present(key, order):
        return tuple(v for v in order if any(run[key] == v for run in runs))

    return CodePaths(
        losses=present("loss", LOSSES),
        kl_estimators=present("kl_estimator", KL_ESTIMATORS),
        normalize_obs=present("normalize_obs", (False, True)),
        normalize_reward=present("normalize_reward", (False, True)),
    )


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A resolved sweep: the static settings, the list of runs, and run options."""

    static: StaticConfig
    runs: tuple[dict[str, Any], ...]  # one dict of traced values (+ "seed") per run
    swept: tuple[str, ...]  # traced keys other than loss and seed that vary across runs
    raw: dict[str, Any]  # the merged config as given, lists included: rerunnable
    chunk_updates: int | None = None
    checkpoint_every: int = 0  # updates between checkpoints; 0: only on interrupt
    # Runs advanced at once; the others wait their turn inside the same program.
    # 0: all of them, unless the program would not fit in memory (then fewer).
    parallel_runs: int = 0

    @property
    def num_runs(self) -> int:
        return len(self.runs)

    @property
    def code_paths(self) -> CodePaths:
        return code_paths(self.runs)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


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


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={value!r}: expected true or false")


def _numeric_string(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _as_int(key: str, value: Any, minimum: int = 1) -> int:
    value = _numeric_string(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _as_float(key: str, value: Any) -> float:
    value = _numeric_string(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r}: expected a number")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r}: expected a finite number")
    return float(value)


# (low, high, low_inclusive, high_inclusive) for each numeric traced key.
RANGES = {
    "lr": (0.0, math.inf, False, False),
    "clip_eps": (0.0, 1.0, False, False),
    "beta": (0.0, math.inf, True, False),
    "kl_target": (0.0, math.inf, False, False),
    "softness": (0.0, math.inf, False, False),
    "gamma": (0.0, 1.0, True, True),
    "gae_lambda": (0.0, 1.0, True, True),
    "ent_coef": (-math.inf, math.inf, False, False),
    "vf_coef": (0.0, math.inf, True, False),
    "max_grad_norm": (0.0, math.inf, False, False),
    "value_clip_eps": (0.0, math.inf, False, False),
}


def _check_range(key: str, value: float) -> float:
    low, high, low_in, high_in = RANGES[key]
    ok_low = value >= low if low_in else value > low
    ok_high = value <= high if high_in else value < high
    if not (ok_low and ok_high):
        left = "[" if low_in else "("
        right = "]" if high_in else ")"
        raise ConfigError(
            f"{key}={value!r}: expected a value in {left}{low:g}, {high:g}{right}"
        )
    return value


def _validate_traced(key: str, value: Any) -> Any:
    if key == "loss":
        if value not in LOSSES:
            raise ConfigError(
                f"loss={value!r}: unknown loss{_suggest(value, LOSSES)}; "
                f"choose from {', '.join(LOSSES)}"
            )
        return value
    if key == "kl_estimator":
        if value not in KL_ESTIMATORS:
            raise ConfigError(
                f"kl_estimator={value!r}: choose from {', '.join(KL_ESTIMATORS)}"
            )
        return value
    if key in BOOL_KEYS:
        return _as_bool(key, value)
    return _check_range(key, _as_float(key, value))


def _validate_env(env: Any) -> str:
    from klipjax.envs import registered_ids  # deferred: importing gymnax costs a second

    known = registered_ids()
    if not isinstance(env, str) or env not in known:
        raise ConfigError(
            f"env={env!r}: not a registered gymnax environment{_suggest(env, known)}"
        )
    return env


def _validate_static(values: dict[str, Any]) -> StaticConfig:
    kwargs: dict[str, Any] = {}
    for key in STATIC_KEYS:
        if key not in values:
            continue
        value = values[key]
        if isinstance(value, list) and key != "hidden_sizes":
            raise ConfigError(
                f"{key}={value!r}: {key} sets the program's shapes and cannot be a grid "
                "axis; run one sweep per value"
            )
        if key == "env":
            kwargs[key] = _validate_env(value)
        elif key in INT_KEYS:
            kwargs[key] = _as_int(key, value)
        elif key == "identity_check":
            kwargs[key] = _as_bool(key, value)
        elif key == "hidden_sizes":
            sizes = value if isinstance(value, list) else [value]
            kwargs[key] = tuple(_as_int(key, v) for v in sizes)
    static = StaticConfig(**kwargs)
    if static.batch_size % static.minibatch_size:
        raise ConfigError(
            f"minibatch_size={static.minibatch_size}: must divide "
            f"num_envs*num_steps={static.batch_size}"
        )
    if static.total_steps < static.batch_size:
        raise ConfigError(
            f"total_steps={static.total_steps}: smaller than one rollout "
            f"(num_envs*num_steps={static.batch_size})"
        )
    return static


def _seed_list(value: Any) -> list[int]:
    if isinstance(value, list):
        if not value:
            raise ConfigError(
                "seeds=[]: give a count N >= 1 or a non-empty list of seeds"
            )
        return [_as_int("seeds", v, minimum=0) for v in value]
    return list(range(_as_int("seeds", value, minimum=1)))


def resolve(values: dict[str, Any]) -> SweepConfig:
    """Validates a merged config dict and expands its grid into runs.

    The grid is the Cartesian product of every list-valued traced key, in the order
    the keys appear, with seeds innermost. Raises ``ConfigError`` on any bad value.
    """
    for key in values:
        if key not in ALL_KEYS:
            hint = _suggest(key, ALL_KEYS) or f" (known keys: {', '.join(ALL_KEYS)})"
            raise ConfigError(f"unknown config key {key!r}{hint}")
    static = _validate_static(values)
    seeds = _seed_list(values.get("seeds", 1))
    chunk = values.get("chunk_updates")
    chunk = None if chunk is None else _as_int("chunk_updates", chunk)
    checkpoint_every = _as_int("checkpoint_every", values.get("checkpoint_every", 0), 0)
    parallel_runs = _as_int("parallel_runs", values.get("parallel_runs", 0), 0)

    axes: list[tuple[str, list[Any]]] = []
    fixed: dict[str, Any] = {}
    for key, default in TRACED_DEFAULTS.items():
        value = values.get(key, default)
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{key}=[]: a grid axis needs at least one value")
            checked = [_validate_traced(key, v) for v in value]
            if len(set(map(repr, checked))) != len(checked):
                raise ConfigError(f"{key}={value!r}: grid values must be distinct")
            axes.append((key, checked))
        else:
            fixed[key] = _validate_traced(key, value)
    # Keep the user's key order for the grid axes (lists in YAML/--set order).
    order = [k for k in values if any(k == name for name, _ in axes)]
    axes.sort(key=lambda axis: order.index(axis[0]))

    runs = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        setting = {**fixed, **dict(zip((name for name, _ in axes), combo))}
        for seed in seeds:
            runs.append({**setting, "seed": seed})
    _check_soft_losses(runs)
    # The loss and the seed are identified on their own; swept names the rest.
    swept = tuple(name for name, vals in axes if len(vals) > 1 and name != "loss")
    return SweepConfig(
        static=static,
        runs=tuple(runs),
        swept=swept,
        raw=dict(values),
        chunk_updates=chunk,
        checkpoint_every=checkpoint_every,
        parallel_runs=parallel_runs,
    )


def _check_soft_losses(runs) -> None:
    for run in runs:
        if run["loss"] in SOFT_LOSSES and not run["softness"] > 0:
            raise ConfigError(
                f"softness={run['softness']!r}: loss {run['loss']} needs softness > 0"
            )


def load(config_path: str | Path | None, overrides: list[str] = ()) -> SweepConfig:
    """Loads a config file (or the defaults), applies ``key=value`` overrides, resolves."""
    values = load_file(config_path) if config_path is not None else default_values()
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    return resolve(values)


def default_values() -> dict[str, Any]:
    """The default sweep: the paper's CartPole-v1 grid (4 variants x 5 seeds)."""
    return {
        "env": "CartPole-v1",
        "loss": ["ppo_clip", "klip", "kl_fixed", "kl_adaptive"],
        "seeds": 5,
        "total_steps": 100_000,
        "num_envs": 4,
        "num_steps": 128,
    }


def hparams_of(run: dict[str, Any]) -> HParams:
    """Turns one run's traced values into numeric ``HParams`` fields (host scalars)."""
    return HParams(
        seed=int(run["seed"]),
        loss_id=LOSSES.index(run["loss"]),
        kl_estimator_id=KL_ESTIMATORS.index(run["kl_estimator"]),
        **{
            key: float(run[key])
            for key in HParams._fields
            if key not in ("seed", "loss_id", "kl_estimator_id")
        },
    )


def resolved_dict(sweep: SweepConfig) -> dict[str, Any]:
    """The fully resolved config (every key, grid axes as lists): enough to rerun."""
    values: dict[str, Any] = {}
    for key in STATIC_KEYS:
        value = getattr(sweep.static, key)
        values[key] = list(value) if isinstance(value, tuple) else value
    for key, default in TRACED_DEFAULTS.items():
        given = sweep.raw.get(key, default)
        values[key] = given
    seeds = sorted({run["seed"] for run in sweep.runs})
    values["seeds"] = len(seeds) if seeds == list(range(len(seeds))) else seeds
    if sweep.chunk_updates is not None:
        values["chunk_updates"] = sweep.chunk_updates
    if sweep.checkpoint_every:
        values["checkpoint_every"] = sweep.checkpoint_every
    if sweep.parallel_runs:
        values["parallel_runs"] = sweep.parallel_runs
    return values
