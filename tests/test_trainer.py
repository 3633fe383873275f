"""The training program: one trace per grid, truncation-correct values, the live
identity, adaptive beta, continuous actions."""

import chex
import jax
import numpy as np
import pytest

from klipjax import envs
from klipjax.core.networks import Critic
from klipjax.engine import sweep
from klipjax.engine.trainer import make_trainer
from tests.probe_envs import constant_reward
from tests.sweeps import experiment, run

TINY = {
    "env": "CartPole-v1",
    "total_steps": 2048,
    "num_envs": 4,
    "num_steps": 64,
    "epochs": 2,
    "minibatch_size": 64,
}


def tiny(**overrides):
    return experiment({**TINY, **overrides})


def count_traces(monkeypatch):
    """Wraps the per-run chunk function so each trace is counted and at most one
    is allowed (``chex.assert_max_traces``)."""
    traces = []

    def make_counted(static, paths):
        trainer = make_trainer(static, paths)

        def run_chunk(runner, hp, num_updates, updates=None):
            traces.append(1)
            return trainer.run_chunk(runner, hp, num_updates, updates)

        return trainer._replace(run_chunk=chex.assert_max_traces(run_chunk, n=1))

    monkeypatch.setattr(sweep, "make_trainer", make_counted)
    return traces


@pytest.mark.parametrize(
    "grid, runs",
    [
        ({"loss": ["ppo_clip", "klip"], "clip_eps": [0.1, 0.2]}, 4),
        pytest.param({}, 1, marks=pytest.mark.slow),  # the grid case covers it
    ],
)
def test_a_whole_grid_traces_the_train_function_once(monkeypatch, grid, runs):
    chex.clear_trace_counter()
    traces = count_traces(monkeypatch)
    cfg = tiny(chunk_updates=4, **grid)  # 8 updates -> 2 calls of the same program
    assert len(cfg.hparams.seed) == runs
    _, metrics, report = run(cfg)
    assert report.chunks_done == 2
    assert len(traces) == 1
    assert metrics["episode_return"].shape == (runs, 8)


def learned_probe_value(env_id, factory):
    """Trains on a constant-observation probe env; returns (critic value, metrics)."""
    envs.register(env_id, factory)
    cfg = experiment(
        {
            "env": env_id,
            "total_steps": 8192,
            "num_envs": 4,
            "num_steps": 32,
            "epochs": 4,
            "minibatch_size": 32,
            "gamma": 0.5,
            "lr": 3e-3,
            "anneal_lr": False,
            "value_clip_eps": 100.0,
        }
    )
    runner, metrics, _ = run(cfg)
    critic_params = jax.tree.map(lambda x: x[0], runner.params["critic"])
    value = Critic(cfg.config.hidden_sizes).apply(
        critic_params, np.zeros((1,), np.float32)
    )
    return float(value), metrics


def test_truncation_bootstraps_from_the_final_observation():
    # Reward 1 forever, 5-step time limit, constant observation: the true value is
    # 1/(1-gamma) = 2 for gamma 0.5. Merging truncation into termination would
    # teach the critic the steps-to-go average, about 1.61.
    value, _ = learned_probe_value("ProbeConstant-v0", constant_reward(max_steps=5))
    assert abs(value - 2.0) < 0.05


def test_terminal_steps_do_not_bootstrap():
    # Termination after 2 steps: V(start) = 1 + gamma = 1.5 with gamma 0.5. The
    # observation is constant, so the critic sees the mix of both steps: targets
    # 1.5 and 1.0, mean 1.25. Bootstrapping through termination would give more.
    value, metrics = learned_probe_value(
        "ProbeTwoStep-v0", constant_reward(max_steps=50, terminate_at=2)
    )
    assert abs(value - 1.25) < 0.05
    np.testing.assert_allclose(metrics["episode_length"][0], 2.0)
    np.testing.assert_allclose(metrics["episode_return"][0], 2.0)


def test_live_identity_check_is_exactly_zero_on_training_data():
    cfg = tiny(loss="ppo_clip", identity_check=True, seeds=2, epochs=10, lr=1e-3)
    _, metrics, _ = run(cfg)
    assert np.all(metrics["identity_gap"] == 0.0)
    assert np.max(metrics["kill_fraction"]) > 0  # clipping actually happened


