"""Evaluation: greedy and sampled episodes of a policy, on probe environments whose
returns are known from the policy's action probabilities, and inside a sweep
(between chunks, on its own keys, never changing the training)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klipjax as kj
from klipjax import envs
from klipjax.core.normalization import RunningStats
from klipjax.engine import evaluation, sweep, training
from klipjax.envs import brax_adapter as brax_envs
from klipjax.outputs import tracking
from klipjax.policy import Policy, PolicySpec
from tests.probe_envs import ActionReward, action_reward
from tests.tensorboard_logs import expected_scalars, read_tensorboard

STEPS = 5  # the probe's episode length


def constant_policy(env_id: str, outputs) -> Policy:
    """A policy whose actor ignores its input and emits ``outputs`` (logits, or a
    Gaussian mean): every weight zero, the output layer's bias set."""
    spec = PolicySpec.of(env_id, envs.make(env_id), (8,))
    params = spec.actor.init(jax.random.PRNGKey(0), jnp.zeros(spec.obs_size))
    last = max(k for k in params["params"]["MLP_0"])

    def set_leaf(path, leaf):
        names = [getattr(k, "key", None) for k in path]
        if names[-2:] == [last, "bias"]:
            return jnp.asarray(outputs, jnp.float32)
        return jnp.zeros_like(leaf)

    params = jax.tree_util.tree_map_with_path(set_leaf, params)
    stats = RunningStats.create((spec.obs_size,))
    return Policy(params, stats, jnp.asarray(False), spec)


@pytest.fixture(scope="module")
def probes():
    kj.register("probe/action-reward", action_reward(STEPS))
    kj.register("probe/action-reward-3", action_reward(STEPS, terminate_at=3))
    kj.register("probe/box-reward", action_reward(STEPS, continuous=True))

    class OwnStep(ActionReward):  # keeps gymnax's auto-reset in evaluations too
        def step(self, key, state, action, params=None):
            return super().step(key, state, action, params)

    kj.register(
        "probe/action-reward-3-own-step",
        lambda: (OwnStep(), action_reward(STEPS, terminate_at=3)()[1]),
    )


def test_greedy_and_sampled_returns_have_their_known_values(probes):
    # p(action 1) = 3/4: greedy takes action 1 every step (return 5); sampled
    # returns are Binomial(5, 3/4), mean 3.75, sd sqrt(5 * 3/16) per episode.
    policy = constant_policy("probe/action-reward", [0.0, math.log(3.0)])
    greedy, lengths = kj.evaluate(policy, 16)
    np.testing.assert_array_equal(greedy, np.full(16, 5.0))
    np.testing.assert_array_equal(lengths, np.full(16, 5.0))
    sampled, _ = kj.evaluate(policy, 4000, seed=1, deterministic=False)
    assert set(np.unique(sampled)) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    standard_error = math.sqrt(5 * 3 / 16 / 4000)
    assert abs(sampled.mean() - 3.75) < 4 * standard_error
    again, _ = kj.evaluate(policy, 4000, seed=1, deterministic=False)
    np.testing.assert_array_equal(sampled, again)  # the seed fixes the episodes


@pytest.mark.parametrize(
    "env_id", ["probe/action-reward-3", "probe/action-reward-3-own-step"]
)
def test_an_episode_counts_only_its_own_steps(probes, env_id):
    # terminated after 3 steps: the env steps on (stepped without a reset, or, with
    # a step of its own, auto-reset), and what follows must not be added.
    policy = constant_policy(env_id, [0.0, 5.0])
    returns, lengths = kj.evaluate(policy, 8)
    np.testing.assert_array_equal(returns, np.full(8, 3.0))
    np.testing.assert_array_equal(lengths, np.full(8, 3.0))


def test_greedy_box_actions_are_the_mean_clipped_to_the_bounds(probes):
    # mean 3 and log-std 0: the greedy action is clipped to 1 (return 5); sampled
    # actions are clipped too, so no step earns more than 1.
    policy = constant_policy("probe/box-reward", [3.0])
    assert policy.act(jnp.zeros(1)).shape == (1,)
    assert policy.act(jnp.zeros((7, 1))).shape == (7, 1)
    returns, _ = kj.evaluate(policy, 4)
    np.testing.assert_array_equal(returns, np.full(4, 5.0))
    sampled, _ = kj.evaluate(policy, 200, deterministic=False)
    assert sampled.max() <= 5.0 and sampled.min() >= -5.0
    assert 3.0 < sampled.mean() < 5.0  # P(sample >= 1) = P(N(3,1) >= 1) = 0.98


def test_act_needs_a_key_to_sample_and_checks_the_shape(probes):
    policy = constant_policy("probe/action-reward", [0.0, 1.0])
    with pytest.raises(ValueError, match="needs a key"):
        policy.act(jnp.zeros(1), deterministic=False)
    with pytest.raises(ValueError, match="obs shape"):
        policy.act(jnp.zeros((3, 2)))
    with pytest.raises(kj.ConfigError, match="episodes"):
        kj.evaluate(policy, 0)


