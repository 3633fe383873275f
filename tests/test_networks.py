"""Networks: the orthogonal initializer and the policy heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from klipjax.core.networks import Actor, Critic, orthogonal


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (64, 1)])
def test_orthogonal_init_is_orthogonal_and_scaled(shape):
    w = np.asarray(orthogonal(np.sqrt(2.0))(jax.random.key(0), shape), np.float64)
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 2.0 * np.eye(small), atol=1e-5)


def test_orthogonal_init_batches_under_vmap_and_is_random():
    keys = jax.random.split(jax.random.key(1), 8)
    ws = jax.jit(jax.vmap(lambda k: orthogonal()(k, (64, 64))))(keys)
    assert ws.shape == (8, 64, 64)
    assert not np.allclose(ws[0], ws[1])
    # columns are spread like a Haar matrix: the mean entry is near 0, variance 1/64
    assert abs(float(ws.mean())) < 0.01 and abs(float(ws.var()) - 1 / 64) < 1e-3


def test_heads():
    obs = jnp.zeros((5, 3))
    actor = Actor((64, 64), 2, continuous=True)
    params = actor.init(jax.random.key(0), obs)
    out = actor.apply(params, obs)
    assert out.shape == (5, 4)
    np.testing.assert_array_equal(out[:, 2:], 0.0)  # log-std starts at 0
    critic = Critic((64, 64))
    assert critic.apply(critic.init(jax.random.key(1), obs), obs).shape == (5,)
