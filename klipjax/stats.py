"""Statistics for comparing variants over few seeds, with their uncertainty.

The recommendations of Agarwal et al., "Deep Reinforcement Learning at the Edge of
the Statistical Precipice" (NeurIPS 2021, https://arxiv.org/abs/2108.13264): the
interquartile mean (IQM) as the point estimate, stratified bootstrap confidence
intervals with seeds as the replication unit, the probability of improvement
between two variants, and performance profiles.

Scores are given per task: a 1-D array of one score per seed (one task), a 2-D
array ``[seeds, tasks]``, or a sequence of 1-D arrays, one per task, which may
hold different numbers of seeds. Statistics over several tasks pool every run of
every task (so scores of different tasks should be normalised to a common scale
first, see `normalize`); the bootstrap resamples seeds within each task
independently. Every function raises ``ValueError`` on empty tasks or non-finite
scores: drop missing runs explicitly before calling.

Everything is numpy; resampling is vectorised over the resamples, and a fixed
``seed`` makes every interval reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_RESAMPLES = 10_000
# Bootstrap work is done in blocks of about this many numbers, to bound memory.
_BLOCK_ELEMENTS = 1 << 22

Scores = ArrayLike | Sequence[ArrayLike]


class Estimate(NamedTuple):
    """A point estimate and its confidence interval."""

    value: float
    low: float
    high: float


class Profile(NamedTuple):
    """A performance profile: at each threshold ``tau``, the fraction of runs that
    score above it, with a pointwise confidence band."""

    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray


def by_task(scores: Scores) -> list[np.ndarray]:
    """Scores as a list of float64 1-D arrays, one per task.

    Args:
        scores: ``[seeds]`` (one task), ``[seeds, tasks]``, or one ``[seeds]``
            array per task.

    Raises:
        ValueError: A task without scores, a non-finite score, or a shape that is
            none of the above.
    """
    if isinstance(scores, np.ndarray) or not isinstance(scores, Sequence):
        array = np.asarray(scores, np.float64)
        if array.ndim == 1:
            tasks = [array]
        elif array.ndim == 2:
            tasks = [array[:, task] for task in range(array.shape[1])]
        else:
            raise ValueError(
                f"scores of shape {array.shape}: expected [seeds] or [seeds, tasks]"
            )
    elif scores and all(np.ndim(task) == 0 for task in scores):
        tasks = [np.asarray(scores, np.float64)]  # a plain list of numbers
    else:
        tasks = [np.asarray(task, np.float64) for task in scores]
    if not tasks:
        raise ValueError("no tasks given")
    for index, task in enumerate(tasks):
        if task.ndim != 1:
            raise ValueError(
                f"task {index}: scores of shape {task.shape}, expected 1-D"
            )
        if task.size == 0:
            raise ValueError(f"task {index} has no scores")
        if not np.isfinite(task).all():
            raise ValueError(f"task {index} holds non-finite scores: drop them first")
    return tasks


def iqm(scores: ArrayLike, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of the scores.

    With the ``n`` sorted scores ``x_(0) <= ... <= x_(n-1)``, score ``x_(i)`` stands
    for the interval ``[i, i+1)`` of the sample's mass ``[0, n)``; the IQM is the
    mean over ``[n/4, 3n/4)``::

        IQM = (2/n) * sum_i w_i x_(i),   w_i = |[i, i+1) ∩ [n/4, 3n/4)|

    so a score on the quartile boundary counts with the fraction of it inside.
    For ``n`` divisible by 4 this is the mean of the middle ``n/2`` scores (as
    ``scipy.stats.trim_mean(x, 0.25)``); unlike a trimmed mean that drops
    ``floor(n/4)`` scores per side, it stays the middle half for every ``n``: for
    ``n = 3`` it is ``(x_(0) + 4 x_(1) + x_(2)) / 6``, not the plain mean.

    Args:
        scores: Any shape; NaN is not skipped (it propagates).
        axis: The axis to reduce; None flattens.

    Returns:
        A float for ``axis=None``, else an array without ``axis``.
    """
    array = np.asarray(scores, np.float64)
    if axis is None:
        array, axis = array.reshape(-1), 0
    array = np.moveaxis(array, axis, -1)
    n = array.shape[-1]
    if n == 0:
        raise ValueError("IQM of no scores")
    start = np.arange(n)
    weights = np.clip(
        np.minimum(start + 1, 0.75 * n) - np.maximum(start, 0.25 * n), 0, 1
    )
    result = np.sort(array, axis=-1) @ weights / (0.5 * n)
    return float(result) if np.ndim(result) == 0 else result


