"""`klipjax train` end to end on a short CartPole sweep, and `klipjax plot`."""

import json

import numpy as np
import pandas as pd
import yaml

from klipjax import config
from klipjax.cli import main


def test_train_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--out",
            str(out),
            "--set",
            "total_steps=4096",
            "--set",
            "seeds=2",
            "--set",
            "loss=[ppo_clip,klip]",
            "--set",
            "clip_eps=[0.1,0.2]",
            "--set",
            "epochs=2",
        ]
    )
    assert code == 0
    for name in [
        "config.yaml",
        "metrics.parquet",
        "summary.json",
        "curves.png",
        "diagnostics.png",
    ]:
        assert (out / name).stat().st_size > 0, name

    # config.yaml is enough to rerun: it resolves to the same runs
    resolved = config.resolve(yaml.safe_load((out / "config.yaml").read_text()))
    assert resolved.num_runs == 8 and resolved.static.epochs == 2

    frame = pd.read_parquet(out / "metrics.parquet")
    assert len(frame) == 8 * 8  # 8 runs x 8 updates
    assert {
        "run",
        "update",
        "loss",
        "seed",
        "clip_eps",
        "episode_return",
        "kill_fraction",
        "beta_t_p90",
        "approx_kl",
        "explained_variance",
        "learning_rate",
    } <= set(frame.columns)
    assert sorted(frame["clip_eps"].unique().round(3)) == [0.1, 0.2]

    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert [r["run"] for r in runs] == list(range(8))
    assert {r["loss"] for r in runs} == {"ppo_clip", "klip"}
    assert all(len(r["params_sha256"]) == 64 and r["status"] == "ok" for r in runs)
    assert runs[0]["hparams"]["clip_eps"] == 0.1 and runs[0]["seed"] == 0
    # final_return is the paper's: mean over updates in the last 10% of env steps
    first = frame[frame["run"] == 0]
    tail = first[(first["env_steps"] > 0.9 * 8 * 512) & (first["episodes"] > 0)]
    assert np.isclose(runs[0]["final_return"], tail["episode_return"].mean())
    # identity: ppo_clip and klip runs with the same seed and clip_eps are identical
    assert summary["identity"] == {
        "pairs": 4,
        "max_param_difference": 0.0,
        "identical_params": True,
    }
    assert [s["setting"] for s in summary["settings"]] == [
        "ppo_clip clip_eps=0.1",
        "ppo_clip clip_eps=0.2",
        "klip clip_eps=0.1",
        "klip clip_eps=0.2",
    ]
    printed = capsys.readouterr().err
    assert "final return" in printed and "largest parameter difference 0" in printed

    (out / "curves.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
