"""PPO on gymnax CartPole-v1 the way PureJaxRL's ``ppo.py`` does it, as a baseline.

    python scripts/baselines/purejaxrl_style.py [--runs 8] [--steps 100000] [--seed 0]

Follows PureJaxRL's recipe, not its code: ``make_train(config)`` returns
``train(rng)`` whose rollout, GAE and epochs of minibatch updates all sit in one
``jax.lax.scan`` over updates; seeds are ``jax.vmap``-ed and the whole thing is one
``jax.jit``. A flax linen actor-critic (separate tanh 64-64 actor and critic,
orthogonal init), ``optax.chain(clip_by_global_norm, adam)`` with a linearly annealed
learning rate, value clipping, advantages normalised per minibatch, and an episode
tracker wrapped around the environment. As in PureJaxRL a truncated episode counts
as a terminal one. Hyperparameters are klipjax's CartPole preset.

Prints one JSON line: compile (lower + compile) and execution seconds, and
the final return (per run, the mean return of the episodes that ended in the last
10% of env steps; then the mean over runs), so a benchmark can set them beside the
process's whole wall time. JAX's persistent compilation cache is left off.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

CONFIG = {
    "ENV_NAME": "CartPole-v1",
    "NUM_ENVS": 4,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": 100_000,
    "UPDATE_EPOCHS": 10,
    "NUM_MINIBATCHES": 8,  # 512 samples per update / minibatch of 64
    "LR": 3e-4,
    "ANNEAL_LR": True,
    "MAX_GRAD_NORM": 0.5,
    "CLIP_EPS": 0.2,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "VF_COEF": 0.5,
    "ENT_COEF": 0.0,
}


class ActorCritic(nn.Module):
    """Separate tanh MLP actor (logits) and critic (value)."""

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs):
        def dense(features, gain):
            return nn.Dense(
                features,
                kernel_init=nn.initializers.orthogonal(gain),
                bias_init=nn.initializers.zeros,
            )

        actor = nn.tanh(dense(self.hidden, np.sqrt(2))(obs))
        actor = nn.tanh(dense(self.hidden, np.sqrt(2))(actor))
        logits = dense(self.num_actions, 0.01)(actor)
        critic = nn.tanh(dense(self.hidden, np.sqrt(2))(obs))
        critic = nn.tanh(dense(self.hidden, np.sqrt(2))(critic))
        value = dense(1, 1.0)(critic)
        return logits, value[..., 0]


class EpisodeState(NamedTuple):
    env_state: Any
    episode_return: jax.Array
    returned_episode_return: jax.Array


class EpisodeTracker:
    """Wraps a gymnax env to carry the running return and report it when an episode
    ends (``info["returned_episode"]``, ``info["returned_episode_return"]``)."""

    def __init__(self, env):
        self.env = env

    def reset(self, key, params):
        obs, env_state = self.env.reset(key, params)
        return obs, EpisodeState(env_state, jnp.float32(0.0), jnp.float32(0.0))

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        running = state.episode_return + reward
        state = EpisodeState(
            env_state,
            jnp.where(done, 0.0, running),
            jnp.where(done, running, state.returned_episode_return),
        )
        info = {
            "returned_episode": done,
            "returned_episode_return": state.returned_episode_return,
        }
        return obs, state, reward, done, info


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: dict


def log_prob_and_entropy(logits, action):
    log_p = jax.nn.log_softmax(logits)
    chosen = jnp.take_along_axis(log_p, action[..., None], axis=-1)[..., 0]
    return chosen, -(jnp.exp(log_p) * log_p).sum(-1)


def make_train(config):
    """``train(rng)``: one whole PPO run, pure and jittable."""
    num_updates = config["TOTAL_TIMESTEPS"] // (
        config["NUM_ENVS"] * config["NUM_STEPS"]
    )
    minibatch_size = (
        config["NUM_ENVS"] * config["NUM_STEPS"] // config["NUM_MINIBATCHES"]
    )
    env, env_params = gymnax.make(config["ENV_NAME"])
    env = EpisodeTracker(env)
    network = ActorCritic(env.env.action_space(env_params).n)

    def learning_rate(count):
        steps_per_update = config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"]
        return config["LR"] * (1.0 - (count // steps_per_update) / num_updates)

    def train(rng):
        rng, init_key, reset_key = jax.random.split(rng, 3)
        obs_shape = env.env.observation_space(env_params).shape
        # One seed at a time under vmap: the orthogonal init's LAPACK QR, batched
        # over seeds, can deadlock XLA's CPU thread pool on 2 cores (jaxlib 0.10.2).
        init = jax.custom_batching.sequential_vmap(network.init)
        params = init(init_key, jnp.zeros(obs_shape))
        lr = learning_rate if config["ANNEAL_LR"] else config["LR"]
        tx = optax.chain(
            optax.clip_by_global_norm(config["MAX_GRAD_NORM"]),
            optax.adam(lr, eps=1e-5),
        )
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        reset_keys = jax.random.split(reset_key, config["NUM_ENVS"])
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)

        def update_step(carry, _):
            def env_step(carry, _):
                train_state, env_state, obs, rng = carry
                rng, action_key, step_key = jax.random.split(rng, 3)
                logits, value = network.apply(train_state.params, obs)
                action = jax.random.categorical(action_key, logits)
                log_prob, _ = log_prob_and_entropy(logits, action)
                step_keys = jax.random.split(step_key, config["NUM_ENVS"])
                next_obs, env_state, reward, done, info = jax.vmap(
                    env.step, in_axes=(0, 0, 0, None)
                )(step_keys, env_state, action, env_params)
                transition = Transition(
                    done, action, value, reward, log_prob, obs, info
                )
                return (train_state, env_state, next_obs, rng), transition

            carry, batch = jax.lax.scan(env_step, carry, None, config["NUM_STEPS"])
            train_state, env_state, last_obs, rng = carry
            _, last_value = network.apply(train_state.params, last_obs)

            def gae_step(carry, step):
                advantage, next_value = carry
                not_done = 1.0 - step.done.astype(jnp.float32)
                delta = (
                    step.reward + config["GAMMA"] * next_value * not_done - step.value
                )
                advantage = (
                    delta
                    + config["GAMMA"] * config["GAE_LAMBDA"] * not_done * advantage
                )
                return (advantage, step.value), advantage

            _, advantages = jax.lax.scan(
                gae_step,
                (jnp.zeros_like(last_value), last_value),
                batch,
                reverse=True,
                unroll=16,
            )
            targets = advantages + batch.value

            def epoch(carry, _):
                def minibatch_step(train_state, minibatch):
                    batch, advantages, targets = minibatch

                    def loss_fn(params):
                        logits, value = network.apply(params, batch.obs)
                        log_prob, entropy = log_prob_and_entropy(logits, batch.action)
                        value_clipped = batch.value + (value - batch.value).clip(
                            -config["CLIP_EPS"], config["CLIP_EPS"]
                        )
                        value_loss = (
                            0.5
                            * jnp.maximum(
                                (value - targets) ** 2, (value_clipped - targets) ** 2
                            ).mean()
                        )
                        ratio = jnp.exp(log_prob - batch.log_prob)
                        normed = (advantages - advantages.mean()) / (
                            advantages.std() + 1e-8
                        )
                        policy_loss = -jnp.minimum(
                            ratio * normed,
                            ratio.clip(1 - config["CLIP_EPS"], 1 + config["CLIP_EPS"])
                            * normed,
                        ).mean()
                        return (
                            policy_loss
                            + config["VF_COEF"] * value_loss
                            - config["ENT_COEF"] * entropy.mean()
                        )

                    grads = jax.grad(loss_fn)(train_state.params)
                    return train_state.apply_gradients(grads=grads), None

                train_state, rng = carry
                rng, perm_key = jax.random.split(rng)
                samples = config["NUM_STEPS"] * config["NUM_ENVS"]
                order = jax.random.permutation(perm_key, samples)
                flat = jax.tree.map(
                    lambda x: x.reshape((samples,) + x.shape[2:])[order],
                    (batch, advantages, targets),
                )
                minibatches = jax.tree.map(
                    lambda x: x.reshape(
                        (config["NUM_MINIBATCHES"], minibatch_size) + x.shape[1:]
                    ),
                    flat,
                )
                train_state, _ = jax.lax.scan(minibatch_step, train_state, minibatches)
                return (train_state, rng), None

            (train_state, rng), _ = jax.lax.scan(
                epoch, (train_state, rng), None, config["UPDATE_EPOCHS"]
            )
            ended = batch.info["returned_episode"]
            episode_returns = (batch.info["returned_episode_return"] * ended).sum()
            carry = (train_state, env_state, last_obs, rng)
            return carry, (episode_returns, ended.sum())

        carry = (train_state, env_state, obs, rng)
        _, per_update = jax.lax.scan(update_step, carry, None, num_updates)
        return per_update

    return train


def final_return(return_sums, episodes, batch, total_steps) -> float:
    """Mean over runs of the per-update mean episode return in the last 10% of env
    steps (updates in which no episode ended are skipped), as klipjax scores it."""
    env_steps = (np.arange(return_sums.shape[-1]) + 1) * batch
    tail = (env_steps > 0.9 * total_steps) & (episodes > 0)
    per_update = np.where(tail, return_sums / np.maximum(episodes, 1), 0.0)
    return float(np.mean(per_update.sum(-1) / np.maximum(tail.sum(-1), 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="seeds, vmapped")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = {**CONFIG, "TOTAL_TIMESTEPS": args.steps}
    batch = config["NUM_ENVS"] * config["NUM_STEPS"]
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.runs)

    start = time.perf_counter()
    train = jax.jit(jax.vmap(make_train(config))).lower(keys).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    return_sums, episodes = jax.block_until_ready(train(keys))
    execute_seconds = time.perf_counter() - start

    updates = args.steps // batch
    print(
        json.dumps(
            {
                "system": "purejaxrl_style",
                "runs": args.runs,
                "updates": updates,
                "compile_s": compile_seconds,
                "execute_s": execute_seconds,
                "env_steps_per_s": args.runs * updates * batch / execute_seconds,
                "final_return": final_return(
                    np.asarray(return_sums),
                    np.asarray(episodes),
                    batch,
                    updates * batch,
                ),
                "jax": jax.__version__,
                "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
            }
        )
    )


if __name__ == "__main__":
    main()
