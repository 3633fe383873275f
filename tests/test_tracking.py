"""Experiment tracking: one TensorBoard or W&B run per klipjax run, whose scalars
read back (with TensorBoard's and wandb's own formats) equal ``metrics.parquet``;
W&B missing or failing costs a warning, never the run."""

import dataclasses
import logging
import math
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import klipjax as kj
from klipjax.cli import main
from klipjax.config import HParams
from klipjax.outputs import tracking
from tests.tensorboard_logs import expected_scalars, read_tensorboard

TINY = kj.Config(total_steps=2048, num_steps=64, epochs=2)  # 8 updates of 256 steps
TABLE = kj.grid(loss=["ppo_clip", "klip"], seeds=3)  # 6 runs


@pytest.fixture(scope="module")
def logged_sweep(tmp_path_factory):
    """A 6-run sweep trained with ``log="tensorboard"``: three chunks, so the log
    is written at three chunk boundaries."""
    out = tmp_path_factory.mktemp("tracking") / "sweep"
    results = kj.train(
        TINY, TABLE, out_dir=out, progress=False, chunk_updates=3, log="tensorboard"
    )
    return results, out


@pytest.fixture
def klipjax_messages():
    """Records of the ``klipjax`` logger (the CLI may stop it propagating)."""
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("klipjax")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(previous)


def test_a_live_tensorboard_log_reads_back_as_the_parquet(logged_sweep):
    results, out = logged_sweep
    runs = read_tensorboard(out / "tensorboard")
    assert sorted(runs) == [
        "klip/seed=0",
        "klip/seed=1",
        "klip/seed=2",
        "ppo_clip/seed=0",
        "ppo_clip/seed=1",
        "ppo_clip/seed=2",
    ]
    frame = pd.read_parquet(out / "metrics.parquet")
    finals = results.final_returns()
    for run in range(6):
        loss, seed = frame[frame["run"] == run][["loss", "seed"]].iloc[0]
        scalars = runs[f"{loss}/seed={seed}"]
        final = scalars.pop("final_return")
        assert final == [(TINY.env_steps, pytest.approx(finals[run]))]
        # float32 in both: the values are equal, not close
        assert scalars == expected_scalars(frame, run)
    assert len(runs["klip/seed=0"]["episode_return"]) > 0


def test_each_run_carries_its_hyperparameters(logged_sweep):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, out = logged_sweep
    reader = ea.EventAccumulator(str(out / "tensorboard" / "klip" / "seed=2"))
    reader.Reload()
    content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content)
    values = hparams.session_start_info.hparams
    assert values["loss"].string_value == "klip"
    assert values["seed"].number_value == 2
    assert values["clip_eps"].number_value == pytest.approx(0.2)
    assert values["env"].string_value == "CartPole-v1"
    assert values["setting"].string_value == "klip"
    assert values["sweep"].string_value == "sweep"


def test_klipjax_log_writes_what_the_live_log_wrote(logged_sweep, tmp_path):
    _, out = logged_sweep
    again = tmp_path / "tb"
    assert main(["log", str(out), "--to", "tensorboard", "--out", str(again)]) == 0
    assert read_tensorboard(again) == read_tensorboard(out / "tensorboard")


def test_a_resumed_log_replaces_what_the_interrupted_one_wrote(tmp_path):
    # An interrupted sweep logged 5 updates but checkpointed after 3; the resumed
    # one logs from update 3 again. TensorBoard must show one value per step.
    table = kj.grid(loss=["ppo_clip"], seeds=1)
    updates = TINY.num_updates
    steps = (np.arange(updates) + 1.0) * TINY.batch_size
    first = {"env_steps": steps[None, :5], "entropy": np.full((1, 5), -1.0)}
    resumed = {"env_steps": steps[None], "entropy": np.arange(updates)[None] * 1.0}
    destination = tracking.TensorBoard(dir=tmp_path)
    interrupted = tracking.SweepLog([destination], TINY, table)
    interrupted.write(first)
    interrupted.close()
    later = tracking.SweepLog([destination], TINY, table, start_update=3)
    later.write(resumed)
    later.close()
    entropy = read_tensorboard(tmp_path)["ppo_clip/seed=0"]["entropy"]
    assert entropy == [(256, -1.0), (512, -1.0), (768, -1.0)] + [
        (int(steps[u]), float(u)) for u in range(3, updates)
    ]


