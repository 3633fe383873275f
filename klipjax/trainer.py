"""The training program of one run: rollout, GAE and the KLip/PPO update, all pure.

``make_trainer(static)`` returns ``init(hp) -> Runner`` and
``run_chunk(runner, hp, num_updates) -> (runner, metrics)``. Both take one run's
traced ``HParams``; ``klipjax.sweep`` vmaps them over runs and jits them, so a whole
grid (seeds x hyperparameters x loss variants) is one XLA program.

Scan nesting per update: env-step scan (actor only), one batched critic pass over the
rollout, GAE reverse scan, then epochs x minibatches of gradient steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from klipjax import losses
from klipjax.config import LOSSES, HParams, StaticConfig
from klipjax.envs import EnvSpec, env_action, make
from klipjax.gae import gae
from klipjax.networks import Actor, Critic
from klipjax.normalization import RunningStats

ADVANTAGE_EPS = 1e-8
LOSS_ID = {name: i for i, name in enumerate(LOSSES)}


class Runner(NamedTuple):
    """Everything needed to continue a run bit-identically."""

    params: Any  # {"actor": ..., "critic": ...}
    opt_state: Any
    env_state: Any
    obs: jax.Array  # raw observations, flattened: [num_envs, obs_size]
    episode_return: jax.Array  # running undiscounted return per env
    episode_length: jax.Array
    obs_stats: RunningStats
    reward_stats: RunningStats
    discounted_return: jax.Array  # per env, for reward scaling
    beta: jax.Array  # current KL coefficient (adapted for kl_adaptive)
    key: jax.Array
    update: jax.Array  # updates done
    diverged_at: jax.Array  # update index where the run went non-finite, -1 if never


class Transition(NamedTuple):
    obs: jax.Array  # as the policy saw it (normalised if enabled)
    action: jax.Array  # raw sample (unclipped), for an exact log-prob
    log_prob: jax.Array
    dist_params: jax.Array
    reward: jax.Array  # as the learner sees it (scaled if enabled)
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array  # pre-reset observation, normalised like obs


class Batch(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    dist_params: jax.Array
    advantage: jax.Array
    value: jax.Array
    target: jax.Array


class Metrics(NamedTuple):
    """Per-update scalars of one run (NaN where undefined)."""

    env_steps: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    episodes: jax.Array
    in_band_fraction: jax.Array
    kill_fraction: jax.Array
    pass_fraction: jax.Array
    kill_fraction_max: jax.Array
    beta_t_mean: jax.Array
    beta_t_p50: jax.Array
    beta_t_p90: jax.Array
    beta_t_kill_abs_mean: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array
    entropy: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    explained_variance: jax.Array
    grad_norm: jax.Array
    lr: jax.Array
    kl_beta: jax.Array  # the scalar KL coefficient after this update's adaptation
    rollout_kl: jax.Array  # KL(old || new) over the rollout after the update
    identity_gap: jax.Array  # max |grad_clip - grad_klip| (NaN unless identity_check)


class MinibatchStats(NamedTuple):
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    in_band_fraction: jax.Array
    kill_fraction: jax.Array
    pass_fraction: jax.Array
    beta_t_mean: jax.Array
    beta_t_p50: jax.Array
    beta_t_p90: jax.Array
    beta_t_kill_abs_mean: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array
    grad_norm: jax.Array
    identity_gap: jax.Array


class Trainer(NamedTuple):
    spec: EnvSpec
    init: Callable[[HParams], Runner]
    run_chunk: Callable[..., tuple[Runner, Metrics]]


def _select(flag, on_true, on_false):
    """Elementwise choice between two pytrees by a traced scalar condition."""
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), on_true, on_false)


def learning_rate(hp: HParams, static: StaticConfig, update_index):
    """The learning rate during update ``update_index`` (0-based): linearly annealed
    from ``lr`` towards 0 over the run when ``anneal_lr`` is on."""
    remaining = 1.0 - update_index / static.num_updates
    return hp.lr * jnp.where(hp.anneal_lr > 0, remaining, 1.0)


def make_optimizer(hp: HParams, static: StaticConfig) -> optax.GradientTransformation:
    """Global-norm clip, Adam (eps 1e-5), learning rate annealed linearly per update."""
    steps_per_update = static.epochs * static.num_minibatches
    return optax.chain(
        optax.clip_by_global_norm(hp.max_grad_norm),
        optax.scale_by_adam(eps=1e-5),
        optax.scale_by_learning_rate(
            lambda count: learning_rate(hp, static, count // steps_per_update)
        ),
    )


def policy_loss_per_sample(loss_id, hp, beta, log_prob, old_log_prob, advantage, kl):
    """The per-sample policy loss of the run's variant, chosen by a traced id.

    Under vmap ``lax.switch`` evaluates every branch and selects: all are elementwise,
    so mixing variants in one sweep costs little.
    """
    data = (log_prob, old_log_prob, advantage)
    eps, soft = hp.clip_eps, hp.softness
    branches = {
        "ppo_clip": lambda: losses.ppo_clip(*data, clip_eps=eps),
        "klip": lambda: losses.klip(*data, clip_eps=eps),
        "klip_linear_ramp": lambda: losses.klip(
            *data, clip_eps=eps, gate="linear_ramp", softness=soft
        ),
        "klip_sigmoid": lambda: losses.klip(
            *data, clip_eps=eps, gate="sigmoid", softness=soft
        ),
        "soft_min": lambda: losses.soft_min_clip(*data, clip_eps=eps, softness=soft),
        "kl_fixed": lambda: losses.kl_penalty(*data, kl, beta=beta),
        "kl_adaptive": lambda: losses.kl_penalty(*data, kl, beta=beta),
        "unclipped": lambda: losses.kl_penalty(*data, kl, beta=0.0),
    }
    return jax.lax.switch(loss_id, [branches[name] for name in LOSSES])


def _beta_t(loss_id, hp, log_prob, old_log_prob, advantage):
    """``beta_t`` with the run's own gate (step for every non-soft variant)."""
    data = (log_prob, old_log_prob, advantage)
    step = losses.klip_beta(*data, clip_eps=hp.clip_eps)
    ramp = losses.klip_beta(
        *data, clip_eps=hp.clip_eps, gate="linear_ramp", softness=hp.softness
    )
    sigmoid = losses.klip_beta(
        *data, clip_eps=hp.clip_eps, gate="sigmoid", softness=hp.softness
    )
    return jnp.where(
        loss_id == LOSS_ID["klip_linear_ramp"],
        ramp,
        jnp.where(loss_id == LOSS_ID["klip_sigmoid"], sigmoid, step),
    )


