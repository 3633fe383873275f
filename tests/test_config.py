"""Config files, ``--set`` and the run-table builders: every bad value gets a
one-line ``ConfigError``, in Python and on the command line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import klipjax as kj
from klipjax.cli import main
from klipjax.config import files, run_table
from klipjax.core.variants import LOSSES

ROOT = Path(__file__).resolve().parents[1]


def runs_of(table, *keys):
    return list(zip(*(run_table.column(table, key) for key in keys)))


def test_default_is_the_papers_cartpole_grid():
    exp = files.load(None)
    assert exp.config == kj.Config() and exp.config.num_updates == 195
    assert run_table.column(exp.hparams, "loss")[::5] == [
        "ppo_clip",
        "klip",
        "kl_fixed",
        "kl_adaptive",
    ]
    assert run_table.column(exp.hparams, "seed")[:5] == [0, 1, 2, 3, 4]
    assert len(exp.hparams.seed) == 20 and run_table.varying(exp.hparams) == ()


def test_lists_become_grid_axes_in_the_order_given():
    exp = files.load(None, ["clip_eps=[0.1,0.3]", "loss=[ppo_clip,klip]", "seeds=2"])
    assert len(exp.hparams.seed) == 8
    # the default config names loss first; the new key clip_eps nests inside it
    assert runs_of(exp.hparams, "clip_eps", "loss", "seed")[:4] == [
        (0.1, "ppo_clip", 0),
        (0.1, "ppo_clip", 1),
        (0.3, "ppo_clip", 0),
        (0.3, "ppo_clip", 1),
    ]
    assert run_table.varying(exp.hparams) == ("clip_eps",)
    assert exp.hparams.loss_id[0] == LOSSES.index("ppo_clip")


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 reads 1e-3 as a string; users write it anyway
    exp = files.load(None, ["lr=1e-3", "total_steps=2e5"])
    assert run_table.column(exp.hparams, "lr")[0] == 1e-3
    assert exp.config.total_steps == 200_000


def test_yaml_file_and_overrides_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "env: Acrobot-v1\nloss: klip_sigmoid\nsoftness: [0.01, 0.1]\nseeds: [3, 7]\n"
    )
    exp = files.load(path, ["gamma=0.9"])
    assert exp.config.env == "Acrobot-v1"
    assert set(run_table.column(exp.hparams, "seed")) == {3, 7}
    assert set(run_table.column(exp.hparams, "gamma")) == {0.9}
    resolved = files.to_dict(exp.config, exp.hparams)
    assert resolved["softness"] == [0.01, 0.1] and resolved["seeds"] == [3, 7]
    again = files.from_dict(resolved)  # the written form loads back to the same runs
    assert again.config == exp.config
    assert all(np.array_equal(a, b) for a, b in zip(again.hparams, exp.hparams))


def test_a_table_that_is_no_grid_is_written_run_by_run():
    table = kj.sample(
        3,
        seed=1,
        seeds=[0, 5],
        lr=kj.loguniform(1e-4, 1e-2),
        loss=kj.choice(["klip", "ppo_clip", "kl_fixed"]),
    )
    written = files.to_dict(kj.Config(), kj.concat(table, kj.hparams(seed=9)))
    assert len(written["runs"]) == 7 and "lr" not in written
    again = files.from_dict(written).hparams
    assert all(
        np.array_equal(a, b)
        for a, b in zip(again, kj.concat(table, kj.hparams(seed=9)))
    )


PRESETS = sorted((ROOT / "klipjax" / "presets").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS + EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    exp = files.load(path)
    assert len(exp.hparams.seed) >= 1


BAD = [
    (["env=CartPole-v2"], "env='CartPole-v2'.*did you mean CartPole-v1"),
    (["loss=ppo_clipp"], "unknown loss.*ppo_clip"),
    (["clip_epsilon=0.2"], "unknown config key 'clip_epsilon'.*clip_eps"),
    (["lr=fast"], "lr='fast': expected a number"),
    (["foo=1"], "unknown config key 'foo' \\(known keys: env, "),
    (["--out=x"], "unknown config key '--out'"),
    (["lr=0"], r"lr=0.0: expected a value in \(0"),
    (["clip_eps=0"], "clip_eps"),
    (["clip_eps=1.0"], "clip_eps"),
    (["loss=klip_sigmoid", "softness=0"], "softness"),
    (["gamma=1.5"], "gamma"),
    (["gae_lambda=-0.1"], "gae_lambda"),
    (["seeds=0"], "seeds=0"),
    (["seeds=[1,1]"], "distinct"),
    (["num_envs=0"], "num_envs=0"),
    (["minibatch_size=100"], "minibatch_size=100: must divide"),
    (["total_steps=100"], "total_steps=100: smaller than one rollout"),
    (["env=[CartPole-v1,Acrobot-v1]"], "cannot be a grid axis"),
    (["anneal_lr=maybe"], "anneal_lr='maybe': expected true or false"),
    (["kl_estimator=exact"], "kl_estimator='exact'"),
    (["loss=[klip,klip]"], "distinct"),
    (["lr"], "expected key=value"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_values_raise_a_config_error_naming_the_key(overrides, message):
    with pytest.raises(kj.ConfigError, match=message):
        files.load(None, overrides)


PYTHON_BAD = [
    (
        lambda: kj.grid(clip_epsilon=[0.1]),
        "unknown hyperparameter 'clip_epsilon'.*clip_eps",
    ),
    (lambda: kj.grid(loss=["ppo_clip", "kl"]), "unknown loss"),
    (lambda: kj.grid(lr=[]), "at least one value"),
    (lambda: kj.grid(seeds=0), "seeds=0"),
    (lambda: kj.hparams(loss="ppo"), "loss='ppo'"),
    (lambda: kj.hparams(gamma=2.0), "gamma=2.0"),
    (lambda: kj.hparams(seed=-1), "seed=-1"),
    (lambda: kj.hparams(loss="soft_min", softness=0), "softness=0.0"),
    (lambda: kj.sample(0, lr=kj.uniform(1e-4, 1e-3)), "n=0"),
    (lambda: kj.sample(4, clip_eps=kj.uniform(0.1, 2.0)), "clip_eps=2.0"),
    (lambda: kj.sample(4, lr=kj.loguniform(0.0, 1e-3)), "low > 0|lr=0.0"),
    (lambda: kj.sample(4, loss=kj.uniform(0, 1)), "choice"),
    (lambda: kj.uniform(1.0, 0.5), "low < high"),
    (lambda: kj.choice([]), "non-empty"),
    (lambda: kj.Config(num_envs=0), "num_envs=0"),
    (lambda: kj.Config(env="CartPol-v1"), "did you mean CartPole-v1"),
    (lambda: kj.Config(minibatch_size=100), "must divide"),
    (lambda: kj.train(kj.Config(), {"lr": 1}), "expected klipjax.HParams"),
    (lambda: kj.train(kj.Config(), kj.HParams(loss_id=99)), "loss_id=99"),
    (
        lambda: kj.train(kj.Config(), kj.hparams(), checkpoint_every=5),
        "need an out_dir",
    ),
    (lambda: kj.train("CartPole-v1", kj.hparams()), "expected klipjax.Config"),
    (lambda: kj.load("/nonexistent"), "not a results directory"),
]


@pytest.mark.parametrize(
    "call, message", PYTHON_BAD, ids=[b[1][:30] for b in PYTHON_BAD]
)
def test_python_entry_points_raise_config_errors(call, message):
    with pytest.raises(kj.ConfigError, match=message):
        call()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(kj.ConfigError, match="does not exist"):
        files.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [ppo_clip\nlr: 3e-4\n")
    with pytest.raises(kj.ConfigError, match="not valid YAML"):
        files.load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(kj.ConfigError, match="mapping"):
        files.load(listy)


def test_cli_reports_bad_input_with_exit_2_and_no_traceback(tmp_path, capsys):
    assert main(["train", "--set", "loss=ppo", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "loss='ppo'" in err and "Traceback" not in err
    as_file = tmp_path / "file"
    as_file.write_text("x")
    assert main(["train", "--set", "total_steps=2048", "--out", str(as_file)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_error_in_a_fresh_process_is_one_clean_line():
    done = subprocess.run(
        [sys.executable, "-m", "klipjax", "train", "--set", "gamma=2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "gamma=2" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_no_metric_is_named_like_a_sweepable_key():
    # metrics.parquet holds the swept values and the metrics as columns side by side
    from klipjax.config.settings import TRACED_KEYS

    assert not set(kj.Metrics._fields) & set(TRACED_KEYS)