@pytest.mark.parametrize("form", ["klip", "scaled_ppo_clip"])
def test_identity_gap_is_the_largest_difference_of_the_two_gradients(monkeypatch, form):
    # Against two plain jax.grad calls: 0 for the real KL form, and the actual gap
    # for a form whose gradient differs (1.5x PPO-Clip's), so the check can fail.
    from klipjax import losses
    from klipjax.engine.trainer import Batch

    if form == "scaled_ppo_clip":
        monkeypatch.setattr(
            losses, "klip", lambda *args, **kw: 1.5 * losses.ppo_clip(*args, **kw)
        )
    cfg = tiny(loss="ppo_clip", identity_check=True)
    trainer = make_trainer(cfg.config)
    program = trainer.init.__self__
    hp = jax.tree.map(lambda column: column[0], cfg.hparams)
    params = program.init(hp).params
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    n = 64
    obs = jax.random.normal(keys[0], (n, program.obs_size))
    action = jax.random.randint(keys[1], (n,), 0, 2)
    log_prob_now = program.dist.log_prob(
        program.actor.apply(params["actor"], obs), action
    )
    # Old log-probs around the current ones, some ratios outside the clip band.
    old = log_prob_now + 0.3 * jax.random.normal(keys[2], (n,))
    advantage = jax.random.normal(keys[3], (n,))
    batch = Batch(obs, action, old, None, advantage, None, None)

    def grad_of(loss):
        def objective(actor_params):
            log_prob = program.dist.log_prob(
                program.actor.apply(actor_params, obs), action
            )
            return loss(log_prob, old, advantage, clip_eps=hp.clip_eps).mean()

        return jax.grad(objective)(params["actor"])

    expected = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(grad_of(losses.ppo_clip)),
            jax.tree.leaves(grad_of(losses.klip)),
        )
    )
    gap = float(jax.jit(program.identity_gap)(hp, params, batch))
    if form == "klip":
        assert gap == expected == 0.0
    else:
        assert expected > 1e-3
        np.testing.assert_allclose(gap, expected, rtol=1e-5)


def test_ppo_clip_and_klip_train_identically():
    cfg = tiny(loss=["ppo_clip", "klip", "kl_fixed"], seeds=2, total_steps=4096)
    runner, metrics, _ = run(cfg)
    hashes = sweep.params_sha256(runner.params)
    assert (
        hashes[0] == hashes[2] and hashes[1] == hashes[3]
    )  # ppo_clip == klip, per seed
    assert hashes[0] != hashes[4] and hashes[0] != hashes[1]  # not trivially equal
    np.testing.assert_array_equal(
        metrics["episode_return"][:2], metrics["episode_return"][2:4]
    )
    identity = sweep.identity_differences(cfg.hparams, runner.params)
    assert identity == {
        "pairs": 2,
        "max_param_difference": 0.0,
        "identical_params": True,
    }


def test_adaptive_beta_follows_the_rule():
    cfg = tiny(loss="kl_adaptive", beta=1.0, kl_target=0.002, total_steps=8192, lr=1e-3)
    _, metrics, _ = run(cfg)
    beta, kl = metrics["kl_beta"][0], metrics["rollout_kl"][0]
    previous = np.concatenate([[1.0], beta[:-1]])
    expected = np.where(
        kl > 1.5 * 0.002,
        previous * 2,
        np.where(kl < 0.002 / 1.5, previous / 2, previous),
    )
    np.testing.assert_allclose(beta, expected, rtol=1e-6)
    assert len(set(np.sign(np.diff(np.log(beta))))) >= 2  # it moved both ways or held


def test_fixed_beta_stays_fixed_and_annealing_reaches_zero():
    cfg = tiny(loss="kl_fixed", beta=0.3)
    _, metrics, _ = run(cfg)
    np.testing.assert_allclose(metrics["kl_beta"][0], 0.3)
    lr = metrics["learning_rate"][0]
    # 8 updates: lr * (1 - u/8) for u = 0..7
    np.testing.assert_allclose(lr, 3e-4 * (1.0 - np.arange(8) / 8), rtol=1e-6)


def test_continuous_actions_with_normalisation_run_and_learn_something():
    cfg = experiment(
        {
            "env": "Pendulum-v1",
            "total_steps": 4096,
            "num_envs": 4,
            "num_steps": 128,
            "epochs": 2,
            "minibatch_size": 128,
            "normalize_obs": True,
            "normalize_reward": True,
            "loss": ["ppo_clip", "klip_sigmoid", "kl_adaptive"],
        }
    )
    runner, metrics, _ = run(cfg)
    assert np.all(np.isfinite(metrics["policy_loss"]))
    assert np.all(metrics["episodes"].sum(axis=1) == 4 * 4096 // (4 * 200))
    # normaliser statistics moved off their initial values
    assert np.all(np.abs(np.asarray(runner.obs_stats.mean)) > 0)
    assert np.all(np.asarray(runner.reward_stats.count) >= 4096)
    # Gaussian log-std is a learned parameter
    log_std = np.asarray(runner.params["actor"]["params"]["log_std"])
    assert log_std.shape == (3, 1) and np.all(log_std != 0)


def test_divergent_run_is_frozen_and_the_others_continue():
    cfg = tiny(lr=[3e-4, 1e30], max_grad_norm=1e30, total_steps=4096)
    runner, metrics, _ = run(cfg)
    diverged = np.asarray(runner.diverged_at)
    assert diverged[0] == -1 and diverged[1] >= 0
    assert np.all(np.isfinite(metrics["policy_loss"][0]))
    assert np.all(np.isnan(metrics["policy_loss"][1, diverged[1] :]))
    for leaf in jax.tree.leaves(runner.params):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_a_metric_of_another_type_is_refused_not_cast():
    from klipjax.engine.trainer import _write

    column = jax.numpy.full(3, np.nan, np.float32)
    assert np.asarray(_write(1, column, np.float32(2.5))).tolist()[1] == 2.5
    for wrong in (np.int32(2), np.zeros(2, np.float32), np.float16(1.0)):
        with pytest.raises(TypeError, match="float32 scalar"):
            _write(1, column, jax.numpy.asarray(wrong))
