"""Separate actor and critic MLPs with orthogonal initialisation (the paper's recipe)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def orthogonal(scale: float = 1.0):
    """Orthogonal initializer (Haar-distributed, times ``scale``) in plain jnp ops.

    Gram-Schmidt, applied twice per column for float32 accuracy, on a Gaussian matrix:
    the same distribution as QR with a sign-corrected R. Why not LAPACK's QR (flax's
    ``orthogonal``): batched over a sweep's runs on CPU, its custom call waits on
    XLA's own thread pool and was seen to deadlock on 2 cores (jaxlib 0.10.2).
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = shape[0], math.prod(shape[1:])
        tall, narrow = max(rows, cols), min(rows, cols)
        gaussian = jax.random.normal(key, (tall, narrow), jnp.float32)

        def add_column(j, basis):
            earlier = basis * (jnp.arange(narrow) < j)
            column = gaussian[:, j]
            for _ in range(2):
                column = column - earlier @ (earlier.T @ column)
            return basis.at[:, j].set(column / jnp.linalg.norm(column))

        basis = jax.lax.fori_loop(0, narrow, add_column, jnp.zeros((tall, narrow)))
        matrix = basis if rows >= cols else basis.T
        return (scale * matrix).reshape(shape).astype(dtype)

    return init


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=orthogonal(scale),
        bias_init=nn.initializers.zeros,
    )


class MLP(nn.Module):
    """tanh hidden layers (orthogonal gain sqrt 2), linear output with its own gain."""

    hidden_sizes: Sequence[int]
    out_features: int
    out_scale: float

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = jnp.tanh(_dense(size, math.sqrt(2.0))(x))
        return _dense(self.out_features, self.out_scale)(x)


class Actor(nn.Module):
    """Policy head: categorical logits, or a Gaussian mean plus a state-independent
    log-std (initialised to 0), emitted as one ``dist_params`` array."""

    hidden_sizes: Sequence[int]
    num_outputs: int
    continuous: bool

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden_sizes, self.num_outputs, 0.01)(obs)
        if not self.continuous:
            return out
        log_std = self.param("log_std", nn.initializers.zeros, (self.num_outputs,))
        return jnp.concatenate([out, jnp.broadcast_to(log_std, out.shape)], axis=-1)


class Critic(nn.Module):
    """State-value head."""

    hidden_sizes: Sequence[int]

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden_sizes, 1, 1.0)(obs)[..., 0]
