"""Generalised advantage estimation with termination and truncation kept apart."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards, values, next_values, terminated, done, *, gamma, gae_lambda):
    """Truncation-correct GAE over a rollout (time-major).

    ``next_values[t]`` is the value of the observation that followed step t BEFORE any
    auto-reset (gymnax's ``info["final_observation"]``). Only termination zeroes it:
    a time-limit truncation bootstraps from it. Any episode end (``done``) cuts the
    advantage recursion, since the next buffer entry starts a new episode.

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    Args:
      rewards, values, next_values: ``[T, ...]`` float arrays.
      terminated, done: ``[T, ...]`` booleans (``done = terminated | truncated``).
      gamma, gae_lambda: discount and GAE lambda (may be traced).

    Returns:
      ``(advantages, returns)``, both ``[T, ...]``; ``returns = advantages + values``.
    """
    continuation = gamma * (1.0 - terminated.astype(rewards.dtype))
    deltas = rewards + continuation * next_values - values
    carry_on = gamma * gae_lambda * (1.0 - done.astype(rewards.dtype))

    def backward(next_advantage, step):
        delta, keep = step
        advantage = delta + keep * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(deltas[0]), (deltas, carry_on), reverse=True
    )
    return advantages, advantages + values
