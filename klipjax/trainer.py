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
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from klipjax import losses
from klipjax.config import KL_ESTIMATORS, LOSSES, CodePaths, HParams, StaticConfig
from klipjax.envs import EnvSpec, env_action, make
from klipjax.gae import gae
from klipjax.networks import Actor, Critic
from klipjax.normalization import RunningStats

ADVANTAGE_EPS = 1e-8
LOSS_ID = {name: i for i, name in enumerate(LOSSES)}
ALL_PATHS = CodePaths()


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
    """Per-update scalars of one run (NaN where undefined).

    Partition, beta_t, KL and clip statistics pool every sample of every minibatch
    step of the update; losses, entropy and grad norm are means over the steps.
    """

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
    learning_rate: jax.Array  # during this update (the hyperparameter is `lr`)
    kl_beta: jax.Array  # the scalar KL coefficient after this update's adaptation
    rollout_kl: jax.Array  # KL(old || new) over the rollout after the update
    identity_gap: jax.Array  # max |grad_clip - grad_klip| (NaN unless identity_check)


class MinibatchStats(NamedTuple):
    """What one gradient step reports: scalars stacked into one array (one write per
    step), and the new log-probs, from which the update's sample statistics are
    computed in one pass after the epochs."""

    scalars: jax.Array  # [len(MINIBATCH_SCALARS)]
    log_prob: jax.Array  # [minibatch_size]


MINIBATCH_SCALARS = ("policy_loss", "value_loss", "entropy", "grad_norm")


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


def choose(names, chosen, all_names, branches):
    """Calls ``branches[name]()`` for the run's choice.

    ``chosen`` is a traced index into ``all_names``; only the ``names`` the sweep uses
    are compiled, and with a single one there is no branch at all. Under vmap
    ``lax.switch`` evaluates every compiled branch and selects.
    """
    if len(names) == 1:
        return branches[names[0]]()
    local = jnp.asarray([names.index(n) if n in names else 0 for n in all_names])
    return jax.lax.switch(local[chosen], [branches[name] for name in names])


def when(present, flag, on_true, on_false):
    """``on_true()`` where the traced ``flag`` is set: a compile-time choice when every
    run agrees (``present`` is the tuple of values the runs use)."""
    if present == (True,):
        return on_true()
    if present == (False,):
        return on_false()
    return _select(flag > 0, on_true(), on_false())


def policy_loss_per_sample(
    loss_id, hp, beta, log_prob, old_log_prob, advantage, kl, names=LOSSES
):
    """The per-sample policy loss of the run's variant (traced id; see ``choose``)."""
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
    return choose(names, loss_id, LOSSES, branches)


GATE_OF_LOSS = {"klip_linear_ramp": "linear_ramp", "klip_sigmoid": "sigmoid"}


def _beta_t(loss_id, hp, log_prob, old_log_prob, advantage, names=LOSSES):
    """``beta_t`` with the run's own gate (step for every non-soft variant); only the
    gates of the sweep's ``names`` are compiled."""

    def gate_of(name):
        return GATE_OF_LOSS.get(name, "step")

    def beta_with(gate):
        softness = None if gate == "step" else hp.softness
        return losses.klip_beta(
            log_prob,
            old_log_prob,
            advantage,
            clip_eps=hp.clip_eps,
            gate=gate,
            softness=softness,
        )

    gates = tuple(dict.fromkeys(gate_of(name) for name in names))
    if len(gates) == 1:
        return beta_with(gates[0])
    gate_index = [gates.index(gate_of(n)) if n in names else 0 for n in LOSSES]
    return jax.lax.switch(
        jnp.asarray(gate_index)[loss_id], [partial(beta_with, g) for g in gates]
    )