def make_trainer(static: StaticConfig) -> Trainer:
    """Builds the pure per-run ``init`` and ``run_chunk`` for a static config."""
    spec = make(static.env)
    dist = spec.distribution
    actor = Actor(
        static.hidden_sizes,
        spec.distribution.param_size // (2 if spec.continuous else 1),
        spec.continuous,
    )
    critic = Critic(static.hidden_sizes)
    num_envs, batch_size = static.num_envs, static.batch_size
    # Observations of any rank (MinAtar's 10x10xC grids) enter the MLPs flattened.
    obs_size = math.prod(spec.obs_shape)

    def flat_obs(obs):
        return obs.reshape(num_envs, obs_size).astype(jnp.float32)

    def kl_estimate(hp, old_dist_params, dist_params, log_prob, old_log_prob):
        return jax.lax.switch(
            hp.kl_estimator_id,
            [
                lambda: dist.kl(old_dist_params, dist_params),
                lambda: losses.sampled_kl(log_prob, old_log_prob),
                lambda: losses.k3_kl(log_prob, old_log_prob),
            ],
        )

    def init(hp: HParams) -> Runner:
        key = jax.random.PRNGKey(hp.seed)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy_obs = jnp.zeros(obs_size, jnp.float32)
        params = {
            "actor": actor.init(actor_key, dummy_obs),
            "critic": critic.init(critic_key, dummy_obs),
        }
        reset_keys = jax.random.split(env_key, num_envs)
        obs, env_state = jax.vmap(spec.env.reset, in_axes=(0, None))(
            reset_keys, spec.params
        )
        zeros = jnp.zeros(num_envs, jnp.float32)
        return Runner(
            params=params,
            opt_state=make_optimizer(hp, static).init(params),
            env_state=env_state,
            obs=flat_obs(obs),
            episode_return=zeros,
            episode_length=zeros,
            obs_stats=RunningStats.create((obs_size,)),
            reward_stats=RunningStats.create(),
            discounted_return=zeros,
            beta=jnp.asarray(hp.beta, jnp.float32),
            key=key,
            update=jnp.asarray(0, jnp.int32),
            diverged_at=jnp.asarray(-1, jnp.int32),
        )

    def rollout(runner: Runner, hp: HParams):
        """Collects ``num_steps`` steps from ``num_envs`` envs with the current actor."""
        normalize_obs = hp.normalize_obs > 0
        normalize_reward = hp.normalize_reward > 0

        def env_step(carry, step_key):
            runner, completed = carry
            obs_stats = _select(
                normalize_obs, runner.obs_stats.update(runner.obs), runner.obs_stats
            )
            policy_obs = jnp.where(
                normalize_obs, obs_stats.normalize(runner.obs), runner.obs
            )
            action_key, env_key = jax.random.split(step_key)
            dist_params = actor.apply(runner.params["actor"], policy_obs)
            action = dist.sample(action_key, dist_params)
            log_prob = dist.log_prob(dist_params, action)
            obs, env_state, reward, terminated, truncated, info = jax.vmap(
                spec.env.step, in_axes=(0, 0, 0, None)
            )(
                jax.random.split(env_key, num_envs),
                runner.env_state,
                env_action(spec, action),
                spec.params,
            )
            reward = reward.astype(jnp.float32)
            done = terminated | truncated
            final_obs = flat_obs(info["final_observation"])
            final_obs = jnp.where(
                normalize_obs, obs_stats.normalize(final_obs), final_obs
            )

            discounted = runner.discounted_return * hp.gamma + reward
            reward_stats = _select(
                normalize_reward,
                runner.reward_stats.update(discounted),
                runner.reward_stats,
            )
            learner_reward = jnp.where(
                normalize_reward, reward_stats.scale(reward), reward
            )

            episode_return = runner.episode_return + reward
            episode_length = runner.episode_length + 1.0
            completed = (
                completed[0] + jnp.sum(jnp.where(done, episode_return, 0.0)),
                completed[1] + jnp.sum(jnp.where(done, episode_length, 0.0)),
                completed[2] + jnp.sum(done),
            )
            runner = runner._replace(
                env_state=env_state,
                obs=flat_obs(obs),
                episode_return=jnp.where(done, 0.0, episode_return),
                episode_length=jnp.where(done, 0.0, episode_length),
                obs_stats=obs_stats,
                reward_stats=reward_stats,
                discounted_return=jnp.where(done, 0.0, discounted),
            )
            transition = Transition(
                policy_obs,
                action,
                log_prob,
                dist_params,
                learner_reward,
                terminated,
                done,
                final_obs,
            )
            return (runner, completed), transition

        key, rollout_key = jax.random.split(runner.key)
        step_keys = jax.random.split(rollout_key, static.num_steps)
        zero = jnp.zeros((), jnp.float32)
        (runner, completed), transitions = jax.lax.scan(
            env_step, (runner._replace(key=key), (zero, zero, zero)), step_keys
        )
        return runner, transitions, completed

    def minibatch_step(hp, beta, carry, batch: Batch):
        params, opt_state = carry
        loss_id = hp.loss_id

        def loss_fn(params):
            dist_params = actor.apply(params["actor"], batch.obs)
            log_prob = dist.log_prob(dist_params, batch.action)
            kl = kl_estimate(
                hp, batch.dist_params, dist_params, log_prob, batch.log_prob
            )
            policy = policy_loss_per_sample(
                loss_id, hp, beta, log_prob, batch.log_prob, batch.advantage, kl
            ).mean()
            value = critic.apply(params["critic"], batch.obs)
            value_loss = losses.clipped_value_loss(
                value, batch.value, batch.target, clip_eps=hp.value_clip_eps
            ).mean()
            entropy = dist.entropy(dist_params).mean()
            total = policy + hp.vf_coef * value_loss - hp.ent_coef * entropy
            return total, (policy, value_loss, entropy, log_prob)

        grads, (policy, value_loss, entropy, log_prob) = jax.grad(
            loss_fn, has_aux=True
        )(params)
        data = (log_prob, batch.log_prob, batch.advantage)
        parts = losses.partition(*data, clip_eps=hp.clip_eps)
        fractions = losses.fractions_of(parts)
        beta_summary = losses.summarize_beta(_beta_t(loss_id, hp, *data), parts.kill)
        stats = MinibatchStats(
            policy_loss=policy,
            value_loss=value_loss,
            entropy=entropy,
            in_band_fraction=fractions.in_band,
            kill_fraction=fractions.kill,
            pass_fraction=fractions.pass_through,
            beta_t_mean=beta_summary.mean,
            beta_t_p50=beta_summary.p50,
            beta_t_p90=beta_summary.p90,
            beta_t_kill_abs_mean=beta_summary.kill_abs_mean,
            approx_kl=losses.approx_kl(log_prob, batch.log_prob),
            clip_fraction=losses.clip_fraction(
                log_prob, batch.log_prob, clip_eps=hp.clip_eps
            ),
            grad_norm=optax.tree.norm(grads),
            identity_gap=identity_gap(hp, params, batch)
            if static.identity_check
            else jnp.asarray(jnp.nan, jnp.float32),
        )
        updates, opt_state = make_optimizer(hp, static).update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def identity_gap(hp, params, batch: Batch):
        """Max |grad of PPO-Clip - grad of the per-sample KL form| on this minibatch."""

        def grad_of(loss):
            def objective(actor_params):
                dist_params = actor.apply(actor_params, batch.obs)
                log_prob = dist.log_prob(dist_params, batch.action)
                return loss(
                    log_prob, batch.log_prob, batch.advantage, clip_eps=hp.clip_eps
                ).mean()

            return jax.grad(objective)(params["actor"])

        diff = jax.tree.map(
            lambda a, b: jnp.max(jnp.abs(a - b)),
            grad_of(losses.ppo_clip),
            grad_of(losses.klip),
        )
        return jnp.max(jnp.stack(jax.tree.leaves(diff)))

    def update(runner: Runner, hp: HParams) -> tuple[Runner, Metrics]:
        """One PPO iteration: rollout, GAE, epochs of minibatch steps, adaptive beta."""
        runner, traj, completed = rollout(runner, hp)
        # One batched critic pass over every observation and every pre-reset successor.
        both = jnp.concatenate([traj.obs, traj.final_obs])
        values_all = critic.apply(runner.params["critic"], both)
        values, next_values = jnp.split(values_all, 2)
        advantages, targets = gae(
            traj.reward,
            values,
            next_values,
            traj.terminated,
            traj.done,
            gamma=hp.gamma,
            gae_lambda=hp.gae_lambda,
        )

        def flat(x):
            return x.reshape((batch_size,) + x.shape[2:])

        normalised = (advantages - advantages.mean()) / (
            advantages.std() + ADVANTAGE_EPS
        )
        batch = Batch(
            obs=flat(traj.obs),
            action=flat(traj.action),
            log_prob=flat(traj.log_prob),
            dist_params=flat(traj.dist_params),
            advantage=flat(normalised),
            value=flat(values),
            target=flat(targets),
        )

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, batch_size)
            minibatches = jax.tree.map(
                lambda x: x[order].reshape(
                    (static.num_minibatches, static.minibatch_size) + x.shape[1:]
                ),
                batch,
            )
            return jax.lax.scan(
                lambda c, mb: minibatch_step(hp, runner.beta, c, mb), carry, minibatches
            )

        key, epochs_key = jax.random.split(runner.key)
        (params, opt_state), stats = jax.lax.scan(
            epoch,
            (runner.params, runner.opt_state),
            jax.random.split(epochs_key, static.epochs),
        )

        # Adaptive beta: once per rollout, from the KL the whole update produced.
        new_dist_params = actor.apply(params["actor"], batch.obs)
        new_log_prob = dist.log_prob(new_dist_params, batch.action)
        rollout_kl = kl_estimate(
            hp, batch.dist_params, new_dist_params, new_log_prob, batch.log_prob
        ).mean()
        adapted = jnp.where(
            rollout_kl > 1.5 * hp.kl_target,
            runner.beta * 2.0,
            jnp.where(rollout_kl < hp.kl_target / 1.5, runner.beta / 2.0, runner.beta),
        )
        beta = jnp.where(hp.loss_id == LOSS_ID["kl_adaptive"], adapted, runner.beta)

        update_index = runner.update
        lr_now = learning_rate(hp, static, update_index)
        episodes = completed[2]
        flat_values, flat_targets = flat(values), flat(targets)
        explained_variance = 1.0 - jnp.var(flat_targets - flat_values) / jnp.var(
            flat_targets
        )
        minibatch_means = jax.tree.map(jnp.mean, stats)._asdict()
        minibatch_means["identity_gap"] = jnp.max(stats.identity_gap)  # worst case
        metrics = Metrics(
            **minibatch_means,
            env_steps=((update_index + 1) * batch_size).astype(jnp.float32),
            episode_return=jnp.where(episodes > 0, completed[0] / episodes, jnp.nan),
            episode_length=jnp.where(episodes > 0, completed[1] / episodes, jnp.nan),
            episodes=episodes,
            kill_fraction_max=jnp.max(stats.kill_fraction),
            explained_variance=explained_variance,
            lr=lr_now,
            kl_beta=beta,
            rollout_kl=rollout_kl,
        )
        runner = runner._replace(
            params=params,
            opt_state=opt_state,
            beta=beta,
            key=key,
            update=update_index + 1,
        )
        return runner, metrics

    def guarded_update(runner: Runner, hp: HParams, _):
        """Runs one update unless the run is finished or diverged; freezes a run whose
        parameters or losses turn non-finite and records where."""
        active = (runner.update < static.num_updates) & (runner.diverged_at < 0)
        new_runner, metrics = update(runner, hp)
        finite = (
            jnp.all(
                jnp.stack(
                    [
                        jnp.all(jnp.isfinite(x))
                        for x in jax.tree.leaves(new_runner.params)
                    ]
                )
            )
            & jnp.isfinite(metrics.policy_loss)
            & jnp.isfinite(metrics.value_loss)
        )
        accept = active & finite
        diverged_at = jnp.where(active & ~finite, runner.update, runner.diverged_at)
        runner = _select(accept, new_runner, runner)._replace(diverged_at=diverged_at)
        metrics = _select(
            accept, metrics, jax.tree.map(lambda m: jnp.full_like(m, jnp.nan), metrics)
        )
        return runner, metrics

    def run_chunk(runner: Runner, hp: HParams, num_updates: int):
        """``num_updates`` guarded updates (a static scan length)."""
        return jax.lax.scan(
            lambda r, x: guarded_update(r, hp, x), runner, None, length=num_updates
        )

    return Trainer(spec=spec, init=init, run_chunk=run_chunk)
