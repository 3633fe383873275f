"""The training program of one run: rollout, GAE and the KLip/PPO update, all pure.

``make_trainer(config)`` returns ``init(hp) -> Runner``,
``run_chunk(runner, hp, num_updates[, updates]) -> (runner, metrics)`` and
``evaluate(runner, hp, episodes) -> Evaluation``. All take one run's
traced ``HParams``; ``klipjax.engine.sweep`` vmaps them over runs and jits them, so
a whole grid (seeds x hyperparameters x loss variants) is one XLA program.

Nesting per update: env-step scan (actor only), one batched critic pass over the
rollout, GAE reverse scan, then epochs x minibatches of gradient steps. Each level
is a method of ``RunProgram``; the pure rules inside them are in
``klipjax.core.update_rules``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from klipjax import losses
from klipjax.config.settings import CodePaths, Config, HParams
from klipjax.core import sorting
from klipjax.core import update_rules as rules
from klipjax.core.gae import gae
from klipjax.core.networks import Actor, Critic
from klipjax.core.normalization import RunningStats
from klipjax.core.variants import BY_NAME, KL_ESTIMATORS, LOSSES, LossInputs
from klipjax.engine import evaluation
from klipjax.envs import EnvSpec, env_action, make
from klipjax.policy import Policy, PolicySpec

ALL_PATHS = CodePaths()
ADAPTIVE_IDS = tuple(i for i, name in enumerate(LOSSES) if BY_NAME[name].adapts_beta)


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

    scalars: jax.Array  # [len(MINIBATCH_SCALARS)] (+ identity gap)
    log_prob: jax.Array  # [minibatch_size]


MINIBATCH_SCALARS = ("policy_loss", "value_loss", "entropy", "grad_norm")


class Evaluation(NamedTuple):
    """Mean undiscounted return of one evaluation of one run, in both modes."""

    stochastic: jax.Array  # actions sampled from the policy
    deterministic: jax.Array  # the most likely action (argmax / mean)


class Trainer(NamedTuple):
    spec: EnvSpec
    init: Callable[[HParams], Runner]
    run_chunk: Callable[..., tuple[Runner, Metrics]]
    paths: CodePaths  # the code paths compiled: runs outside them are refused
    evaluate: Callable[..., Evaluation]  # (runner, hp, episodes) -> Evaluation
    policy_spec: PolicySpec


def _select(flag, on_true, on_false):
    """Elementwise choice between two pytrees by a traced scalar condition."""
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), on_true, on_false)


def _write(index, column, value):
    """``column`` with ``value`` (a float32 scalar, checked when traced: a metric of
    another type would otherwise be cast silently) at ``index``."""
    if jnp.shape(value) != () or value.dtype != column.dtype:
        raise TypeError(f"a metric must be a float32 scalar, got {value.aval}")
    # A select over the column, not ``.at[index].set``: under vmap that becomes a
    # scatter, which XLA compiles with a bounds-check kernel per metric.
    return jnp.where(jnp.arange(column.shape[0]) == index, value, column)


def learning_rate(hp: HParams, config: Config, update_index):
    """The learning rate during update ``update_index`` (see ``annealed_lr``)."""
    return rules.annealed_lr(hp.lr, hp.anneal_lr, update_index, config.num_updates)


def make_optimizer(hp: HParams, config: Config) -> optax.GradientTransformation:
    """Global-norm clip, Adam (eps 1e-5), learning rate annealed linearly per update."""
    steps_per_update = config.epochs * config.num_minibatches
    return optax.chain(
        optax.clip_by_global_norm(hp.max_grad_norm),
        optax.scale_by_adam(eps=1e-5),
        optax.scale_by_learning_rate(
            lambda count: learning_rate(hp, config, count // steps_per_update)
        ),
    )


def choose(names, chosen, all_names, branches):
    """Calls ``branches[name]()`` for the run's choice.

    ``chosen`` is a traced index into ``all_names``; only the ``names`` the sweep uses
    are compiled, and with a single one there is no branch at all. Under vmap
    ``lax.switch`` evaluates every compiled branch and selects. An index outside
    ``names`` would select branch 0: ``Trainer.paths`` lets the host refuse such runs.
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


def policy_loss_per_sample(inputs: LossInputs, loss_id, names=LOSSES):
    """The per-sample policy loss of the run's variant (traced id; see ``choose``)."""
    branches = {name: partial(BY_NAME[name].policy_loss, inputs) for name in names}
    return choose(names, loss_id, LOSSES, branches)