TINY = {
    "env": "probe/action-reward",
    "total_steps": 8 * 16,  # 8 updates
    "num_envs": 2,
    "num_steps": 8,
    "minibatch_size": 8,
    "epochs": 1,
    "hidden_sizes": (8,),
}


def test_a_sweep_evaluates_between_chunks_without_touching_its_training(probes):
    table = kj.grid(loss=["ppo_clip", "klip"], seeds=2)
    evaluated = kj.train(
        kj.Config(**TINY, eval_every=2, eval_episodes=3, final_eval_episodes=6),
        table,
        chunk_updates=2,
        progress=False,
    )
    plain = kj.train(
        kj.Config(**TINY, final_eval_episodes=0),
        table,
        chunk_updates=2,
        progress=False,
    )
    # Evaluation draws its own keys: training is bit-identical with it on or off.
    assert evaluated.params_sha256 == plain.params_sha256
    for name, values in plain.metrics.items():
        if name.startswith("eval_"):
            assert np.isnan(values).all()  # no evaluation at all
        else:
            np.testing.assert_array_equal(evaluated.metrics[name], values)
    # Evaluations after updates 2, 4, 6 (3 episodes) and 8 (the final one, 6).
    det = evaluated.metrics["eval_return_det"]
    sampled = evaluated.metrics["eval_return"]
    done_at = [1, 3, 5, 7]  # update index = updates done - 1
    assert np.isfinite(det[:, done_at]).all() and np.isfinite(sampled[:, done_at]).all()
    others = np.delete(det, done_at, axis=1)
    assert np.isnan(others).all()
    assert ((det >= 0) & (det <= STEPS))[:, done_at].all()
    np.testing.assert_array_equal(evaluated.final_evaluation(), det[:, -1])
    # The final evaluation is the run's final policy on eval_key(seed, 8): the
    # same policy evaluated outside the sweep gives the same returns.
    for run in range(4):
        policy = evaluated.policy(run)
        key = evaluation.eval_key(int(evaluated.hparams.seed[run]), 8)
        greedy = jnp.arange(12) >= 6
        returns, _ = evaluation.episode_returns(
            policy, envs.make(TINY["env"]), key, 12, greedy
        )
        np.testing.assert_allclose(returns[6:].mean(), det[run, -1], rtol=1e-6)
        np.testing.assert_allclose(returns[:6].mean(), sampled[run, -1], rtol=1e-6)
    summary = evaluated.summary_dict()
    assert summary["final_evaluation"]["episodes"] == 6
    assert [r["final_eval_return_det"] for r in summary["runs"]] == list(det[:, -1])


def test_evaluations_must_fall_between_chunks(probes):
    with pytest.raises(kj.ConfigError, match="eval_every=3.*multiple of chunk"):
        kj.train(
            kj.Config(**TINY, eval_every=3),
            kj.hparams(),
            chunk_updates=2,
            progress=False,
        )
    with pytest.raises(kj.ConfigError, match="eval_episodes"):
        kj.Config(**TINY, eval_episodes=0)
    with pytest.raises(kj.ConfigError, match="final_eval_episodes"):
        kj.Config(**TINY, final_eval_episodes=-1)


def random_policy(env_id: str) -> Policy:
    spec = PolicySpec.of(env_id, envs.make(env_id), (8,))
    params = spec.actor.init(jax.random.PRNGKey(1), jnp.zeros(spec.obs_size))
    stats = RunningStats.create((spec.obs_size,))
    return Policy(params, stats, jnp.asarray(False), spec)


@pytest.mark.parametrize("env_id", ["probe/action-reward", "CartPole-v1"])
def test_episodes_stepped_in_batches_are_the_same_episodes(probes, env_id):
    # An env with a bound on its batch (Brax on a CPU) steps the slots a few at a
    # time, on the same keys: sampled and greedy episodes are unchanged.
    policy, spec = random_policy(env_id), envs.make(env_id)
    modes = jnp.arange(10) % 2 == 0

    @functools.partial(jax.jit, static_argnums=1)
    def play(key, env_batch):
        return evaluation.episode_returns(policy, spec, key, 10, modes, env_batch)

    key = jax.random.PRNGKey(3)
    whole = play(key, None)
    for env_batch in (1, 3):
        for got, want in zip(play(key, env_batch), whole):
            np.testing.assert_array_equal(got, want, err_msg=str(env_batch))
    assert len(set(np.asarray(whole[0]).tolist())) > 1  # not one episode repeated


def test_a_sweep_evaluates_runs_in_groups_where_the_env_bounds_its_batch(
    probes, monkeypatch, caplog
):
    config = kj.Config(**TINY, final_eval_episodes=6)
    table = kj.grid(loss=["ppo_clip", "klip"], seeds=3)
    # parallel_runs fixed: the bound would otherwise narrow the training too.
    whole = kj.train(config, table, chunk_updates=4, parallel_runs=3, progress=False)
    # 12 slots per run (both modes): 5 steps at a time holds a part of one run, so
    # the runs go one after another and each run's slots in batches.
    sweep._cached_program.cache_clear()
    monkeypatch.setattr(brax_envs, "safe_step_batch", lambda env_id: 5)
    grouped = kj.train(config, table, chunk_updates=4, parallel_runs=3, progress=False)
    # the bound was seen: 3 runs x 2 envs stepped at once in training is above it
    assert "6 envs stepped at once per CPU device" in caplog.text
    for name in ("eval_return", "eval_return_det"):
        np.testing.assert_array_equal(
            grouped.metrics[name], whole.metrics[name], err_msg=name
        )
    sweep._cached_program.cache_clear()


