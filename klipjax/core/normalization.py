"""Running mean and variance, kept in the learner state (not in an env wrapper)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

CLIP = 10.0
EPSILON = 1e-8


class RunningStats(NamedTuple):
    """Mean and variance of a stream of ``[batch, *shape]`` values (parallel update)."""

    mean: jnp.ndarray
    var: jnp.ndarray
    count: jnp.ndarray

    @classmethod
    def create(cls, shape=()):
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(1e-4))

    def update(self, batch):
        """Merges the statistics of ``batch`` (leading axis = samples)."""
        batch_mean = jnp.mean(batch, axis=0)
        batch_var = jnp.var(batch, axis=0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        m2 = m2 + delta**2 * self.count * batch_count / total
        return RunningStats(mean, m2 / total, total)

    def normalize(self, x):
        """``(x - mean) / sqrt(var + 1e-8)``, clipped to +-10."""
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + EPSILON), -CLIP, CLIP)

    def scale(self, x):
        """``x / sqrt(var + 1e-8)``, clipped to +-10 (reward scaling keeps the sign)."""
        return jnp.clip(x / jnp.sqrt(self.var + EPSILON), -CLIP, CLIP)
