"""Brax tasks behind the gymnax interface: time limit, termination, final observation,
and a short training run (slow). Skipped without the extra (pip install -e '.[brax]')."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("brax")

from klipjax import envs
from klipjax.core.distributions import DiagonalGaussian
from klipjax.engine import checkpoint, sweep
from klipjax.envs import brax_adapter as brax_envs
from tests.sweeps import build, experiment, run

NUM_ENVS = 4


@pytest.fixture(scope="module")
def pendulum():
    """A Brax task that compiles in seconds, one jitted batched step that also
    returns the raw Brax step of the same state, to check the adapter against."""
    spec = envs.make("brax/inverted_pendulum@generalized")
    env = spec.env

    @jax.jit
    def step(key, state, action, params):
        keys = jax.random.split(key, NUM_ENVS)
        out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, action, params)
        raw = jax.vmap(env.brax_env.step)(jax.vmap(env.brax_state)(state), action)
        return out, raw

    @jax.jit
    def reset(key, params):
        keys = jax.random.split(key, NUM_ENVS)
        return jax.vmap(env.reset, in_axes=(0, None))(keys, params)

    return spec, reset, step


def test_ids_choose_task_and_backend():
    assert brax_envs.parse_id("brax/ant") == ("ant", "mjx")
    assert brax_envs.parse_id("brax/walker2d") == ("walker2d", "generalized")
    assert brax_envs.parse_id("brax/ant@positional") == ("ant", "positional")
    humanoid = envs.make("brax/humanoid@generalized")
    assert humanoid.env.backend == "generalized"
    assert humanoid.env.brax_env.backend == "generalized"
    assert isinstance(humanoid.distribution, DiagonalGaussian)
    assert humanoid.obs_shape == (244,) and humanoid.distribution.action_dims == 17
    # brax's action convention: [-1, 1], rescaled by the env to its control range
    np.testing.assert_array_equal(humanoid.action_low, -np.ones(17, np.float32))
    np.testing.assert_array_equal(humanoid.action_high, np.ones(17, np.float32))
    with pytest.raises(envs.EnvError, match="no brax env 'antt'"):
        envs.make("brax/antt")
    with pytest.raises(envs.EnvError, match="backend 'warp' unknown"):
        envs.make("brax/ant@warp")


def test_states_have_no_empty_arrays():
    # mjx keeps zero-size arrays (ant has no actuator activations); orbax refuses them
    env, params = brax_envs.make("brax/ant@mjx")
    raw = jax.eval_shape(env.brax_env.reset, jax.random.PRNGKey(0))
    assert any(0 in leaf.shape for leaf in jax.tree.leaves(raw))
    _, state = jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)
    assert all(0 not in leaf.shape for leaf in jax.tree.leaves(state))
    rebuilt = jax.eval_shape(env.brax_state, state)
    assert jax.tree.structure(rebuilt) == jax.tree.structure(raw)


def test_time_limit_truncates_and_keeps_the_final_observation(pendulum):
    spec, reset, step = pendulum
    params = brax_envs.BraxParams(max_steps_in_episode=5)
    obs, state = reset(jax.random.PRNGKey(0), params)
    # no force: the pole, started upright, stays up for 5 steps
    action = jnp.zeros((NUM_ENVS, spec.distribution.action_dims))
    for t in range(1, 6):
        previous_obs = obs
        (obs, state, reward, terminated, truncated, info), raw = step(
            jax.random.PRNGKey(t), state, action, params
        )
        assert not terminated.any(), t
        assert bool(truncated.all()) == (t == 5), t
        np.testing.assert_array_equal(info["final_observation"], raw.obs)
        np.testing.assert_array_equal(reward, raw.reward)
        assert np.isfinite(np.asarray(obs)).all()
    # step 5: the pre-reset observation is reported, a fresh episode is returned
    assert not np.allclose(info["final_observation"], previous_obs)
    assert np.abs(np.asarray(obs) - np.asarray(info["final_observation"])).max() > 1e-3
    np.testing.assert_array_equal(state.time, np.zeros(NUM_ENVS))
    fresh_obs, _ = reset(jax.random.PRNGKey(99), params)
    # a reset observation: upright again, up to brax's reset noise (0.01)
    assert np.abs(np.asarray(obs) - np.asarray(fresh_obs)).max() < 0.05


def test_falling_terminates_and_is_not_truncated(pendulum):
    spec, reset, step = pendulum
    params = spec.params  # 1000-step limit: every episode here ends with a fall
    obs, state = reset(jax.random.PRNGKey(1), params)
    key = jax.random.PRNGKey(2)
    ended = np.zeros(NUM_ENVS, bool)
    for t in range(1, 200):
        key, action_key, step_key = jax.random.split(key, 3)
        action = jax.random.uniform(
            action_key, (NUM_ENVS, spec.distribution.action_dims), minval=-1, maxval=1
        )
        time_before = np.asarray(state.time)
        (obs, state, _, terminated, truncated, info), raw = step(
            step_key, state, action, params
        )
        terminated = np.asarray(terminated)
        assert not truncated.any()
        np.testing.assert_array_equal(terminated, np.asarray(raw.done) > 0.5)
        np.testing.assert_array_equal(info["final_observation"], raw.obs)
        time = np.asarray(state.time)
        np.testing.assert_array_equal(time, np.where(terminated, 0, time_before + 1))
        final = np.asarray(info["final_observation"])[terminated]
        assert (np.abs(final[:, 1]) > 0.2).all()  # the pole fell past 0.2 rad
        assert (np.abs(np.asarray(obs)[terminated] - final).max(axis=-1) > 1e-3).all()
        ended |= terminated
        if ended.all():
            break
    assert ended.all(), f"no fall within {t} random steps"


@pytest.mark.slow
def test_a_short_brax_run_trains(tmp_path):
    limit = 16
    envs.register(
        "brax-hopper-short",
        lambda: (
            brax_envs.BraxEnv(*brax_envs.parse_id("brax/hopper")),
            brax_envs.BraxParams(max_steps_in_episode=limit),
        ),
    )
    cfg = experiment(
        {
            "env": "brax-hopper-short",
            "total_steps": 3 * 2 * 32,
            "num_envs": 2,
            "num_steps": 32,
            "epochs": 2,
            "minibatch_size": 32,
            "normalize_obs": True,
            "normalize_reward": True,
            "loss": ["ppo_clip", "klip", "kl_adaptive"],
        }
    )
    program = build(cfg)
    runner, metrics, _ = run(cfg, program=program)
    assert np.all(np.asarray(runner.diverged_at) == -1)
    for key in ("policy_loss", "value_loss", "entropy", "kill_fraction"):
        assert np.isfinite(metrics[key]).all(), key
    np.testing.assert_array_equal(metrics["env_steps"], [[64.0, 128.0, 192.0]] * 3)
    # each env ends an episode at least every 16 steps: >= 4 per 64-step update
    assert (metrics["episodes"] >= 2 * 32 // limit).all()
    assert (metrics["episode_length"] <= limit).all()
    assert np.isfinite(metrics["episode_return"]).all()
    # the identity holds on Brax too: ppo_clip and klip end bit-identical
    hashes = sweep.params_sha256(runner.params)
    assert hashes[0] == hashes[1] != hashes[2]
    # the env states checkpoint and restore exactly (resume stays bit-identical)
    saver = checkpoint.SweepCheckpointer(tmp_path)
    saver.save(1, runner, metrics, {"wall_seconds": 1.0})
    saver.close()
    abstract = checkpoint.abstract_runner(program.init, program.hparams)
    restored, _, _ = checkpoint.SweepCheckpointer(tmp_path).restore(1, abstract, 3)
    for a, b in zip(jax.tree.leaves(runner), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(a, b)
