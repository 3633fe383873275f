"""Checks of single values: types, ranges and "did you mean" suggestions.

Every entry point (``Config``, ``hparams``, ``grid``, ``sample``, config files and
``--set``) checks through these, so a bad value gets the same one-line message
wherever it was given.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from klipjax.core.variants import KL_ESTIMATORS, LOSSES


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, value and what is allowed."""


def suggest(word: Any, choices) -> str:
    """`` (did you mean a, b?)`` for close matches of ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def numeric_string(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if getattr(value, "shape", None) == () and getattr(value, "dtype", None) == bool:
        return bool(value)  # a numpy bool
    raise ConfigError(f"{key}={value!r}: expected true or false")


def as_int(key: str, value: Any, minimum: int = 1) -> int:
    value = numeric_string(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # numpy / jax scalars
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}")
    return int(value)


def as_float(key: str, value: Any) -> float:
    value = numeric_string(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
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
BOOL_KEYS = ("anneal_lr", "normalize_obs", "normalize_reward")
CHOICES = {"loss": LOSSES, "kl_estimator": KL_ESTIMATORS}


def in_range(key: str, value: float) -> float:
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


def traced_value(key: str, value: Any) -> Any:
    """One traced hyperparameter's value, checked: a name for ``loss`` and
    ``kl_estimator``, a bool for the switches, a float in range otherwise."""
    if key == "loss":
        if value not in LOSSES:
            raise ConfigError(
                f"loss={value!r}: unknown loss{suggest(value, LOSSES)}; "
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
        return as_bool(key, value)
    return in_range(key, as_float(key, value))


def seed_list(value: Any) -> list[int]:
    """``seeds``: a count N (seeds 0..N-1) or a non-empty list of seeds >= 0."""
    if isinstance(value, (list, tuple, range)):
        if not len(value):
            raise ConfigError(
                "seeds=[]: give a count N >= 1 or a non-empty list of seeds"
            )
        seeds = [as_int("seeds", v, minimum=0) for v in value]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds={list(value)!r}: seeds must be distinct")
        return seeds
    return list(range(as_int("seeds", value, minimum=1)))
