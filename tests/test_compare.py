"""`klipjax compare`: settings found across run directories, their IQM, intervals
and probability of improvement, as a table, Markdown, JSON and figures."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import klipjax as kj
from klipjax import stats
from klipjax.cli import main
from klipjax.config import files, run_table
from klipjax.outputs import compare
from klipjax.outputs.files import write_json, write_yaml

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def run_dir(path, config, table, scores, salt=""):
    """A run directory as ``klipjax train`` leaves it, reduced to what compare
    reads: ``config.yaml`` and the per-run records of ``summary.json``."""
    write_yaml(path / "config.yaml", files.to_dict(config, table))
    runs = []
    for run, score in enumerate(scores):
        values = run_table.run_values(table, run)
        loss, seed = values.pop("loss"), values.pop("seed")
        digest = hashlib.sha256(f"{config.env}{loss}{values}{seed}{salt}".encode())
        runs.append(
            {
                "run": run,
                "loss": loss,
                "seed": seed,
                "hparams": values,
                "final_return": score,
                "params_sha256": digest.hexdigest(),
                "status": "ok",
            }
        )
    write_json(path / "summary.json", {"env": config.env, "runs": runs})
    return path


SCORES = {
    "ppo_clip": [500.0, 480.0, 300.0, 499.0, 450.0],
    "klip": [500.0, 480.0, 300.0, 499.0, 450.0],
    "kl_adaptive": [200.0, 480.0, 100.0, 350.0, 420.0],
}


@pytest.fixture
def cartpole(tmp_path):
    table = kj.grid(loss=list(SCORES), seeds=5)
    finals = [score for scores in SCORES.values() for score in scores]
    return run_dir(tmp_path / "cartpole", kj.Config(), table, finals)


def test_a_setting_row_holds_iqm_ci_mean_n_and_improvement(cartpole):
    comparison = compare.compare([cartpole], resamples=2000)
    assert comparison.tasks == ["CartPole-v1"] and comparison.ranges is None
    assert comparison.baseline == "ppo_clip"  # the first setting by default
    rows = {row.setting: row for row in comparison.rows}
    assert list(rows) == ["ppo_clip", "klip", "kl_adaptive"]
    adaptive = rows["kl_adaptive"]
    scores = SCORES["kl_adaptive"]
    assert adaptive.iqm == stats.interval_estimate(scores, resamples=2000)
    assert adaptive.mean.value == np.mean(scores) and adaptive.n == 5
    # kl_adaptive vs ppo_clip (500, 480, 300, 499, 450), 25 pairs: 200 and 100
    # beat none; 480 beats 300 and 450 and ties 480 (2.5); 350 and 420 beat 300
    # (1 each): 4.5 / 25
    assert adaptive.improvement.value == 4.5 / 25
    assert rows["ppo_clip"].improvement is None
    assert rows["klip"].improvement.value == 0.5  # the same scores


def test_the_table_markdown_json_and_figures(cartpole, tmp_path):
    comparison = compare.compare([cartpole], baseline="klip", resamples=500)
    header, rows = compare.table_rows(comparison)
    assert header == ["setting", "IQM", "95% CI", "mean", "n", "P(> klip)"]
    assert rows[1][0] == "klip" and rows[1][-1] == "baseline"
    assert rows[0][3] == "445.8" and rows[0][4] == "5"  # ppo_clip's mean
    out = tmp_path / "out"
    written = compare.write(comparison, out)
    assert [p.name for p in written] == [
        "compare.md",
        "compare.json",
        "intervals.png",
        "profiles.png",
    ]
    text = (out / "compare.md").read_text()
    assert "| setting | IQM | 95% CI | mean | n | P(> klip) |" in text
    assert "| klip | " in text and "![intervals](intervals.png)" in text
    data = json.loads((out / "compare.json").read_text())
    assert data["baseline"] == "klip"
    assert data["settings"][0]["scores"] == [SCORES["ppo_clip"]]
    for name in ("intervals.png", "profiles.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_a_score_are_counted_apart(tmp_path):
    table = kj.grid(loss=["ppo_clip", "klip"], seeds=3)
    path = run_dir(tmp_path / "r", kj.Config(), table, [1, 2, 3, 4, None, 6])
    row = compare.compare([path], resamples=100).rows[1]
    assert (row.n, row.missing, row.mean.value) == (2, 1, 5.0)
    assert "(+1 without)" in compare.table_rows(compare.compare([path]))[1][1][4]


def test_directories_of_one_task_merge_and_shared_runs_count_once(cartpole, tmp_path):
    # a second sweep of ppo_clip over clip_eps; at 0.2 it reruns the first
    # directory's ppo_clip runs (same final parameters)
    table = kj.grid(loss=["ppo_clip"], clip_eps=[0.1, 0.2], seeds=5)
    finals = [100.0] * 5 + SCORES["ppo_clip"]
    radius = run_dir(tmp_path / "radius", kj.Config(), table, finals)
    comparison = compare.compare([cartpole, radius, radius], resamples=100)
    labels = [row.setting for row in comparison.rows]
    assert labels == [
        "ppo_clip clip_eps=0.2",
        "klip clip_eps=0.2",
        "kl_adaptive clip_eps=0.2",
        "ppo_clip clip_eps=0.1",
    ]
    assert comparison.rows[0].n == 5  # found three times, counted once
    assert "15 runs found twice were counted once" in comparison.notes


def test_several_tasks_pool_normalised_scores(cartpole, tmp_path):
    table = kj.grid(loss=["ppo_clip", "klip"], seeds=4)
    acrobot = run_dir(
        tmp_path / "acrobot",
        kj.Config(env="Acrobot-v1"),
        table,
        [-100.0, -80.0, -90.0, -300.0, -100.0, -80.0, -90.0, -300.0],
    )
    ranges = {"CartPole-v1": (0.0, 500.0), "Acrobot-v1": (-500.0, 0.0)}
    comparison = compare.compare([cartpole, acrobot], ranges=ranges, resamples=200)
    assert comparison.tasks == ["CartPole-v1", "Acrobot-v1"]
    assert [row.setting for row in comparison.rows] == ["ppo_clip", "klip"]
    assert "not on every task, left out: kl_adaptive" in comparison.notes
    ppo = comparison.rows[0]
    cart = np.array(SCORES["ppo_clip"]) / 500
    acro = (np.array([-100.0, -80.0, -90.0, -300.0]) + 500) / 500
    assert ppo.iqm.value == pytest.approx(stats.iqm(np.concatenate([cart, acro])))
    assert ppo.n == 9 and comparison.rows[1].improvement.value == 0.5
    # without ranges each task is scaled by its own runs' min and max
    scaled = compare.compare([cartpole, acrobot], resamples=50)
    assert scaled.ranges == {
        "CartPole-v1": (300.0, 500.0),
        "Acrobot-v1": (-300.0, -80.0),
    }
    with pytest.raises(kj.ConfigError, match="no such task"):
        compare.compare([cartpole], ranges={"Pendulum-v1": (0, 1)})


def test_bad_input_is_a_one_line_error(cartpole, tmp_path, capsys):
    with pytest.raises(kj.ConfigError, match="did you mean klip"):
        compare.compare([cartpole], baseline="klp")
    with pytest.raises(kj.ConfigError, match="no 'final_eval_return_det' per run"):
        compare.compare([cartpole], score="final_eval_return_det")
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    assert main(["compare", str(cartpole), "--range", "CartPole-v1=0-500"]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory (no config.yaml)" in err
    assert "expected ENV=LOW:HIGH" in err
    assert "Traceback" not in err


def test_the_cli_on_the_committed_cartpole_results(tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", str(RESULTS / "cartpole"), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out == ""  # tables go to stderr, as every command's
    assert "ppo_clip" in printed.err and "kl_adaptive" in printed.err
    summary = json.loads((RESULTS / "cartpole" / "summary.json").read_text())
    fixed = [r["final_return"] for r in summary["runs"] if r["loss"] == "kl_fixed"]
    data = json.loads((out / "compare.json").read_text())
    row = next(s for s in data["settings"] if s["setting"] == "kl_fixed")
    assert row["iqm"]["value"] == pytest.approx(stats.iqm(fixed))
    assert row["n"] == 5 and row["improvement_over_baseline"]["value"] < 0.5
    assert (out / "compare.md").read_text().count("| kl_fixed |") == 1
