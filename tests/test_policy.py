"""A trained policy out of its sweep: exported to a directory, loaded anywhere,
acting exactly as it did in its run; evaluated and drawn from the command line;
and every bad input refused in one line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import klipjax as kj
from klipjax.cli import main
from klipjax.core.networks import Actor
from klipjax.engine import evaluation
from klipjax.envs import make
from klipjax.policy import FORMAT_VERSION, PARAMS_FILE, POLICY_FILE

CONFIG = kj.Config(total_steps=4096, final_eval_episodes=8)  # 8 updates


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Two CartPole runs, the second with observation normalisation on."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    kj.train(
        CONFIG,
        kj.grid(normalize_obs=[False, True], seeds=1),
        out_dir=out,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "policy"
    assert main(["export", str(run_dir), "--run", "1", "--out", str(out)]) == 0
    return out


def observations(count=64):
    return jax.random.normal(jax.random.PRNGKey(7), (count, 4)) * 2.0


def test_an_exported_policy_acts_as_in_its_run(run_dir, exported):
    results = kj.load(run_dir)
    in_run = results.policy(1)
    loaded = kj.load_policy(exported)
    assert bool(loaded.normalize_obs) and loaded.spec == in_run.spec
    obs = observations()
    # The logits are the rollout's: the actor on (obs - mean) / sqrt(var + 1e-8),
    # clipped to +-10, with the run's final statistics.
    stats = jax.tree.map(lambda x: x[1], results.obs_stats)
    actor = Actor(CONFIG.hidden_sizes, 2, False)
    expected = actor.apply(
        jax.tree.map(lambda x: x[1], results.params["actor"]), stats.normalize(obs)
    )
    np.testing.assert_array_equal(loaded.dist_params(obs), expected)
    np.testing.assert_array_equal(loaded.act(obs), in_run.act(obs))
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        sampled = loaded.act(obs, key, deterministic=False)
        np.testing.assert_array_equal(
            sampled, in_run.act(obs, key, deterministic=False)
        )
        jitted = jax.jit(loaded.act, static_argnames="deterministic")
        np.testing.assert_array_equal(jitted(obs, key, deterministic=False), sampled)
    # One observation or a batch of them.
    assert loaded.act(obs[3]).shape == ()
    assert int(loaded.act(obs[3])) == int(loaded.act(obs)[3])
    # The sweep's final evaluation of this run, replayed with the loaded policy.
    key = evaluation.eval_key(int(results.hparams.seed[1]), CONFIG.num_updates)
    returns, _ = evaluation.episode_returns(
        loaded, make("CartPole-v1"), key, 16, jnp.arange(16) >= 8
    )
    assert float(returns[8:].mean()) == results.final_evaluation()[1]
    assert float(returns[:8].mean()) == results.final_evaluation(False)[1]


def test_the_policy_directory_describes_itself(run_dir, exported):
    meta = json.loads((exported / POLICY_FILE).read_text())
    assert meta["format"] == "klipjax-policy"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["env"] == "CartPole-v1" and meta["obs_shape"] == [4]
    assert meta["action"] == {"type": "discrete", "n": 2}
    assert meta["network"]["hidden_sizes"] == [64, 64]
    source = meta["source"]
    assert source["run"] == 1 and source["hparams"]["normalize_obs"] is True
    summary = json.loads((run_dir / "summary.json").read_text())
    assert source["params_sha256"] == summary["runs"][1]["params_sha256"]
    with np.load(exported / PARAMS_FILE, allow_pickle=False) as arrays:
        names = set(arrays.files)
    assert {"obs_mean", "obs_var"} <= names
    assert "params/MLP_0/Dense_0/kernel" in names


def test_evaluate_and_render_from_the_command_line(run_dir, exported, tmp_path, capsys):
    assert main(["evaluate", str(exported), "--episodes", "5"]) == 0
    from_policy = capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--run", "1", "--episodes", "5"]) == 0
    assert capsys.readouterr().err == from_policy  # the same policy, same episodes
    assert "5 episodes, greedy actions: return" in from_policy
    gif = tmp_path / "episode.gif"
    assert main(["render", str(exported), "--out", str(gif), "--max-frames", "3"]) == 0
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 3
    assert "3 frames" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "{run}", "--run", "7", "--out", "{tmp}/p"], "run=7: no such run"),
        (
            ["export", "{run}", "--out", "{tmp}/p"],
            "holds 2 runs: choose one with --run",
        ),
        (["export", "{tmp}", "--run", "0", "--out", "{tmp}/p"], "neither a run"),
        (["evaluate", "{policy}", "--run", "1"], "policy directory"),
        (["render", "{policy}", "--out", "{tmp}/x.mp4"], "drawn to a .gif"),
    ],
)
def test_bad_input_is_one_line(run_dir, exported, tmp_path, capsys, args, message):
    names = {"run": run_dir, "tmp": tmp_path, "policy": exported}
    code = main([a.format(**names) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err.replace("\n", "") and err.count("\n") == 1


def test_a_policy_from_elsewhere_is_refused_cleanly(exported, tmp_path):
    with pytest.raises(kj.ConfigError, match="not a policy directory"):
        kj.load_policy(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    meta = json.loads((exported / POLICY_FILE).read_text())
    (other / POLICY_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(kj.ConfigError, match="format version 99"):
        kj.load_policy(other)
    (other / POLICY_FILE).write_text(json.dumps({**meta, "obs_shape": [5]}))
    (other / PARAMS_FILE).write_bytes((exported / PARAMS_FILE).read_bytes())
    with pytest.raises(kj.ConfigError, match="Dense_0/kernel is"):
        kj.load_policy(other)


def test_results_without_checkpoints_have_no_policy(tmp_path):
    results = kj.train(
        kj.Config(total_steps=512, final_eval_episodes=0), kj.hparams(), progress=False
    )
    results.policy(0)  # in memory: the parameters are there
    results.save(tmp_path / "saved")
    with pytest.raises(kj.ConfigError, match="no checkpoint"):
        kj.load(tmp_path / "saved").policy(0)


@pytest.mark.slow
def test_a_solved_cartpole_policy_is_greedy_perfect():
    """The paper's CartPole recipe trains a policy whose greedy evaluation over
    100 episodes reaches 475 (CartPole's solved threshold)."""
    results = kj.train(
        kj.Config(final_eval_episodes=100), kj.grid(seeds=4), progress=False
    )
    best = int(np.nanargmax(results.final_returns()))
    assert results.final_evaluation()[best] >= 475
    returns, _ = kj.evaluate(results.policy(best), 100, seed=123)
    assert returns.mean() >= 475


@pytest.mark.slow
def test_a_brax_episode_is_drawn_to_an_html_page(tmp_path):
    pytest.importorskip("brax")
    from klipjax.core.normalization import RunningStats
    from klipjax.policy import Policy, PolicySpec

    env_id = "brax/inverted_pendulum"
    spec = PolicySpec.of(env_id, make(env_id), (16,))
    params = spec.actor.init(jax.random.PRNGKey(0), jnp.zeros(spec.obs_size))
    policy = Policy(params, RunningStats.create((spec.obs_size,)), False, spec)
    drawn = policy.render(tmp_path / "episode.html", max_frames=10, progress=False)
    assert drawn["frames"] == min(10, drawn["length"]) and drawn["length"] >= 1
    page = (tmp_path / "episode.html").read_text()
    assert "brax-viewer" in page and "<html>" in page
    with pytest.raises(kj.ConfigError, match="drawn to a .html"):
        policy.render(tmp_path / "episode.gif")
