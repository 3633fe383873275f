"""The brax extra is optional: its ids, presets and reproduce groups are known without
it, and building a Brax env without it is a one-line error naming the extra."""

from pathlib import Path

import pytest

from klipjax import ConfigError, envs
from klipjax.cli import main
from klipjax.config import files
from klipjax.envs import brax_adapter as brax_envs
from klipjax.outputs import report as reproduce

ANT = Path(__file__).resolve().parents[1] / "klipjax" / "presets" / "brax_ant.yaml"


def test_brax_ids_validate_and_parse_without_brax():
    known = envs.registered_ids()
    for task in ("ant", "humanoid", "halfcheetah", "hopper", "walker2d"):
        assert f"brax/{task}" in known and f"brax/{task}@generalized" in known
    assert files.load(None, ["env=brax/ant@mjx"]).config.env == "brax/ant@mjx"
    with pytest.raises(ConfigError, match="did you mean brax/ant"):
        files.load(None, ["env=brax/antt"])
    assert brax_envs.parse_id("brax/ant") == ("ant", brax_envs.DEFAULT_BACKEND)
    assert brax_envs.parse_id("brax/hopper@spring") == ("hopper", "spring")


def test_missing_brax_is_a_clean_error(monkeypatch, capsys, tmp_path):
    def no_brax():
        raise ImportError("No module named 'brax'")

    monkeypatch.setattr(brax_envs, "brax_registry", no_brax)
    with pytest.raises(envs.EnvError, match=r"pip install -e '\.\[brax\]'"):
        envs.make("brax/ant")
    assert main(["train", str(ANT), "--out", str(tmp_path / "run")]) == 2
    assert "needs brax" in capsys.readouterr().err


def test_brax_groups_run_only_when_asked():
    assert not set(reproduce.BRAX_GROUPS) & set(reproduce.expand_groups([]))
    assert reproduce.expand_groups(["brax", "brax_ant", "cartpole"]) == [
        *reproduce.BRAX_GROUPS,
        "cartpole",
    ]
    for name in reproduce.BRAX_GROUPS:
        quick = reproduce.group_experiment(name, quick=True)
        assert quick.config.num_updates == reproduce.QUICK_MIN_UPDATES
        task = reproduce.paper_task(quick.config.env)
        assert task in reproduce.PAPER_FINAL_RETURNS, task
    full = reproduce.group_experiment("brax_humanoid", quick=False)
    assert len(full.hparams.seed) == 20 and full.config.total_steps == 10_000_000
    assert reproduce.PAPER_FINAL_RETURNS["brax/ant"]["kl_fixed"] == (16, 16)
