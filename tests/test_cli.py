"""`klipjax train` end to end on a short CartPole sweep, and `klipjax plot`: the CLI
writes what the Python API returns."""

import json
import os

import jax
import numpy as np
import pandas as pd
import pytest

import klipjax as kj
from klipjax.cli import main
from klipjax.config import files

GRID = {"loss": ["ppo_clip", "klip"], "clip_eps": [0.1, 0.2], "seeds": 3}


@pytest.fixture(scope="module")
def python_results():
    # the library's front door, exactly as a notebook user writes it
    return kj.train(
        kj.Config(total_steps=8192),
        kj.grid(loss=["ppo_clip", "klip"], clip_eps=[0.1, 0.2], seeds=3),
        progress=False,
    )


def test_the_python_api_trains_a_grid(python_results):
    res = python_results
    assert res.num_runs == 12 and res.complete and res.varying == ("clip_eps",)
    frame = res.frame()
    assert len(frame) == 12 * 16 and set(frame["run"]) == set(range(12))
    assert {"run", "update", "loss", "seed", "clip_eps", "env_steps"} <= set(
        frame.columns
    )
    assert res.metrics["episode_return"].shape == (12, 16)
    # ppo_clip and klip runs with the same seed and radius are identical
    loss = np.asarray(frame.groupby("run")["loss"].first())
    assert list(loss) == ["ppo_clip"] * 6 + ["klip"] * 6
    for name, values in res.metrics.items():
        if name != "policy_loss":  # the loss values differ; their gradients do not
            np.testing.assert_array_equal(values[:6], values[6:], err_msg=name)
    assert res.params_sha256[:6] == res.params_sha256[6:]
    assert len(set(res.params_sha256[:6])) == 6  # seeds and radii do differ
    assert res.identity == {
        "pairs": 6,
        "max_param_difference": 0.0,
        "identical_params": True,
    }
    kernel = res.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert kernel.shape == (12, 4, 64)
    summary = res.summary()
    assert list(summary["setting"]) == [
        "ppo_clip clip_eps=0.1",
        "ppo_clip clip_eps=0.2",
        "klip clip_eps=0.1",
        "klip clip_eps=0.2",
    ]
    assert list(summary["n"]) == [3] * 4
    finals = res.final_returns()
    np.testing.assert_allclose(summary["mean"][0], finals[:3].mean())
    np.testing.assert_allclose(summary["std"][0], finals[:3].std())


def test_the_cli_writes_the_same_values(python_results, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--set", "total_steps=8192"]
    for key, value in GRID.items():
        text = f"[{','.join(map(str, value))}]" if isinstance(value, list) else value
        args += ["--set", f"{key}={text}"]
    assert main(args) == 0
    for name in [
        "config.yaml",
        "metrics.parquet",
        "summary.json",
        "curves.png",
        "diagnostics.png",
    ]:
        assert (out / name).stat().st_size > 0, name
    frame = pd.read_parquet(out / "metrics.parquet")
    pd.testing.assert_frame_equal(frame, python_results.frame())

    # config.yaml is enough to rerun: it loads to the same run table
    again = files.load(out / "config.yaml")
    assert again.config == kj.Config(total_steps=8192)
    assert all(
        np.array_equal(a, b) for a, b in zip(again.hparams, python_results.hparams)
    )

    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert [r["run"] for r in runs] == list(range(12))
    assert [r["params_sha256"] for r in runs] == list(python_results.params_sha256)
    assert all(r["status"] == "ok" for r in runs)
    assert runs[0]["hparams"]["clip_eps"] == 0.1 and runs[0]["seed"] == 0
    # the layout it ran on: the suite's one CPU device, all 12 runs at once
    assert summary["devices"] == 1 and summary["parallel_runs"] == 12
    assert summary["hardware"]["device_kind"] == "cpu"
    assert summary["hardware"]["jax"] == jax.__version__
    assert summary["hardware"]["host_cpu"].endswith(f", {os.cpu_count()} cores")
    # final_return is the paper's: mean over updates in the last 10% of env steps
    first = frame[frame["run"] == 0]
    tail = first[(first["env_steps"] > 0.9 * 8192) & (first["episodes"] > 0)]
    assert np.isclose(runs[0]["final_return"], tail["episode_return"].mean())
    assert summary["identity"] == python_results.identity
    assert [s["setting"] for s in summary["settings"]] == list(
        python_results.summary()["setting"]
    )
    printed = capsys.readouterr()
    assert printed.out == ""  # the library and the CLI print to stderr only
    assert (
        "final return" in printed.err
        and "largest parameter difference 0" in printed.err
    )

    # the directory reads back as the same results, parameters included
    loaded = kj.load(out)
    pd.testing.assert_frame_equal(loaded.frame(), python_results.frame())
    np.testing.assert_array_equal(
        loaded.final_returns(), python_results.final_returns()
    )
    for a, b in zip(
        jax_leaves(loaded.params), jax_leaves(python_results.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert loaded.status == python_results.status

    (out / "curves.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_save_writes_what_the_cli_writes(python_results, tmp_path):
    python_results.save(tmp_path / "saved")
    names = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert names == [
        "config.yaml",
        "curves.png",
        "diagnostics.png",
        "metrics.parquet",
        "summary.json",
    ]
    loaded = kj.load(tmp_path / "saved")
    assert loaded.params is None  # no checkpoint was written
    pd.testing.assert_frame_equal(loaded.summary(), python_results.summary())
