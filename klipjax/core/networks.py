"""Separate actor and critic MLPs with orthogonal initialisation (the paper's recipe)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def orthogonal(scale: float = 1.0):
    """Orthogonal initializer (Haar-distributed, times ``scale``), drawn on the host.

    The matrix is the sign-corrected Q of the QR factorisation of a Gaussian matrix
    (R's diagonal made positive, which makes Q Haar-distributed), drawn by numpy from a
    generator seeded with the JAX key's bits, through ``jax.pure_callback``: one host
    call for every run of a vmapped sweep, the same matrix for the same key. Why not
    in XLA: LAPACK's QR custom call, batched over a sweep's runs on CPU, waits on XLA's
    own thread pool and was seen to deadlock on 2 cores (jaxlib 0.10.2); a QR written
    in jnp ops took about a second of compile per layer, and each Gaussian draw in
    the program another half second.
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = shape[0], math.prod(shape[1:])
        tall, narrow = max(rows, cols), min(rows, cols)
        bits = (
            jax.random.key_data(key)
            if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            else key
        )
        basis = jax.pure_callback(
            partial(haar_columns, shape=(tall, narrow)),
            jax.ShapeDtypeStruct((tall, narrow), jnp.float32),
            bits.astype(jnp.uint32),
            vmap_method="expand_dims",
        )
        matrix = basis if rows >= cols else basis.T
        return (scale * matrix).reshape(shape).astype(dtype)

    return init


def haar_columns(key_bits, shape: tuple[int, int]) -> np.ndarray:
    """``[..., tall, narrow]`` orthonormal columns, one matrix per key in
    ``key_bits`` (``[..., 2]`` uint32): Q of a Gaussian matrix's QR with R's
    diagonal made positive, computed in float64."""
    bits = np.asarray(key_bits, np.uint32)
    batch = bits.shape[:-1]
    flat = bits.reshape(-1, bits.shape[-1])
    gaussian = np.stack(
        [np.random.default_rng(list(map(int, k))).standard_normal(shape) for k in flat]
    )
    q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    signs[signs == 0] = 1.0
    return (q * signs[..., None, :]).astype(np.float32).reshape(batch + shape)


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
