"""Host-side results: tables, the final-return metric, atomic files and plots."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from klipjax import concat, hparams
from klipjax.outputs import files, plots, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_runs(settings=((0, 0.1), (1, 0.1), (0, 0.2)), loss="klip"):
    """Three runs: two seeds of klip at clip_eps 0.1, one seed at clip_eps 0.2."""
    return [hparams(loss=loss, seed=seed, clip_eps=eps) for seed, eps in settings]


def make_table(runs=None):
    return concat(*(runs or make_runs()))


def make_metrics():
    """3 runs x 4 updates of 100 env steps; run 0 ends no episode in update 1."""
    episode_return = np.arange(12, dtype=np.float32).reshape(3, 4)
    episodes = np.ones((3, 4))
    episode_return[0, 1] = np.nan
    episodes[0, 1] = 0
    return {
        "env_steps": np.tile(np.arange(1, 5) * 100.0, (3, 1)),
        "episode_return": episode_return,
        "episode_length": np.full((3, 4), 25.0),
        "episodes": episodes,
        "kill_fraction": np.linspace(0.0, 0.11, 12).reshape(3, 4),
    }


def test_final_return_hand_example():
    # total 1000 steps, an update every 25 steps: 25, 50, ..., 1000 (40 updates).
    # The tail is env_steps > 0.9 * 1000 = 900: updates at 925, 950, 975, 1000.
    #   900 -> 1000.0  (on the boundary, excluded)
    #   925 ->   10.0
    #   950 ->    NaN  (no episode ended, episodes 0)
    #   975 ->   50.0  but episodes 0 (skipped although finite)
    #  1000 ->   30.0
    # final = (10 + 30) / 2 = 20
    env_steps = np.arange(1, 41) * 25
    episode_return = np.full(40, -5.0)
    episodes = np.ones(40, dtype=np.int64)
    episode_return[35:] = [1000.0, 10.0, np.nan, 50.0, 30.0]
    episodes[35:] = [3, 2, 0, 0, 1]
    assert env_steps[35] == 900
    assert tables.final_return(env_steps, episode_return, episodes, 1000) == 20.0


def test_final_return_nan_without_tail_episodes():
    env_steps = np.array([500, 1000])
    assert math.isnan(tables.final_return(env_steps, [1.0, np.nan], [1, 0], 1000))


def test_final_returns_per_run():
    # tail is env_steps > 0.9 * 400 = 360: only the last update (400) of each run
    finals = tables.final_returns(make_metrics(), total_steps=400)
    np.testing.assert_array_equal(finals, [3.0, 7.0, 11.0])
    assert finals.dtype == np.float64


def test_metrics_frame_layout_and_values():
    frame = tables.metrics_frame(make_table(), make_metrics(), ["clip_eps"])
    assert frame.shape == (12, 10)
    assert list(frame.columns) == [
        "run", "update", "loss", "seed", "clip_eps",
        "env_steps", "episode_return", "episode_length", "episodes", "kill_fraction",
    ]  # fmt: skip
    assert frame["run"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert frame["update"].tolist() == [0, 1, 2, 3] * 3
    assert frame["seed"].tolist() == [0] * 4 + [1] * 4 + [0] * 4
    assert frame["clip_eps"].tolist() == [0.1] * 8 + [0.2] * 4
    assert set(frame["loss"]) == {"klip"}
    # run 2, update 1 is row 9 and holds episode_return[2, 1] = 9
    assert frame.loc[9, "episode_return"] == 9.0
    assert frame.loc[9, "env_steps"] == 200.0
    assert math.isnan(frame.loc[1, "episode_return"])


def test_metrics_frame_rejects_misaligned_runs():
    with pytest.raises(ValueError, match="runs"):
        tables.metrics_frame(make_table(make_runs()[:2]), make_metrics())


def test_setting_label():
    run = {"loss": "klip", "clip_eps": 0.2, "lr": 3e-4, "anneal_lr": True}
    assert tables.setting_label(run, []) == "klip"
    assert (
        tables.setting_label(run, ["clip_eps", "lr"]) == "klip clip_eps=0.2 lr=0.0003"
    )
    assert tables.setting_label(run, ["anneal_lr"]) == "klip anneal_lr=True"


def test_group_final_returns_mean_and_population_std():
    runs = make_runs() + make_runs(((1, 0.2), (2, 0.2)))
    runs += make_runs(((0, 0.2),), loss="ppo_clip")
    finals = [1.0, 3.0, 2.0, np.nan, 6.0, np.nan]
    groups = tables.group_final_returns(make_table(runs), ["clip_eps"], finals)
    assert [group["setting"] for group in groups] == [
        "klip clip_eps=0.1",
        "klip clip_eps=0.2",
        "ppo_clip clip_eps=0.2",
    ]
    first, second, third = groups
    # {1, 3}: mean 2, population std sqrt(((1-2)^2 + (3-2)^2) / 2) = 1
    assert (first["mean"], first["std"], first["seeds"]) == (2.0, 1.0, 2)
    assert first["clip_eps"] == 0.1 and first["loss"] == "klip"
    # {2, NaN, 6}: NaN skipped, mean 4, population std sqrt((4 + 4) / 2) = 2
    assert (second["mean"], second["std"], second["seeds"]) == (4.0, 2.0, 3)
    assert second["values"][0] == 2.0 and math.isnan(second["values"][1])
    assert math.isnan(third["mean"]) and math.isnan(third["std"])


def test_write_json_is_strict(tmp_path):
    path = tmp_path / "summary.json"
    payload = {
        "nan": float("nan"),
        "scalar": np.float32(1.5),
        "count": np.int64(3),
        "array": np.array([1.0, np.inf, -np.inf]),
        "nested": ({"flag": np.bool_(True)},),
    }
    files.write_json(path, payload)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "nan": None,
        "scalar": 1.5,
        "count": 3,
        "array": [1.0, None, None],
        "nested": [{"flag": True}],
    }


def test_failed_json_write_keeps_old_file(tmp_path):
    path = tmp_path / "summary.json"
    files.write_json(path, {"mean": 1.0})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        files.write_json(path, {"mean": 2.0, "bad": object()})
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_path_failure_midway_keeps_old_file(tmp_path):
    path = tmp_path / "metrics.parquet"
    files.write_atomic(path, b"old content")
    with pytest.raises(RuntimeError), files.atomic_path(path) as temp:
        temp.write_bytes(b"half a fi")
        raise RuntimeError("writer crashed")
    assert path.read_bytes() == b"old content"
    assert [entry.name for entry in tmp_path.iterdir()] == ["metrics.parquet"]


def test_yaml_and_parquet_round_trip(tmp_path):
    files.write_yaml(tmp_path / "config.yaml", {"loss": "klip", "lr": np.float64(1e-3)})
    assert (tmp_path / "config.yaml").read_text() == "loss: klip\nlr: 0.001\n"
    frame = tables.metrics_frame(make_table(), make_metrics(), ["clip_eps"])
    files.write_parquet(tmp_path / "metrics.parquet", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "metrics.parquet"), frame)


def test_bands_fill_missing_returns():
    frame = tables.metrics_frame(make_table(), make_metrics(), ["clip_eps"])
    frame.loc[frame["run"] == 2, "episode_return"] = [np.nan, np.nan, 5.0, np.nan]
    bands = plots.setting_bands(
        frame, x="env_steps", y="episode_return", swept=["clip_eps"]
    )
    first, second = bands
    assert (first.label, second.label) == ("klip clip_eps=0.1", "klip clip_eps=0.2")
    # run 0 is [0, NaN, 2, 3] -> filled [0, 0, 2, 3]; run 1 is [4, 5, 6, 7]
    np.testing.assert_allclose(first.mean, [2.0, 2.5, 4.0, 5.0])
    np.testing.assert_allclose(first.std, [2.0, 2.5, 2.0, 2.0])
    np.testing.assert_allclose(first.x, [100.0, 200.0, 300.0, 400.0])
    # run 2 back-fills its start and forward-fills its end: all 5
    np.testing.assert_allclose(second.mean, [5.0] * 4)


def test_plots_write_png(tmp_path):
    frame = tables.metrics_frame(make_table(), make_metrics(), ["clip_eps"])
    curves = plots.plot_curves(frame, tmp_path / "curves.png", swept=["clip_eps"])
    panels = plots.plot_metric_panels(
        frame, tmp_path / "panels.png", ["kill_fraction", "episode_length"]
    )
    for image in (curves, panels):
        data = image.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "curves.png",
        "panels.png",
    ]