def test_run_names_groups_and_directories():
    table = kj.concat(
        kj.grid(loss=["klip"], clip_eps=[0.1, 0.3]), kj.hparams(loss="klip")
    )
    infos = tracking.run_infos(TINY, table, "my-sweep")
    assert [info.name for info in infos] == [
        "klip clip_eps=0.1 seed=0",
        "klip clip_eps=0.3 seed=0",
        "klip clip_eps=0.2 seed=0",
    ]
    assert infos[1].group == "klip clip_eps=0.3"
    assert infos[1].path == "klip,clip_eps=0.3/seed=0"
    assert infos[1].config["total_steps"] == 2048 and infos[1].config["run"] == 1
    twice = kj.concat(kj.hparams(), kj.hparams())  # one setting and seed, two runs
    assert [i.path for i in tracking.run_infos(TINY, twice, "s")] == [
        "ppo_clip/seed=0-run0",
        "ppo_clip/seed=0-run1",
    ]


def test_bad_log_arguments_are_config_errors():
    with pytest.raises(kj.ConfigError, match="choose from 'tensorboard', 'wandb'"):
        tracking.destinations("mlflow")
    with pytest.raises(kj.ConfigError, match="TensorBoard given twice"):
        tracking.destinations(["tensorboard", tracking.TensorBoard(dir="x")])
    assert tracking.destinations(None) == ()
    assert tracking.destinations(["wandb"]) == (tracking.WandB(),)


def read_wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB
    log records (checksum, length, type) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)


def test_a_wandb_offline_log_of_two_runs(logged_sweep, tmp_path, wandb_offline):
    results, _ = logged_sweep
    # the first two runs (ppo_clip, seeds 0 and 1) as a sweep of their own
    two = dataclasses.replace(
        results,
        hparams=HParams(*(np.asarray(column)[:2] for column in results.hparams)),
        metrics={name: values[:2] for name, values in results.metrics.items()},
        params=None,
        status=results.status[:2],
        diverged_at=results.diverged_at[:2],
        params_sha256=results.params_sha256[:2],
        obs_stats=None,
    )
    run_dir = two.save(tmp_path / "two")
    assert main(["log", str(run_dir), "--to", "wandb"]) == 0
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    frame = pd.read_parquet(run_dir / "metrics.parquet")
    for path in offline:
        records = list(read_wandb_records(next(path.glob("*.wandb"))))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {item.key: item.value_json for item in run.config.update}
        seed = int(config["seed"])
        assert run.display_name == f"ppo_clip seed={seed}"
        assert run.run_group == "CartPole-v1 ppo_clip"
        assert run.project == "klipjax" and config["loss"] == '"ppo_clip"'
        history = {}
        for record in records:
            if record.WhichOneof("record_type") == "history":
                row = {
                    i.nested_key[0]: float(i.value_json) for i in record.history.item
                }
                history[record.history.step.num] = row
        rows = frame[frame["run"] == seed]
        assert sorted(history) == rows["env_steps"].astype(int).tolist()
        for step, value in zip(rows["env_steps"], rows["entropy"]):
            assert history[int(step)]["entropy"] == value
        returns = [h.get("episode_return") for h in history.values()]
        expected = rows["episode_return"].tolist()
        assert [r for r in returns if r is not None] == [
            v for v in expected if not math.isnan(v)
        ]