def test_a_crash_in_the_final_evaluation_costs_only_the_evaluation(
    probes, monkeypatch, tmp_path
):
    config = kj.Config(**TINY, final_eval_episodes=6)
    table = kj.grid(loss=["ppo_clip", "klip"], seeds=2)
    reference = kj.train(config, table, chunk_updates=2, progress=False)
    evaluate_into = sweep._evaluate_into

    def crash_at_the_end(columns, program, evaluations, runner, updates, column):
        if updates == program.config.num_updates:
            raise RuntimeError("the final evaluation died")
        return evaluate_into(columns, program, evaluations, runner, updates, column)

    monkeypatch.setattr(sweep, "_evaluate_into", crash_at_the_end)
    checkpointed = []  # the timing each checkpoint carries
    timing_so_far = training._timing_so_far
    monkeypatch.setattr(
        training,
        "_timing_so_far",
        lambda *args: checkpointed.append(timing_so_far(*args)) or checkpointed[-1],
    )
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="final evaluation died"):
        kj.train(
            config,
            table,
            out_dir=out,
            chunk_updates=2,
            progress=False,
            log="tensorboard",
        )
    monkeypatch.setattr(sweep, "_evaluate_into", evaluate_into)
    monkeypatch.setattr(training, "_timing_so_far", timing_so_far)
    # The checkpoint holds the trained sweep: the resume trains nothing more, and
    # compiles no chunk program.
    monkeypatch.setattr(sweep, "compile_to_fit", None)
    chunks_trained = []
    chunk_columns = sweep._chunk_columns
    monkeypatch.setattr(
        sweep,
        "_chunk_columns",
        lambda metrics: chunks_trained.append(1) or chunk_columns(metrics),
    )
    resumed = kj.train(
        config, table, out_dir=out, resume=True, progress=False, log="tensorboard"
    )
    assert resumed.complete and not chunks_trained
    assert resumed.params_sha256 == reference.params_sha256
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    assert np.isfinite(resumed.metrics["eval_return_det"][:, -1]).all()
    assert resumed.timing["resumes"] == 1
    # The training's speed and program size, measured before the crash, are kept.
    trained = checkpointed[-1]
    assert trained["env_steps_per_second"] > 0 and trained["program_bytes"] > 0
    assert resumed.timing["env_steps_per_second"] == trained["env_steps_per_second"]
    assert resumed.timing["memory_mb"]["program"] == trained["program_bytes"] / 2**20
    # The log has every update once, the last chunk's with its evaluation.
    logged = read_tensorboard(out / "tensorboard")
    frame = resumed.frame()
    for run, info in enumerate(tracking.run_infos(config, table, "sweep")):
        scalars = logged[info.path]
        assert scalars.pop("final_return") == [
            (config.env_steps, pytest.approx(resumed.final_returns()[run]))
        ]
        assert scalars == expected_scalars(frame, run)


def test_an_evaluation_steps_gymnax_envs_as_their_step_does_without_the_reset():
    cartpole, params = envs.make("CartPole-v1")[:2]

    class NoisyReward(type(cartpole)):  # a step that uses its key
        def step_env(self, key, state, action, params):
            obs, state, reward, terminated, info = super().step_env(
                key, state, action, params
            )
            return obs, state, reward + jax.random.uniform(key), terminated, info

    env = NoisyReward()
    step = evaluation.step_without_reset(env)
    key = jax.random.PRNGKey(3)
    with jax.disable_jit():  # op by op on both sides: the same arithmetic, bit for bit
        _, state = env.reset(key, params)
        for t in range(60):
            step_key = jax.random.fold_in(key, t)
            action = (t // 3) % 2  # pushes the pole over within a few dozen steps
            full = env.step(step_key, state, action, params)
            mine = step(step_key, state, action, params)
            # Reward, terminated and truncated agree on every step (the reward
            # draws on the step's key) ...
            for a, b in zip(full[2:5], mine[2:5]):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            if full[3] | full[4]:
                # ... and at the end gymnax's state is a fresh reset, this one the
                # state the episode ended in.
                assert float(full[1].time) == 0
                assert float(mine[1].time) == float(state.time) + 1
                break
            for a, b in zip(jax.tree.leaves(full[:2]), jax.tree.leaves(mine[:2])):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            state = full[1]
        else:
            raise AssertionError("the episode did not end")


def test_an_env_with_its_own_step_keeps_it_in_evaluations():
    env = envs.make("CartPole-v1").env

    class OwnStep(type(env)):
        def step(self, key, state, action, params=None):
            return super().step(key, state, action, params)

    own = OwnStep()
    assert evaluation.step_without_reset(own) == own.step
    assert evaluation.step_without_reset(env) != env.step
