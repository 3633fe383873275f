"""Config loading, grids and validation: every bad value gets a one-line message."""

import subprocess
import sys
from pathlib import Path

import pytest

from klipjax import config
from klipjax.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_default_is_the_papers_cartpole_grid():
    cfg = config.load(None)
    assert cfg.static.env == "CartPole-v1" and cfg.static.num_updates == 195
    assert [r["loss"] for r in cfg.runs[::5]] == [
        "ppo_clip",
        "klip",
        "kl_fixed",
        "kl_adaptive",
    ]
    assert [r["seed"] for r in cfg.runs[:5]] == [0, 1, 2, 3, 4]
    assert cfg.num_runs == 20 and cfg.swept == ()


def test_lists_become_grid_axes_in_the_order_given():
    cfg = config.load(None, ["clip_eps=[0.1,0.3]", "loss=[ppo_clip,klip]", "seeds=2"])
    assert cfg.num_runs == 8
    order = [(r["clip_eps"], r["loss"], r["seed"]) for r in cfg.runs]
    # the default config names loss first; the new key clip_eps nests inside it
    assert order[:4] == [
        (0.1, "ppo_clip", 0),
        (0.1, "ppo_clip", 1),
        (0.3, "ppo_clip", 0),
        (0.3, "ppo_clip", 1),
    ]
    assert cfg.swept == ("clip_eps",)
    assert config.hparams_of(cfg.runs[0]).loss_id == config.LOSSES.index("ppo_clip")


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 reads 1e-3 as a string; users write it anyway
    cfg = config.load(None, ["lr=1e-3", "total_steps=2e5"])
    assert cfg.runs[0]["lr"] == 1e-3 and cfg.static.total_steps == 200_000


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "env: Acrobot-v1\nloss: klip_sigmoid\nsoftness: [0.01, 0.1]\nseeds: [3, 7]\n"
    )
    cfg = config.load(path, ["gamma=0.9"])
    assert cfg.static.env == "Acrobot-v1"
    assert {r["seed"] for r in cfg.runs} == {3, 7}
    assert all(r["gamma"] == 0.9 for r in cfg.runs)
    resolved = config.resolved_dict(cfg)
    assert resolved["softness"] == [0.01, 0.1] and resolved["seeds"] == [3, 7]
    # the resolved dict loads back to the same runs
    assert config.resolve(resolved).runs == cfg.runs


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_config_loads(path):
    cfg = config.load(path)
    assert cfg.num_runs >= 1


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
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [ppo_clip\nlr: 3e-4\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(config.ConfigError, match="mapping"):
        config.load(listy)


def test_cli_reports_bad_input_with_exit_2_and_no_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--set", "loss=ppo", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "loss='ppo'" in err and "Traceback" not in err
    as_file = tmp_path / "file"
    as_file.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--set", "total_steps=2048", "--out", str(as_file)])
    assert exit_info.value.code == 2
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
    from klipjax.trainer import Metrics

    assert not set(Metrics._fields) & set(config.TRACED_DEFAULTS)
