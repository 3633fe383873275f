"""The small pure rules inside a PPO update, each on its own and unit-tested.

All of them act on one run's arrays and are traced inside the training program.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

ADVANTAGE_EPS = 1e-8
# kl_adaptive: beta doubles above this multiple of the target and halves below
# target / it (the paper's rule, applied once per rollout).
KL_TOLERANCE = 1.5


def adapt_beta(beta, kl, kl_target):
    """The adaptive KL coefficient after a rollout whose KL was ``kl``:
    ``2*beta`` if ``kl > 1.5*target``, ``beta/2`` if ``kl < target/1.5``, else ``beta``."""
    return jnp.where(
        kl > KL_TOLERANCE * kl_target,
        beta * 2.0,
        jnp.where(kl < kl_target / KL_TOLERANCE, beta / 2.0, beta),
    )


def annealed_lr(lr, anneal, update_index, num_updates: int):
    """The learning rate during update ``update_index`` (0-based): linearly annealed
    from ``lr`` towards 0 over ``num_updates`` when ``anneal`` is on (> 0)."""
    remaining = 1.0 - update_index / num_updates
    return lr * jnp.where(anneal > 0, remaining, 1.0)


def normalize_advantages(advantages):
    """Zero mean, unit standard deviation over the whole rollout."""
    return (advantages - advantages.mean()) / (advantages.std() + ADVANTAGE_EPS)


def explained_variance(values, targets):
    """``1 - Var(targets - values) / Var(targets)``: 1 is a perfect critic, 0 no
    better than a constant; NaN (or inf) when the targets do not vary."""
    return 1.0 - jnp.var(targets - values) / jnp.var(targets)


def all_finite(tree: Any):
    """Whether every element of every array in ``tree`` is finite (a traced bool).

    One reduction over the leaves laid end to end: XLA fuses the concatenation into
    it, where a reduction per leaf made a kernel each (the divergence guard's check
    of the parameters cost about 0.2 s, 6%, of the CartPole chunk program's compile).
    """
    leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.isfinite(jnp.concatenate(leaves)))


class EpisodeTally(NamedTuple):
    """Sums over the episodes that ended during one rollout."""

    returns: Any
    lengths: Any
    count: Any

    @classmethod
    def zero(cls) -> EpisodeTally:
        zero = jnp.zeros((), jnp.float32)
        return cls(zero, zero, zero)

    def add(self, done, episode_return, episode_length) -> EpisodeTally:
        """Adds the episodes that ``done`` (``[envs]``) marks as ended this step."""
        return EpisodeTally(
            self.returns + jnp.sum(jnp.where(done, episode_return, 0.0)),
            self.lengths + jnp.sum(jnp.where(done, episode_length, 0.0)),
            self.count + jnp.sum(done),
        )

    def mean_return(self):
        """Mean return of the episodes that ended (NaN if none did)."""
        return jnp.where(self.count > 0, self.returns / self.count, jnp.nan)

    def mean_length(self):
        return jnp.where(self.count > 0, self.lengths / self.count, jnp.nan)
