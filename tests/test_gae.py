"""GAE: a hand computation and the probe cases that catch truncation bugs."""

import jax.numpy as jnp
import numpy as np

from klipjax.core.gae import gae


def test_gae_hand_computation():
    # gamma 0.9, lambda 0.5. Step 1 is truncated (bootstraps from V(final) = 2.0),
    # step 2 terminates (its next value 4.0 must be ignored).
    # deltas: 1 + 0.9*1.0 - 0.5 = 1.4 | 2 + 0.9*2.0 - 1.0 = 2.8 | 3 + 0 - 1.5 = 1.5
    # A2 = 1.5; A1 = 2.8 (the episode ended: no carry); A0 = 1.4 + 0.45*2.8 = 2.66
    advantages, returns = gae(
        jnp.array([1.0, 2.0, 3.0]),
        jnp.array([0.5, 1.0, 1.5]),
        jnp.array([1.0, 2.0, 4.0]),
        jnp.array([False, False, True]),
        jnp.array([False, True, True]),
        gamma=0.9,
        gae_lambda=0.5,
    )
    np.testing.assert_allclose(advantages, [2.66, 2.8, 1.5], rtol=1e-6)
    np.testing.assert_allclose(returns, [3.16, 3.8, 3.0], rtol=1e-6)


def test_constant_reward_with_time_limit_has_zero_advantage_at_true_values():
    # Reward 1 forever, episodes cut by a 5-step time limit. The true value is
    # 1/(1-gamma) everywhere, so every advantage must be 0, truncation steps included.
    gamma, steps = 0.9, 12
    done = jnp.array([(t + 1) % 5 == 0 for t in range(steps)])
    value = 1.0 / (1.0 - gamma)
    advantages, _ = gae(
        jnp.ones(steps),
        jnp.full(steps, value),
        jnp.full(steps, value),  # V(final observation): the same state value
        jnp.zeros(steps, bool),
        done,
        gamma=gamma,
        gae_lambda=0.95,
    )
    np.testing.assert_allclose(advantages, 0.0, atol=1e-5)
    # Treating truncation as termination (the common bug) would not give zeros.
    wrong, _ = gae(
        jnp.ones(steps),
        jnp.full(steps, value),
        jnp.full(steps, value),
        done,
        done,
        gamma=gamma,
        gae_lambda=0.95,
    )
    assert float(jnp.min(wrong)) < -8.0


def test_two_step_discounting():
    # Episode: reward 0 then 1, then termination. True values: V(s0) = gamma, V(s1) = 1.
    gamma = 0.8
    rewards = jnp.array([0.0, 1.0, 0.0, 1.0])
    values = jnp.array([gamma, 1.0, gamma, 1.0])
    next_values = jnp.array([1.0, 123.0, 1.0, 123.0])  # terminal successors are ignored
    terminated = jnp.array([False, True, False, True])
    advantages, returns = gae(
        rewards,
        values,
        next_values,
        terminated,
        terminated,
        gamma=gamma,
        gae_lambda=1.0,
    )
    np.testing.assert_allclose(advantages, 0.0, atol=1e-6)
    np.testing.assert_allclose(returns, values, atol=1e-6)


def test_batched_envs_are_independent():
    # [T, envs]: each column equals the single-env computation.
    rng = np.random.default_rng(0)
    r, v, nv = (jnp.asarray(rng.normal(size=(6, 3)), jnp.float32) for _ in range(3))
    term = jnp.asarray(rng.random((6, 3)) < 0.2)
    done = term | jnp.asarray(rng.random((6, 3)) < 0.2)
    adv, _ = gae(r, v, nv, term, done, gamma=0.99, gae_lambda=0.9)
    for env in range(3):
        single, _ = gae(
            r[:, env],
            v[:, env],
            nv[:, env],
            term[:, env],
            done[:, env],
            gamma=0.99,
            gae_lambda=0.9,
        )
        np.testing.assert_allclose(adv[:, env], single, rtol=1e-6)