def beta_t(hp: HParams, log_prob, old_log_prob, advantage, names=LOSSES):
    """``beta_t`` with the gate of the run's variant; only the gates of the sweep's
    ``names`` are compiled."""

    def beta_with(gate):
        return losses.klip_beta(
            log_prob,
            old_log_prob,
            advantage,
            clip_eps=hp.clip_eps,
            gate=gate,
            softness=None if gate == "step" else hp.softness,
        )

    gates = tuple(dict.fromkeys(BY_NAME[name].gate for name in names))
    if len(gates) == 1:
        return beta_with(gates[0])
    gate_index = [gates.index(BY_NAME[n].gate) if n in names else 0 for n in LOSSES]
    return jax.lax.switch(
        jnp.asarray(gate_index)[hp.loss_id], [partial(beta_with, g) for g in gates]
    )


@dataclasses.dataclass(frozen=True)
class RunProgram:
    """The pieces of one run's program for a static config and its code paths."""

    config: Config
    paths: CodePaths
    spec: EnvSpec
    actor: Actor
    critic: Critic
    obs_size: int

    @property
    def dist(self):
        return self.spec.distribution

    def flat_obs(self, obs):
        """Observations of any rank (MinAtar's grids) enter the MLPs flattened."""
        return obs.reshape(self.config.num_envs, self.obs_size).astype(jnp.float32)

    def kl_estimate(self, hp, old_dist_params, dist_params, log_prob, old_log_prob):
        estimators = {
            "analytic": lambda: self.dist.kl(old_dist_params, dist_params),
            "sample": lambda: losses.sampled_kl(log_prob, old_log_prob),
            "k3": lambda: losses.k3_kl(log_prob, old_log_prob),
        }
        return choose(
            self.paths.kl_estimators, hp.kl_estimator_id, KL_ESTIMATORS, estimators
        )

    def init(self, hp: HParams) -> Runner:
        key = jax.random.PRNGKey(hp.seed)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy_obs = jnp.zeros(self.obs_size, jnp.float32)
        params = {
            "actor": self.actor.init(actor_key, dummy_obs),
            "critic": self.critic.init(critic_key, dummy_obs),
        }
        reset_keys = jax.random.split(env_key, self.config.num_envs)
        obs, env_state = jax.vmap(self.spec.env.reset, in_axes=(0, None))(
            reset_keys, self.spec.params
        )
        zeros = jnp.zeros(self.config.num_envs, jnp.float32)
        runner = Runner(
            params=params,
            opt_state=make_optimizer(hp, self.config).init(params),
            env_state=env_state,
            obs=self.flat_obs(obs),
            episode_return=zeros,
            episode_length=zeros,
            obs_stats=RunningStats.create((self.obs_size,)),
            reward_stats=RunningStats.create(),
            discounted_return=zeros,
            beta=jnp.asarray(hp.beta, jnp.float32),
            key=key,
            update=jnp.asarray(0, jnp.int32),
            diverged_at=jnp.asarray(-1, jnp.int32),
        )
        # No weak types (an env's step counter, a count started from a Python
        # float): a runner read back from a checkpoint has none, and the chunk
        # program must see the same types either way, or a resume compiles anew.
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), runner)

    def env_step(self, hp: HParams, carry, step_inputs):
        """One step of every env with the current actor (a ``lax.scan`` body)."""
        runner, tally = carry
        noise, env_keys = step_inputs
        paths, dist = self.paths, self.dist

        def if_obs_normalized(on, off):
            return when(paths.normalize_obs, hp.normalize_obs, on, off)

        def if_reward_normalized(on, off):
            return when(paths.normalize_reward, hp.normalize_reward, on, off)

        obs_stats = if_obs_normalized(
            lambda: runner.obs_stats.update(runner.obs), lambda: runner.obs_stats
        )
        policy_obs = if_obs_normalized(
            lambda: obs_stats.normalize(runner.obs), lambda: runner.obs
        )
        dist_params = self.actor.apply(runner.params["actor"], policy_obs)
        action = dist.sample_with(noise, dist_params)
        log_prob = dist.log_prob(dist_params, action)
        obs, env_state, reward, terminated, truncated, info = jax.vmap(
            self.spec.env.step, in_axes=(0, 0, 0, None)
        )(env_keys, runner.env_state, env_action(self.spec, action), self.spec.params)
        reward = reward.astype(jnp.float32)
        done = terminated | truncated
        raw_final_obs = self.flat_obs(info["final_observation"])
        final_obs = if_obs_normalized(
            lambda: obs_stats.normalize(raw_final_obs), lambda: raw_final_obs
        )
        discounted = runner.discounted_return * hp.gamma + reward
        reward_stats = if_reward_normalized(
            lambda: runner.reward_stats.update(discounted), lambda: runner.reward_stats
        )
        learner_reward = if_reward_normalized(
            lambda: reward_stats.scale(reward), lambda: reward
        )
        episode_return = runner.episode_return + reward
        episode_length = runner.episode_length + 1.0
        runner = runner._replace(
            env_state=env_state,
            obs=self.flat_obs(obs),
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
        tally = tally.add(done, episode_return, episode_length)
        return (runner, tally), transition

    def rollout(self, runner: Runner, hp: HParams):
        """``num_steps`` steps of ``num_envs`` envs; the randomness is drawn up front
        in two batched calls."""
        num_steps, num_envs = self.config.num_steps, self.config.num_envs
        key, noise_key, env_key = jax.random.split(runner.key, 3)
        noise = self.dist.noise(noise_key, (num_steps, num_envs))
        env_keys = jax.random.split(env_key, num_steps * num_envs)
        env_keys = env_keys.reshape((num_steps, num_envs) + env_keys.shape[1:])
        (runner, tally), transitions = jax.lax.scan(
            partial(self.env_step, hp),
            (runner._replace(key=key), rules.EpisodeTally.zero()),
            (noise, env_keys),
        )
        return runner, transitions, tally

    def batch_of(self, runner: Runner, hp: HParams, traj: Transition):
        """GAE over the rollout (one batched critic pass over every observation and
        every pre-reset successor), flattened to ``[batch_size, ...]``."""
        both = jnp.concatenate([traj.obs, traj.final_obs])
        values, next_values = jnp.split(
            self.critic.apply(runner.params["critic"], both), 2
        )
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
            return x.reshape((self.config.batch_size,) + x.shape[2:])

        return Batch(
            obs=flat(traj.obs),
            action=flat(traj.action),
            log_prob=flat(traj.log_prob),
            dist_params=flat(traj.dist_params),
            advantage=flat(rules.normalize_advantages(advantages)),
            value=flat(values),
            target=flat(targets),
        )

    def loss(self, hp: HParams, beta, params, batch: Batch):
        """Policy + value - entropy loss of one minibatch, and its parts."""
        dist_params = self.actor.apply(params["actor"], batch.obs)
        log_prob = self.dist.log_prob(dist_params, batch.action)
        kl = (
            self.kl_estimate(
                hp, batch.dist_params, dist_params, log_prob, batch.log_prob
            )
            if self.paths.needs_kl
            else jnp.zeros_like(log_prob)
        )
        inputs = LossInputs(
            log_prob,
            batch.log_prob,
            batch.advantage,
            kl,
            hp.clip_eps,
            hp.softness,
            beta,
        )
        policy = policy_loss_per_sample(inputs, hp.loss_id, self.paths.losses).mean()
        value = self.critic.apply(params["critic"], batch.obs)
        value_loss = losses.clipped_value_loss(
            value, batch.value, batch.target, clip_eps=hp.value_clip_eps
        ).mean()
        entropy = self.dist.entropy(dist_params).mean()
        total = policy + hp.vf_coef * value_loss - hp.ent_coef * entropy
        return total, (policy, value_loss, entropy, log_prob)

    def minibatch_step(self, hp: HParams, beta, carry, batch: Batch):
        params, opt_state = carry
        grads, (policy, value_loss, entropy, log_prob) = jax.grad(
            lambda p: self.loss(hp, beta, p, batch), has_aux=True
        )(params)
        scalars = [policy, value_loss, entropy, optax.tree.norm(grads)]
        if self.config.identity_check:
            scalars.append(self.identity_gap(hp, params, batch))
        updates, opt_state = make_optimizer(hp, self.config).update(
            grads, opt_state, params
        )
        stats = MinibatchStats(jnp.stack(scalars), log_prob)
        return (optax.apply_updates(params, updates), opt_state), stats

    def identity_gap(self, hp: HParams, params, batch: Batch):
        """Max |grad of PPO-Clip - grad of the per-sample KL form| on this minibatch.

        Both gradients in full, as two ``jax.grad`` calls give them, from one
        forward pass of the actor: ``jax.vjp`` keeps its residuals for the two
        backward passes (separate ``jax.grad`` calls ran the forward pass per loss,
        about 5% of an identity-checked update). Not one backward pass of the
        cotangents' difference: XLA would fuse the two losses' derivatives into one
        kernel and round them differently, a gap of ~3e-8 where the gradients are
        bit-identical.
        """

        def log_prob_of(actor_params):
            dist_params = self.actor.apply(actor_params, batch.obs)
            return self.dist.log_prob(dist_params, batch.action)

        log_prob, backward = jax.vjp(log_prob_of, params["actor"])

        def gradient(loss):
            def objective(log_prob):
                return loss(
                    log_prob, batch.log_prob, batch.advantage, clip_eps=hp.clip_eps
                ).mean()

            (grads,) = backward(jax.grad(objective)(log_prob))
            return jax.tree.leaves(grads)

        gaps = [
            jnp.max(jnp.abs(a - b))
            for a, b in zip(gradient(losses.ppo_clip), gradient(losses.klip))
        ]
        return jnp.max(jnp.stack(gaps))

    def epochs(self, runner: Runner, hp: HParams, batch: Batch, epochs_key):
        """``epochs`` shuffled passes of minibatch steps; returns the new parameters
        and optimiser state, the per-step stats and the shuffles."""
        config = self.config
        orders = jax.vmap(lambda k: sorting.permutation(k, config.batch_size))(
            jax.random.split(epochs_key, config.epochs)
        )

        def epoch(carry, order):
            minibatches = jax.tree.map(
                lambda x: x[order].reshape(
                    (config.num_minibatches, config.minibatch_size) + x.shape[1:]
                ),
                batch,
            )
            step = partial(self.minibatch_step, hp, runner.beta)
            return jax.lax.scan(step, carry, minibatches)

        (params, opt_state), stats = jax.lax.scan(
            epoch, (runner.params, runner.opt_state), orders
        )
        return params, opt_state, stats, orders

    def update_statistics(self, hp: HParams, batch: Batch, orders, log_prob) -> dict:
        """Partition, beta_t and KL statistics over every sample of every minibatch
        step of an update (``log_prob``: ``[epochs, minibatches, minibatch_size]``, as
        each step saw it before its gradient step), computed in one pass."""
        shape = log_prob.shape
        old_log_prob = batch.log_prob[orders].reshape(shape)
        advantage = batch.advantage[orders].reshape(shape)
        data = (log_prob, old_log_prob, advantage)
        parts = losses.partition(*data, clip_eps=hp.clip_eps)
        fractions = losses.fractions_of(parts)
        beta = losses.summarize_beta(beta_t(hp, *data, self.paths.losses), parts.kill)
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

    def update(self, runner: Runner, hp: HParams) -> tuple[Runner, Metrics]:
        """One PPO iteration: rollout, GAE, epochs of minibatch steps, adaptive beta."""
        runner, traj, tally = self.rollout(runner, hp)
        batch = self.batch_of(runner, hp, traj)
        key, epochs_key = jax.random.split(runner.key)
        params, opt_state, stats, orders = self.epochs(runner, hp, batch, epochs_key)
        sample_stats = self.update_statistics(hp, batch, orders, stats.log_prob)

        # Adaptive beta: once per rollout, from the KL the whole update produced.
        new_dist_params = self.actor.apply(params["actor"], batch.obs)
        new_log_prob = self.dist.log_prob(new_dist_params, batch.action)
        rollout_kl = self.kl_estimate(
            hp, batch.dist_params, new_dist_params, new_log_prob, batch.log_prob
        ).mean()
        adapts = jnp.isin(hp.loss_id, jnp.asarray(ADAPTIVE_IDS))
        beta = jnp.where(
            adapts, rules.adapt_beta(runner.beta, rollout_kl, hp.kl_target), runner.beta
        )
        scalars = stats.scalars.reshape(-1, stats.scalars.shape[-1])
        metrics = Metrics(
            **dict(zip(MINIBATCH_SCALARS, jnp.mean(scalars, axis=0))),
            **sample_stats,
            identity_gap=jnp.max(scalars[:, -1])  # the worst minibatch
            if self.config.identity_check
            else jnp.asarray(jnp.nan, jnp.float32),
            env_steps=((runner.update + 1) * self.config.batch_size).astype(
                jnp.float32
            ),
            episode_return=tally.mean_return(),
            episode_length=tally.mean_length(),
            episodes=tally.count,
            explained_variance=rules.explained_variance(batch.value, batch.target),
            learning_rate=learning_rate(hp, self.config, runner.update),
            kl_beta=beta,
            rollout_kl=rollout_kl,
        )
        runner = runner._replace(
            params=params,
            opt_state=opt_state,
            beta=beta,
            key=key,
            update=runner.update + 1,
        )
        return runner, metrics

    def guarded_update(self, runner: Runner, hp: HParams):
        """Runs one update unless the run is finished or diverged; freezes a run whose
        parameters or losses turn non-finite and records where."""
        active = (runner.update < self.config.num_updates) & (runner.diverged_at < 0)
        new_runner, metrics = self.update(runner, hp)
        finite = (
            rules.all_finite(new_runner.params)
            & jnp.isfinite(metrics.policy_loss)
            & jnp.isfinite(metrics.value_loss)
        )
        accept = active & finite
        diverged_at = jnp.where(active & ~finite, runner.update, runner.diverged_at)
        runner = _select(accept, new_runner, runner)._replace(diverged_at=diverged_at)
        nan_metrics = jax.tree.map(lambda m: jnp.full_like(m, jnp.nan), metrics)
        return runner, _select(accept, metrics, nan_metrics)

    def policy(self, runner: Runner, hp: HParams) -> Policy:
        """The run's current policy, as it acts in its rollouts."""
        return Policy(
            runner.params["actor"],
            runner.obs_stats,
            hp.normalize_obs > 0,
            PolicySpec.of(self.config.env, self.spec, self.config.hidden_sizes),
        )

    def evaluate(
        self, runner: Runner, hp: HParams, episodes: int, env_batch: int | None = None
    ) -> Evaluation:
        """``episodes`` fresh episodes in each mode with the current policy (keys of
        its own: the run's training randomness is untouched); ``env_batch`` as in
        ``evaluation.episode_returns``."""
        # Both modes in one loop: slots [0, episodes) sample, the rest act greedily.
        greedy = jnp.arange(2 * episodes) >= episodes
        returns, _ = evaluation.episode_returns(
            self.policy(runner, hp),
            self.spec,
            evaluation.eval_key(hp.seed, runner.update),
            2 * episodes,
            greedy,
            env_batch,
        )
        return Evaluation(returns[:episodes].mean(), returns[episodes:].mean())

    def run_chunk(self, runner: Runner, hp: HParams, num_updates: int, updates=None):
        """``updates`` guarded updates (default ``num_updates``; may be traced, at most
        ``num_updates``). The metrics are ``[num_updates]`` (a static length), NaN
        past ``updates``: one compiled chunk program serves calls of any length, so
        a sweep shows progress after its first update and computes no update past
        its last."""
        if updates is None:
            updates = num_updates
        elif isinstance(updates, int) and not 0 <= updates <= num_updates:
            raise ValueError(f"updates={updates}: expected 0 to {num_updates}")
        filled = Metrics(
            *(jnp.full(num_updates, jnp.nan, jnp.float32) for _ in Metrics._fields)
        )

        def one_update(index, carry):
            runner, filled = carry
            runner, metrics = self.guarded_update(runner, hp)
            return runner, jax.tree.map(partial(_write, index), filled, metrics)

        return jax.lax.fori_loop(0, updates, one_update, (runner, filled))


def make_trainer(config: Config | None = None, paths: CodePaths = ALL_PATHS) -> Trainer:
    """The pure per-run ``init(hp) -> Runner`` and ``run_chunk(runner, hp, n) ->
    (runner, Metrics)`` for a static config (default: ``Config()``), compiled for the
    code ``paths`` its runs take (all of them by default).

    ``run_chunk`` returns ``Metrics`` whose fields are ``[n]`` (one per update; with
    ``run_chunk(runner, hp, n, updates)``, a possibly traced count of at most ``n``
    updates, NaN past it); vmap both over a stacked run table for a sweep, as
    ``klipjax.train`` does.
    """
    config = config or Config()
    spec = make(config.env)
    program = RunProgram(
        config=config,
        paths=paths,
        spec=spec,
        actor=Actor(
            config.hidden_sizes,
            spec.distribution.param_size // (2 if spec.continuous else 1),
            spec.continuous,
        ),
        critic=Critic(config.hidden_sizes),
        obs_size=math.prod(spec.obs_shape),
    )
    return Trainer(
        spec=spec,
        init=program.init,
        run_chunk=program.run_chunk,
        paths=paths,
        evaluate=program.evaluate,
        policy_spec=PolicySpec.of(config.env, spec, config.hidden_sizes),
    )
