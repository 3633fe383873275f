"""Networks: the orthogonal initializer, the policy heads, the categorical log-prob."""

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


def test_categorical_log_prob_is_the_chosen_log_softmax_entry_with_its_gradient():
    from klipjax.core.distributions import Categorical

    dist = Categorical(3)
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, 7, 3)) * 4.0
    logits = logits.at[0, 0].set(jnp.array([-jnp.inf, 2.0, 1.0]))  # an impossible one
    actions = jax.random.randint(jax.random.PRNGKey(1), (5, 7), 0, 3).at[0, 0].set(1)

    def reference(logits):
        log_p = jax.nn.log_softmax(logits)
        return jnp.take_along_axis(log_p, actions[..., None], -1)[..., 0]

    np.testing.assert_array_equal(dist.log_prob(logits, actions), reference(logits))
    weights = jax.random.normal(jax.random.PRNGKey(2), (5, 7))
    grad = jax.grad(lambda x: jnp.sum(weights * dist.log_prob(x, actions)))(logits)
    expected = jax.grad(lambda x: jnp.sum(weights * reference(x)))(logits)
    np.testing.assert_array_equal(grad, expected)
