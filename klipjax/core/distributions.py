"""Action distributions, parameterised by one flat array per sample.

A policy network emits ``dist_params`` with a trailing feature axis: categorical
logits ``[..., actions]`` or a diagonal Gaussian's ``[..., 2*dims]`` (mean then
log-std). Keeping them as plain arrays lets the rollout store them for the analytic KL
of the scalar-beta variants without a distribution object.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from klipjax import losses


class Categorical(NamedTuple):
    """Categorical policy over ``num_actions`` discrete actions."""

    num_actions: int

    @property
    def param_size(self) -> int:
        return self.num_actions

    def noise(self, key, batch_shape):
        """Gumbel noise for ``sample_with``: drawn for a whole rollout at once, so
        the per-step loop holds no random-number generation."""
        return jax.random.gumbel(key, (*batch_shape, self.num_actions))

    def sample_with(self, noise, dist_params):
        return jnp.argmax(dist_params + noise, axis=-1)  # the Gumbel-max trick

    def sample(self, key, dist_params):
        return self.sample_with(self.noise(key, dist_params.shape[:-1]), dist_params)

    def mode(self, dist_params):
        """The most likely action (greedy evaluation)."""
        return jnp.argmax(dist_params, axis=-1)

    def log_prob(self, dist_params, action):
        log_p = jax.nn.log_softmax(dist_params)
        # The action's entry picked by a mask and a sum (exact: the other terms are
        # zeros), not ``take_along_axis``: its gather and its gradient's scatter
        # compile to about six kernels per use.
        chosen = action[..., None].astype(jnp.int32) == jnp.arange(self.num_actions)
        return jnp.sum(jnp.where(chosen, log_p, 0.0), axis=-1)

    def entropy(self, dist_params):
        log_p = jax.nn.log_softmax(dist_params)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    def kl(self, old_dist_params, dist_params):
        return losses.categorical_kl(old_dist_params, dist_params)


class DiagonalGaussian(NamedTuple):
    """Diagonal Gaussian policy over ``action_dims`` continuous dimensions."""

    action_dims: int

    @property
    def param_size(self) -> int:
        return 2 * self.action_dims

    def split(self, dist_params):
        return dist_params[..., : self.action_dims], dist_params[
            ..., self.action_dims :
        ]

    def noise(self, key, batch_shape):
        """Standard normal noise for ``sample_with`` (see ``Categorical.noise``)."""
        return jax.random.normal(key, (*batch_shape, self.action_dims))

    def sample_with(self, noise, dist_params):
        mean, log_std = self.split(dist_params)
        return mean + jnp.exp(log_std) * noise

    def sample(self, key, dist_params):
        return self.sample_with(self.noise(key, dist_params.shape[:-1]), dist_params)

    def mode(self, dist_params):
        """The mean action (greedy evaluation)."""
        return self.split(dist_params)[0]

    def log_prob(self, dist_params, action):
        mean, log_std = self.split(dist_params)
        z = (action - mean) * jnp.exp(-log_std)
        per_dim = -0.5 * z**2 - log_std - 0.5 * math.log(2.0 * math.pi)
        return jnp.sum(per_dim, axis=-1)

    def entropy(self, dist_params):
        _, log_std = self.split(dist_params)
        return jnp.sum(log_std + 0.5 * math.log(2.0 * math.pi * math.e), axis=-1)

    def kl(self, old_dist_params, dist_params):
        old_mean, old_log_std = self.split(old_dist_params)
        mean, log_std = self.split(dist_params)
        return losses.gaussian_kl(old_mean, old_log_std, mean, log_std)