def make_trainer(static: StaticConfig, paths: CodePaths = ALL_PATHS) -> Trainer:
    """Builds the pure per-run ``init`` and ``run_chunk`` for a static config,
    compiled for the code ``paths`` its runs take (all of them by default)."""
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
        estimators = {
            "analytic": lambda: dist.kl(old_dist_params, dist_params),
            "sample": lambda: losses.sampled_kl(log_prob, old_log_prob),
            "k3": lambda: losses.k3_kl(log_prob, old_log_prob),
        }
        return choose(
            paths.kl_estimators, hp.kl_estimator_id, KL_ESTIMATORS, estimators
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

        def normalize_obs(on, off):
            return when(paths.normalize_obs, hp.normalize_obs, on, off)

        def env_step(carry, step_inputs):
            runner, completed = carry
            noise, env_keys = step_inputs
            obs_stats = normalize_obs(
                lambda: runner.obs_stats.update(runner.obs), lambda: runner.obs_stats
            )
            policy_obs = normalize_obs(
                lambda: obs_stats.normalize(runner.obs), lambda: runner.obs
            )
            dist_params = actor.apply(runner.params["actor"], policy_obs)
            action = dist.sample_with(noise, dist_params)
            log_prob = dist.log_prob(dist_params, action)
            obs, env_state, reward, terminated, truncated, info = jax.vmap(
                spec.env.step, in_axes=(0, 0, 0, None)
            )(env_keys, runner.env_state, env_action(spec, action), spec.params)
            reward = reward.astype(jnp.float32)
            done = terminated | truncated
            raw_final_obs = flat_obs(info["final_observation"])
            final_obs = normalize_obs(
                lambda: obs_stats.normalize(raw_final_obs), lambda: raw_final_obs
            )

            discounted = runner.discounted_return * hp.gamma + reward
            reward_stats = when(
                paths.normalize_reward,
                hp.normalize_reward,
                lambda: runner.reward_stats.update(discounted),
                lambda: runner.reward_stats,
            )
            learner_reward = when(
                paths.normalize_reward,
                hp.normalize_reward,
                lambda: reward_stats.scale(reward),
                lambda: reward,
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

        # All of the rollout's randomness is drawn up front, in two batched calls.
        key, noise_key, env_key = jax.random.split(runner.key, 3)
        noise = dist.noise(noise_key, (static.num_steps, num_envs))
        env_keys = jax.random.split(env_key, static.num_steps * num_envs)
        env_keys = env_keys.reshape((static.num_steps, num_envs) + env_keys.shape[1:])
        zero = jnp.zeros((), jnp.float32)
        (runner, completed), transitions = jax.lax.scan(
            env_step, (runner._replace(key=key), (zero, zero, zero)), (noise, env_keys)
        )
        return runner, transitions, completed

    def minibatch_step(hp, beta, carry, batch: Batch):
        params, opt_state = carry
        loss_id = hp.loss_id

        def loss_fn(params):
            dist_params = actor.apply(params["actor"], batch.obs)
            log_prob = dist.log_prob(dist_params, batch.action)
            kl = (
                kl_estimate(
                    hp, batch.dist_params, dist_params, log_prob, batch.log_prob
                )
                if paths.needs_kl
                else jnp.zeros_like(log_prob)
            )
            policy = policy_loss_per_sample(
                loss_id,
                hp,
                beta,
                log_prob,
                batch.log_prob,
                batch.advantage,
                kl,
                paths.losses,
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
        scalars = [policy, value_loss, entropy, optax.tree.norm(grads)]
        if static.identity_check:
            scalars.append(identity_gap(hp, params, batch))
        stats = MinibatchStats(jnp.stack(scalars), log_prob)
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

    def update_statistics(hp, batch: Batch, orders, log_prob) -> dict:
        """Partition, beta_t and KL statistics over every sample of every minibatch
        step of an update (``log_prob``: ``[epochs, minibatches, minibatch_size]``, as
        each step saw it before its gradient step), computed in one pass."""
        shape = log_prob.shape
        old_log_prob = batch.log_prob[orders].reshape(shape)
        advantage = batch.advantage[orders].reshape(shape)
        data = (log_prob, old_log_prob, advantage)
        parts = losses.partition(*data, clip_eps=hp.clip_eps)
        fractions = losses.fractions_of(parts)
        beta = losses.summarize_beta(
            _beta_t(hp.loss_id, hp, *data, paths.losses), parts.kill
        )
        return {
            "in_band_fraction": fractions.in_band,
            "kill_fraction": fractions.kill,
            "pass_fraction": fractions.pass_through,
            "kill_fraction_max": jnp.max(jnp.mean(parts.kill, axis=-1)),
            "beta_t_mean": beta.mean,
            "beta_t_p50": beta.p50,
            "beta_t_p90": beta.p90,
            "beta_t_kill_abs_mean": beta.kill_abs_mean,
            "approx_kl": losses.approx_kl(*data[:2]),
            "clip_fraction": losses.clip_fraction(*data[:2], clip_eps=hp.clip_eps),
        }

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

        def epoch(carry, order):
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
        orders = jax.vmap(lambda k: jax.random.permutation(k, batch_size))(
            jax.random.split(epochs_key, static.epochs)
        )
        (params, opt_state), stats = jax.lax.scan(
            epoch, (runner.params, runner.opt_state), orders
        )
        sample_stats = update_statistics(hp, batch, orders, stats.log_prob)

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
        scalars = stats.scalars.reshape(-1, stats.scalars.shape[-1])
        means = dict(zip(MINIBATCH_SCALARS, jnp.mean(scalars, axis=0)))
        metrics = Metrics(
            **means,
            **sample_stats,
            identity_gap=jnp.max(scalars[:, -1])  # the worst minibatch
            if static.identity_check
            else jnp.asarray(jnp.nan, jnp.float32),
            env_steps=((update_index + 1) * batch_size).astype(jnp.float32),
            episode_return=jnp.where(episodes > 0, completed[0] / episodes, jnp.nan),
            episode_length=jnp.where(episodes > 0, completed[1] / episodes, jnp.nan),
            episodes=episodes,
            explained_variance=explained_variance,
            learning_rate=lr_now,
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