def mean(scores: ArrayLike, axis: int | None = None) -> np.ndarray | float:
    """The arithmetic mean (a statistic with the signature `iqm` has)."""
    result = np.mean(np.asarray(scores, np.float64), axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def median(scores: ArrayLike, axis: int | None = None) -> np.ndarray | float:
    """The median (a statistic with the signature `iqm` has)."""
    result = np.median(np.asarray(scores, np.float64), axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def normalize(scores: Scores, low: Sequence[float], high: Sequence[float]) -> list:
    """Scales each task's scores to ``(x - low) / (high - low)``.

    Args:
        scores: Per-task scores (see `by_task`).
        low: Per task, the score that becomes 0 (e.g. a random policy's).
        high: Per task, the score that becomes 1 (e.g. the maximum return).

    Returns:
        One normalised ``[seeds]`` array per task.
    """
    tasks = by_task(scores)
    if not len(low) == len(high) == len(tasks):
        raise ValueError(
            f"{len(tasks)} tasks but {len(low)} lows and {len(high)} highs"
        )
    for index, (lo, hi) in enumerate(zip(low, high)):
        if not hi > lo:
            raise ValueError(f"task {index}: high={hi} is not above low={lo}")
    return [(task - lo) / (hi - lo) for task, lo, hi in zip(tasks, low, high)]


def _resample(task: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[count, n]``: ``count`` bootstrap samples of the task's ``n`` seeds."""
    return task[rng.integers(0, task.size, size=(count, task.size))]


def _blocks(resamples: int, width: int) -> list[int]:
    """Block sizes summing to ``resamples``, each ``width`` wide at most
    ``_BLOCK_ELEMENTS`` numbers."""
    size = max(1, _BLOCK_ELEMENTS // max(width, 1))
    return [min(size, resamples - start) for start in range(0, resamples, size)]


def _check_interval_args(confidence: float, resamples: int, method: str) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be at least 1")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method={method!r}: choose 'percentile' or 'bca'")


def _interval(
    point: float,
    replicates: np.ndarray,
    jackknife: Callable[[], np.ndarray] | None,
    confidence: float,
) -> Estimate:
    """The percentile interval of the bootstrap ``replicates``; with ``jackknife``
    (leave-one-out values of the statistic) the bias-corrected and accelerated
    (BCa) interval of Efron (1987)."""
    alpha = (1 - confidence) / 2
    levels = np.array([alpha, 1 - alpha])
    if jackknife is not None:
        normal = NormalDist()
        # Ties with the point estimate count half, so a statistic that sits on a
        # discrete value (many seeds at the maximum return) keeps z0 finite.
        below = np.mean(replicates < point) + 0.5 * np.mean(replicates == point)
        below = min(max(below, 0.5 / replicates.size), 1 - 0.5 / replicates.size)
        z0 = normal.inv_cdf(below)
        leave_one_out = jackknife()
        deviations = leave_one_out.mean() - leave_one_out
        spread = np.sum(deviations**2)
        acceleration = np.sum(deviations**3) / (6 * spread**1.5) if spread > 0 else 0.0
        z = np.array([normal.inv_cdf(level) for level in levels])
        adjusted = z0 + (z0 + z) / (1 - acceleration * (z0 + z))
        levels = np.array([normal.cdf(value) for value in adjusted])
    low, high = np.quantile(replicates, levels)
    return Estimate(float(point), float(low), float(high))


def interval_estimate(
    scores: Scores,
    statistic: Callable[..., np.ndarray | float] = iqm,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    method: str = "percentile",
    seed: int = 0,
) -> Estimate:
    """A statistic of the pooled scores with a stratified bootstrap interval.

    Each bootstrap replicate draws, for every task independently, as many seeds
    as the task has, with replacement, from that task's seeds; pools the draws
    of all tasks; and evaluates ``statistic`` on the pool. The interval is the
    ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles of the replicates
    (``method="percentile"``), or those levels corrected for bias and skew
    (``"bca"``: bias-corrected and accelerated, with the acceleration from a
    leave-one-seed-out jackknife), which covers better with few seeds.

    Args:
        scores: Per-task scores (see `by_task`).
        statistic: ``f(x, axis=...)`` reducing an axis: `iqm`, `mean`, `median`.
        confidence: The interval's nominal coverage.
        resamples: Bootstrap replicates.
        method: ``"percentile"`` or ``"bca"``.
        seed: Seeds the resampling, so an interval is reproducible.

    Returns:
        ``Estimate(value, low, high)``: ``value`` the statistic on the data.
    """
    _check_interval_args(confidence, resamples, method)
    tasks = by_task(scores)
    pooled = np.concatenate(tasks)
    point = float(statistic(pooled, axis=-1))
    rng = np.random.default_rng(seed)
    replicates = np.concatenate(
        [
            np.asarray(
                statistic(
                    np.concatenate([_resample(t, count, rng) for t in tasks], axis=1),
                    axis=-1,
                )
            )
            for count in _blocks(resamples, pooled.size)
        ]
    )

    def jackknife() -> np.ndarray:
        keep = ~np.eye(pooled.size, dtype=bool)
        return np.asarray(
            statistic(
                np.broadcast_to(pooled, keep.shape)[keep].reshape(pooled.size, -1),
                axis=-1,
            )
        )

    use_jackknife = method == "bca" and pooled.size > 1
    return _interval(
        point, replicates, jackknife if use_jackknife else None, confidence
    )


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``P(X > Y) + P(X = Y)/2`` over all pairs, per leading index: ``x`` is
    ``[..., n]``, ``y`` is ``[..., m]``."""
    wins = x[..., :, None] > y[..., None, :]
    ties = x[..., :, None] == y[..., None, :]
    # Counts of halves are exact in float64, so identical samples give exactly 1/2.
    return np.sum(wins + 0.5 * ties, axis=(-2, -1)) / (x.shape[-1] * y.shape[-1])


def probability_of_improvement(
    x: Scores,
    y: Scores,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    method: str = "percentile",
    seed: int = 0,
) -> Estimate:
    """The probability that variant X beats variant Y on a task drawn at random.

    Per task ``k``, with X's scores ``x_1..x_n`` and Y's ``y_1..y_m``, the
    Mann-Whitney statistic over all pairs::

        P_k(X > Y) = (1 / (n m)) * sum_i sum_j S(x_i, y_j),
        S(a, b) = 1 if a > b, 1/2 if a = b, 0 if a < b

    and ``P(X > Y) = (1/K) sum_k P_k(X > Y)`` over the ``K`` tasks (each task
    weighs the same, whatever its seeds). Identical samples give exactly 0.5;
    scores need no normalisation (only order within a task matters). The
    interval resamples X's and Y's seeds independently within every task.

    Args:
        x: Per-task scores of X (see `by_task`).
        y: Per-task scores of Y, the same tasks in the same order.
        confidence, resamples, method, seed: As in `interval_estimate`.

    Returns:
        ``Estimate(value, low, high)`` of ``P(X > Y)``.
    """
    _check_interval_args(confidence, resamples, method)
    x_tasks, y_tasks = by_task(x), by_task(y)
    if len(x_tasks) != len(y_tasks):
        raise ValueError(f"X has {len(x_tasks)} tasks but Y has {len(y_tasks)}")
    point = float(np.mean([_improvement(a, b) for a, b in zip(x_tasks, y_tasks)]))
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for a, b in zip(x_tasks, y_tasks):
        parts = [
            _improvement(_resample(a, count, rng), _resample(b, count, rng))
            for count in _blocks(resamples, a.size * b.size)
        ]
        total += np.concatenate(parts)
    replicates = total / len(x_tasks)

    def jackknife() -> np.ndarray:
        # Leave out one seed of X or of Y, in one task at a time.
        values = []
        for task, (a, b) in enumerate(zip(x_tasks, y_tasks)):
            others = sum(
                _improvement(c, d)
                for k, (c, d) in enumerate(zip(x_tasks, y_tasks))
                if k != task
            )
            for sample, other, first in ((a, b, True), (b, a, False)):
                if sample.size < 2:
                    continue
                keep = ~np.eye(sample.size, dtype=bool)
                fewer = np.broadcast_to(sample, keep.shape)[keep].reshape(
                    sample.size, -1
                )
                other = np.broadcast_to(other, (sample.size, other.size))
                this = (
                    _improvement(fewer, other) if first else _improvement(other, fewer)
                )
                values.append((others + this) / len(x_tasks))
        return np.concatenate(values) if values else np.array([point])

    return _interval(
        point, replicates, jackknife if method == "bca" else None, confidence
    )


def performance_profile(
    scores: Scores,
    taus: ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Profile:
    """The fraction of runs scoring above each threshold, with bootstrap bands.

    ``F(tau) = (1/N) * #{runs with score > tau}`` over the ``N`` runs of every
    task pooled (the run-score distribution of Agarwal et al.). The band at each
    ``tau`` holds the percentile interval of ``F(tau)`` over stratified bootstrap
    replicates (seeds resampled within each task).

    Args:
        scores: Per-task scores (see `by_task`).
        taus: Thresholds, any order.
        confidence, resamples, seed: As in `interval_estimate`.

    Returns:
        ``Profile(taus, fraction, low, high)``, each ``[len(taus)]``.
    """
    _check_interval_args(confidence, resamples, "percentile")
    tasks = by_task(scores)
    taus = np.asarray(taus, np.float64).reshape(-1)
    pooled = np.concatenate(tasks)

    def above(samples: np.ndarray) -> np.ndarray:
        """``[..., taus]``: fraction of the last axis above each tau."""
        return np.mean(samples[..., :, None] > taus, axis=-2)

    rng = np.random.default_rng(seed)
    replicates = np.concatenate(
        [
            above(np.concatenate([_resample(t, count, rng) for t in tasks], axis=1))
            for count in _blocks(resamples, pooled.size * taus.size)
        ]
    )
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    return Profile(taus, above(pooled), low, high)


__all__ = [
    "DEFAULT_RESAMPLES",
    "Estimate",
    "Profile",
    "by_task",
    "interval_estimate",
    "iqm",
    "mean",
    "median",
    "normalize",
    "performance_profile",
    "probability_of_improvement",
]
