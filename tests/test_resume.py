"""Nothing lost: SIGKILL + resume and SIGTERM + resume end bit-identical to an
uninterrupted run; two invocations of one config agree bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--set",
    "total_steps=16384",
    "--set",
    "epochs=2",
    "--set",
    "seeds=2",
    "--set",
    "loss=[ppo_clip,kl_adaptive]",
    "--set",
    "num_steps=64",
]
# 16384 / (4*64) = 64 updates; checkpoints every 4 updates.
EVERY = ["--checkpoint-every", "16"]


CACHE = {}  # the module's compilation cache: each run after the first loads from it


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    CACHE["dir"] = str(tmp_path_factory.mktemp("xla-cache"))
    yield
    CACHE.clear()


def klipjax(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "klipjax", "train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KLIPJAX_CACHE_DIR": CACHE.get("dir", "")},
        **kwargs,
    )


def finish(process, timeout=300):
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def outcome(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    frame = pd.read_parquet(run_dir / "metrics.parquet")
    return summary, frame


def wait_for_checkpoint(run_dir, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [p for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
        if steps:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    code, err = finish(klipjax(*ARGS, *EVERY, "--out", str(run_dir)))
    assert code == 0, err
    return outcome(run_dir)


def assert_same_run(result, reference):
    summary, frame = result
    ref_summary, ref_frame = reference
    assert summary["complete"] and summary["updates_done"] == 64
    assert [r["params_sha256"] for r in summary["runs"]] == [
        r["params_sha256"] for r in ref_summary["runs"]
    ]
    pd.testing.assert_frame_equal(frame, ref_frame)


@pytest.mark.slow  # the suite resumes after SIGTERM and SIGINT (test_api)
def test_sigkill_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "killed"
    process = klipjax(*ARGS, *EVERY, "--out", str(run_dir))
    wait_for_checkpoint(run_dir, process)
    time.sleep(0.3)  # somewhere between checkpoints, maybe mid-save
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "summary.json").exists()
    code, err = finish(klipjax("--resume", str(run_dir)))
    assert code == 0, err
    assert "resuming at update" in err
    assert_same_run(outcome(run_dir), reference)


def test_sigterm_checkpoints_writes_partial_results_and_resumes(tmp_path, reference):
    run_dir = tmp_path / "terminated"
    process = klipjax(*ARGS, *EVERY, "--out", str(run_dir))
    wait_for_checkpoint(run_dir, process)  # training is under way
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 143, err
    assert "resume with: klipjax train --resume" in err and "Traceback" not in err
    summary, frame = outcome(run_dir)
    assert summary["complete"] is False and 0 < summary["updates_done"] < 64
    assert {r["status"] for r in summary["runs"]} == {"stopped"}
    assert len(frame) == 4 * summary["updates_done"]
    assert summary["resumes"] == 0
    # The checkpoint carries the time spent so far; make it a day, as a long run's
    # first process would have spent, to see it added up.
    checkpoints = run_dir / "checkpoints"
    latest = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    (carried,) = [
        p
        for p in (checkpoints / str(latest) / "timing").iterdir()
        if p.name != "commit_success.txt"
    ]
    spent = json.loads(carried.read_text())
    assert (
        0 < spent["compile_seconds"] <= spent["wall_seconds"] <= summary["wall_seconds"]
    )
    carried.write_text(json.dumps({**spent, "wall_seconds": 86400.0}))
    started = time.perf_counter()
    code, err = finish(klipjax("--resume", str(run_dir)))
    second = time.perf_counter() - started
    assert code == 0, err
    resumed = outcome(run_dir)
    assert_same_run(resumed, reference)
    total = resumed[0]
    assert total["resumes"] == 1 and "summed over 2 processes" in err
    assert 86400 < total["wall_seconds"] < 86400 + second
    assert total["compile_seconds"] > spent["compile_seconds"]
    # The restored runner has the types of a fresh one: the chunk and evaluation
    # programs the reference compiled load from the cache (the init program holds
    # a host callback and is never cached).
    assert resumed[0]["compile_cache_hits"] >= 2


@pytest.mark.slow  # the SIGTERM case resumes in a second process, bit-identical
def test_two_invocations_are_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "again"
    code, err = finish(klipjax(*ARGS, "--out", str(run_dir)))
    assert code == 0, err
    assert_same_run(outcome(run_dir), reference)


def test_resume_errors(tmp_path):
    code, err = finish(klipjax("--resume", str(tmp_path)))
    assert code == 2 and "not a run directory" in err and "Traceback" not in err
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "config.yaml").write_text("env: CartPole-v1\n")
    code, err = finish(klipjax("--out", str(existing)))
    assert code == 2 and "already holds a run" in err
    code, err = finish(klipjax("--resume", str(existing), "--set", "lr=1"))
    assert code == 2 and "--resume continues a run" in err
