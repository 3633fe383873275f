"""Several processes, one sweep: two local processes with 2 CPU devices each
(JAX's distributed runtime on 127.0.0.1) train exactly what one process with 4
devices trains, stop together, and resume bit-identically after one of them dies."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import klipjax as kj
from klipjax.engine import sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--set", "total_steps=1024",
    "--set", "num_steps=64",
    "--set", "epochs=1",
    "--set", "seeds=2",
    "--set", "loss=[ppo_clip,klip]",
    "--set", "chunk_updates=2",
    "--set", "final_eval_episodes=0",
]  # fmt: skip
TIMEOUT = 420  # seconds for one invocation (compiling on a 2-core machine)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(args, devices: int, *, process=None, log=None) -> subprocess.Popen:
    """``klipjax train ARGS`` in a process of its own with ``devices`` CPU
    devices; ``process=(id, count, port)`` makes it one of several."""
    command = [sys.executable, "-m", "klipjax", "train", *args]
    if process is not None:
        index, count, port = process
        command += ["--coordinator", f"127.0.0.1:{port}"]
        command += ["--num-processes", str(count), "--process-id", str(index)]
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "KLIPJAX_CACHE_DIR": "",  # every process compiles its own program
    }
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log if log is not None else subprocess.DEVNULL,
        text=True,
    )


def start_pair(args, tmp_path: Path, name: str) -> list[subprocess.Popen]:
    """Two processes of 2 devices each, their stderr in ``tmp_path/name.I.log``."""
    port = free_port()
    return [
        start(
            args,
            2,
            process=(index, 2, port),
            log=(tmp_path / f"{name}.{index}.log").open("w"),
        )
        for index in range(2)
    ]


def wait_all(processes, timeout=TIMEOUT) -> list[int]:
    """Exit codes; every process still running at the deadline is killed."""
    deadline = time.time() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.time())) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def logs(tmp_path: Path, name: str) -> str:
    return "\n".join(
        path.read_text()[-3000:] for path in sorted(tmp_path.glob(f"{name}.*.log"))
    )


def outcome(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    hashes = [run["params_sha256"] for run in summary["runs"]]
    return summary, hashes, pd.read_parquet(run_dir / "metrics.parquet")


def one_process(args, tmp_path: Path, name: str):
    """The same sweep in one process with 4 devices: the reference."""
    run_dir = tmp_path / name
    log = (tmp_path / f"{name}.log").open("w")
    (code,) = wait_all([start([*args, "--out", str(run_dir)], 4, log=log)])
    assert code == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    return outcome(run_dir)


def two_processes(args, tmp_path: Path, name: str):
    run_dir = tmp_path / name
    codes = wait_all(start_pair([*args, "--out", str(run_dir)], tmp_path, name))
    assert codes == [0, 0], logs(tmp_path, name)
    return outcome(run_dir)


def assert_same(result, reference):
    summary, hashes, frame = result
    assert summary["complete"]
    assert hashes == reference[1]
    pd.testing.assert_frame_equal(frame, reference[2])


def test_two_processes_train_what_one_process_with_four_devices_trains(tmp_path):
    reference = one_process(TINY, tmp_path, "one")
    result = two_processes(TINY, tmp_path, "two")
    assert_same(result, reference)
    assert len(set(result[1])) == 2  # ppo_clip == klip per seed, the seeds differ
    # process 0 alone writes the sweep's files and prints
    log_1 = (tmp_path / "two.1.log").read_text()
    assert "results in" in (tmp_path / "two.0.log").read_text()
    assert "results in" not in log_1 and "CartPole" not in log_1
    # the checkpoint, written by both, reads back in this one-device process
    loaded = kj.load(tmp_path / "two")
    assert sweep.params_sha256(loaded.params) == result[1]


def test_distributed_errors_are_one_line(tmp_path):
    def klipjax(*args):
        done = subprocess.run(
            [sys.executable, "-m", "klipjax", "train", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.returncode, done.stderr

    code, err = klipjax("--distributed")
    assert code == 2 and "needs --out" in err and "Traceback" not in err
    code, err = klipjax("--out", str(tmp_path / "a"), "--coordinator", "h:1")
    assert code == 2 and "--num-processes N --process-id I" in err
    code, err = klipjax("--out", str(tmp_path / "b"), "--distributed")
    assert code == 2 and "no cluster detected" in err and "Traceback" not in err
    # processes given different sweeps are refused, every one of them
    port, out = free_port(), ["--out", str(tmp_path / "c")]
    mismatched = [
        start([*TINY, *out], 2, process=(0, 2, port), log=subprocess.PIPE),
        start([*TINY, *out, "--set", "seeds=3"], 2, process=(1, 2, port)),
    ]
    assert wait_all(mismatched, timeout=120) == [2, 2]
    assert "process 1 was started with another sweep" in mismatched[0].stderr.read()
    # in this process JAX already runs: too late to join other processes
    with pytest.raises(kj.ConfigError, match="already uses a device"):
        kj.train(kj.Config(total_steps=1024), kj.hparams(), distributed=True)


@pytest.mark.slow
def test_grouped_runs_spread_over_processes_match_one_process(tmp_path):
    # 12 runs, 3 a device, advanced in groups of 2 (the last group filled up)
    grouped = [*TINY, "--set", "seeds=6", "--set", "parallel_runs=2"]
    assert_same(
        two_processes(grouped, tmp_path, "two"),
        one_process(grouped, tmp_path, "one"),
    )


LONGER = [*TINY, "--set", "total_steps=8192", "--checkpoint-every", "2"]  # 32 updates


def wait_for_checkpoint(run_dir: Path, processes, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*")):
            return
        assert all(p.poll() is None for p in processes), "a process ended early"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def reference_and_pair_under_way(tmp_path: Path, name: str):
    """The one-process reference of ``LONGER``, then a pair training it into
    ``tmp_path/name`` and past its first checkpoint: ``(reference, run_dir, pair)``."""
    reference = one_process(LONGER, tmp_path, "one")
    run_dir = tmp_path / name
    pair = start_pair([*LONGER, "--out", str(run_dir)], tmp_path, name)
    try:
        wait_for_checkpoint(run_dir, pair)
    except BaseException:
        wait_all(pair, timeout=1)
        raise
    return reference, run_dir, pair


@pytest.mark.slow
def test_one_process_killed_then_both_resumed_is_bit_identical(tmp_path):
    reference, run_dir, pair = reference_and_pair_under_way(tmp_path, "killed")
    try:
        time.sleep(0.3)  # somewhere between checkpoints, maybe mid-save
        pair[1].send_signal(signal.SIGKILL)
        # The survivor stops within JAX's heartbeat timeout; a scheduler would
        # end it at once (srun --kill-on-bad-exit), as done here.
        time.sleep(2)
    finally:
        for process in pair:
            process.kill()
            process.wait()
    assert not (run_dir / "summary.json").exists()
    resumed = start_pair(["--resume", str(run_dir)], tmp_path, "resumed")
    assert wait_all(resumed) == [0, 0], logs(tmp_path, "resumed")
    assert "resuming at update" in (tmp_path / "resumed.0.log").read_text()
    assert_same(outcome(run_dir), reference)


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_and_resumes_on_one(tmp_path):
    reference, run_dir, pair = reference_and_pair_under_way(tmp_path, "stopped")
    try:
        pair[1].send_signal(signal.SIGTERM)
        codes = wait_all(pair)
    finally:
        wait_all(pair, timeout=1)
    assert codes == [143, 143], logs(tmp_path, "stopped")
    summary, _, frame = outcome(run_dir)
    assert not summary["complete"] and 0 < summary["updates_done"] < 32
    assert len(frame) == 4 * summary["updates_done"]
    # on another process count: one process with the same 4 devices
    log = (tmp_path / "resumed.log").open("w")
    (code,) = wait_all([start(["--resume", str(run_dir)], 4, log=log)])
    assert code == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert_same(outcome(run_dir), reference)
