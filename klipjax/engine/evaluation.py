"""Evaluation episodes of a policy, as a pure JAX loop.

``episode_returns`` plays ``episodes`` episodes side by side, each until its first
``terminated or truncated`` (a gymnax env is stepped without its auto-reset, an env
with a ``step`` of its own by it, the new episode masked out), bounded by the env's
time limit. The loop stops as soon as every episode has
ended, so a policy that fails fast costs little; the compiled program is one
``while_loop`` of the env step and one actor pass per step, with no host round
trips.

Evaluation draws its own keys (``eval_key``): it never touches a run's training
randomness, so a sweep trains bit-identically with evaluation on or off.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import environment

from klipjax.envs import EnvSpec, episode_horizon
from klipjax.policy import Policy

EVAL_STREAM = 0x6576616C  # folded into a run's seed: evaluation's own key stream


def eval_key(seed, update) -> jax.Array:
    """The key of the evaluation a run with ``seed`` makes after ``update`` updates."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM)
    return jax.random.fold_in(base, update)


class EpisodeState(NamedTuple):
    step: jax.Array
    obs: jax.Array
    env_state: Any
    returns: jax.Array  # undiscounted, per episode
    lengths: jax.Array
    running: jax.Array  # the episode has not ended yet
    key: jax.Array


def episode_returns(
    policy: Policy,
    spec: EnvSpec,
    key: jax.Array,
    episodes: int,
    deterministic=True,
    env_batch: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(returns, lengths)``, each ``[episodes]``: one episode per slot, from a
    reset drawn with ``key``, in the mode ``deterministic`` (a bool, or a bool per
    slot). An episode still running at the env's time limit (an
    env that does not truncate there) counts what it collected. ``env_batch``: the
    env steps (and resets) at most that many slots at a time, one batch after
    another (the same keys, so the same episodes); None: all at once."""
    horizon = episode_horizon(spec)
    reset_key, key = jax.random.split(key)
    reset = over_slots(spec.env.reset, env_batch, episodes)
    env_step = over_slots(step_without_reset(spec.env), env_batch, episodes)
    obs, env_state = reset(jax.random.split(reset_key, episodes), spec.params)
    zeros = jnp.zeros(episodes, jnp.float32)

    def play(state: EpisodeState) -> EpisodeState:
        key, act_key, step_key = jax.random.split(state.key, 3)
        action = policy.act(state.obs, act_key, deterministic)
        obs, env_state, reward, terminated, truncated, _ = env_step(
            jax.random.split(step_key, episodes), state.env_state, action, spec.params
        )
        running = state.running
        return EpisodeState(
            step=state.step + 1,
            obs=obs,
            env_state=env_state,
            returns=state.returns + jnp.where(running, reward, 0.0),
            lengths=state.lengths + running,
            running=running & ~(terminated | truncated),
            key=key,
        )

    def going(state: EpisodeState):
        return (state.step < horizon) & jnp.any(state.running)

    final = jax.lax.while_loop(
        going,
        play,
        EpisodeState(
            step=jnp.asarray(0, jnp.int32),
            obs=obs,
            env_state=env_state,
            returns=zeros,
            lengths=zeros,
            running=jnp.ones(episodes, bool),
            key=key,
        ),
    )
    return final.returns, final.lengths


def step_without_reset(env):
    """``env.step`` as far as an evaluated or drawn episode needs it: a gymnax
    environment that keeps gymnax's ``step`` is stepped without its auto-reset (the
    same key split, so the same transition); such an episode is over at its first
    end, so the reset would be drawn and thrown away, and it is most of an
    evaluation program's random-number hashing. Any other environment: its own
    ``step``."""
    if not (
        isinstance(env, environment.Environment)
        and type(env).step is environment.Environment.step
    ):
        return env.step

    def step(key, state, action, params):
        key_step, _ = jax.random.split(key)
        obs, state, reward, terminated, info = env.step_env(
            key_step, state, action, params
        )
        truncated = env.is_truncated(state, params)
        return obs, state, reward, terminated, truncated, info

    return step


def over_slots(fn, env_batch: int | None, slots: int):
    """``fn(*per_slot, params)`` over ``slots`` slots: one vmap, or with ``env_batch``
    below ``slots``, vmaps of ``env_batch`` slots one after another (an env whose
    wide batches are unsafe, ``brax_adapter.safe_step_batch``)."""
    if env_batch is None or env_batch >= slots:
        return lambda *args: jax.vmap(fn, in_axes=(0,) * (len(args) - 1) + (None,))(
            *args
        )

    def in_batches(*args):
        *per_slot, params = args
        return jax.lax.map(
            lambda xs: fn(*xs, params), tuple(per_slot), batch_size=env_batch
        )

    return in_batches


def episode_states(policy: Policy, spec: EnvSpec, key: jax.Array, deterministic=True):
    """One episode step by step, for drawing it: ``(states, rewards, length)`` with
    ``states`` the env state before each step, stacked ``[horizon, ...]``, and the
    episode's first ``length`` entries valid."""
    horizon = episode_horizon(spec)
    reset_key, key = jax.random.split(key)
    obs, env_state = spec.env.reset(reset_key, spec.params)
    env_step = step_without_reset(spec.env)

    def play(carry, step_key):
        obs, env_state, running = carry
        act_key, env_key = jax.random.split(step_key)
        action = policy.act(obs, act_key, deterministic)
        next_obs, next_state, reward, terminated, truncated, _ = env_step(
            env_key, env_state, action, spec.params
        )
        out = (env_state, jnp.where(running, reward, 0.0), running)
        return (next_obs, next_state, running & ~(terminated | truncated)), out

    _, (states, rewards, running) = jax.lax.scan(
        play, (obs, env_state, jnp.asarray(True)), jax.random.split(key, horizon)
    )
    return states, rewards, jnp.sum(running)


def evaluate(
    policy: Policy, episodes: int = 100, *, seed: int = 0, deterministic: bool = True
):
    """Plays ``episodes`` episodes of ``policy`` in its env (built from its id):
    ``(returns, lengths)`` as numpy ``[episodes]``; the same ``seed`` gives the
    same episodes.

    Raises:
        ConfigError: ``episodes`` below 1, or an env that cannot be built.
    """
    import numpy as np

    from klipjax import envs
    from klipjax.config import checks
    from klipjax.engine import compiler

    episodes = checks.as_int("episodes", episodes)
    spec = envs.make(policy.spec.env)
    env_batch = envs.brax_envs.safe_step_batch(policy.spec.env)
    play = compiler.jit(
        lambda policy, key: episode_returns(
            policy, spec, key, episodes, deterministic, env_batch
        )
    )
    returns, lengths = play(policy, jax.random.PRNGKey(checks.as_int("seed", seed, 0)))
    return np.asarray(returns), np.asarray(lengths)