def test_a_run_without_wandb_finishes_with_one_warning(monkeypatch, klipjax_messages):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails
    results = kj.train(TINY, TABLE, progress=False, chunk_updates=3, log="wandb")
    assert results.complete
    warnings = [r for r in klipjax_messages if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "wandb is not installed" in warnings[0].getMessage()
    assert "training goes on" in warnings[0].getMessage()


def test_a_wandb_that_cannot_start_a_run_only_warns(monkeypatch, klipjax_messages):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        raise TimeoutError("no answer from api.wandb.ai in 20 s")

    fake = types.SimpleNamespace(init=init, Settings=lambda **kwargs: kwargs)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sweep_log = tracking.SweepLog([tracking.WandB()], TINY, TABLE)
    metrics = {"env_steps": np.full((6, 2), 256.0), "entropy": np.ones((6, 2))}
    sweep_log.write(metrics)
    sweep_log.close()
    assert len(calls) == 1  # given up on after the first run, not tried six times
    assert calls[0]["settings"]["init_timeout"] == 20.0
    (warning,) = [
        r.getMessage() for r in klipjax_messages if r.levelno >= logging.WARNING
    ]
    assert "TimeoutError: no answer from api.wandb.ai" in warning
    assert sweep_log.failures


def test_train_and_reproduce_take_log(logged_sweep, tmp_path, wandb_offline):
    from klipjax.cli import build_parser

    results, _ = logged_sweep
    out = tmp_path / "cli"
    args = ["train", "--out", str(out), "--log", "tensorboard", "--log", "wandb"]
    for setting in (
        "total_steps=2048",
        "num_steps=64",
        "epochs=2",
        "loss=[ppo_clip,klip]",
        "seeds=3",
        "chunk_updates=3",
    ):
        args += ["--set", setting]
    assert main(args) == 0
    assert len(read_tensorboard(out / "tensorboard")) == 6
    assert len(list((out / "wandb").glob("offline-run-*"))) == 6  # live, all open
    frame = pd.read_parquet(out / "metrics.parquet")
    pd.testing.assert_frame_equal(frame, results.frame())
    parsed = build_parser().parse_args(["reproduce", "cartpole", "--log", "wandb"])
    assert parsed.log == ["wandb"]


class FakeWandbRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.rows, self.summary, self.finished = [], {}, False
        self.settings = types.SimpleNamespace(mode="offline")
        self.dir = "/nowhere/wandb/offline-run-x/files"

    def log(self, row, step):
        self.rows.append((step, row))

    def finish(self):
        self.finished = True


def test_a_resumed_sweep_continues_its_wandb_runs(monkeypatch, tmp_path):
    started = []

    def init(**kwargs):
        started.append(FakeWandbRun(**kwargs))
        return started[-1]

    fake = types.SimpleNamespace(init=init, Settings=lambda **kwargs: kwargs)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    table = kj.grid(loss=["klip"], seeds=2)
    steps = (np.arange(8.0) + 1) * TINY.batch_size
    entropy = np.array([[np.nan, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7.0]])
    metrics = {"env_steps": np.stack([steps, steps]), "entropy": entropy}

    first = tracking.SweepLog([tracking.WandB()], TINY, table, out_dir=tmp_path)
    first.write({name: values[:, :3] for name, values in metrics.items()})
    first.close()
    resumed = tracking.SweepLog(
        [tracking.WandB()], TINY, table, out_dir=tmp_path, start_update=3
    )
    resumed.write(metrics)
    resumed.close()

    before, after = started[:2], started[2:]
    assert [run.init["id"] for run in before] == [run.init["id"] for run in after]
    assert before[0].init["id"] != before[1].init["id"]
    assert before[0].init["dir"] == str(tmp_path)
    assert before[0].init["config"]["sweep"] == tmp_path.name
    assert before[0].rows == [(512, {"entropy": 1.0}), (768, {"entropy": 2.0})]
    assert [step for step, _ in after[1].rows] == [1024, 1280, 1536, 1792, 2048]
    assert all(run.finished for run in started)
