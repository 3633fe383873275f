"""How a sweep is cut into calls of its one chunk program: about DEFAULT_CHUNKS
chunks of equal length where a divisor allows, a first call of one update for an
early progress report, and nothing computed past the last update."""

import ast
from pathlib import Path

import jax
import numpy as np
import pytest

from klipjax.engine.sweep import DEFAULT_CHUNKS, FIRST_CALL_UPDATES, choose_chunk
from klipjax.engine.trainer import Metrics
from tests.sweeps import build, experiment, run


def _short(num_updates: int, size: int) -> int:
    return -num_updates % size


def test_chunks_stay_near_the_target_and_waste_least():
    for num_updates in range(1, 5000):
        size = choose_chunk(num_updates)
        target = max(1, round(num_updates / DEFAULT_CHUNKS))
        assert target / 2 <= size <= min(2 * target, num_updates), num_updates
        # no size in the allowed range leaves a fuller last chunk
        best = min(
            _short(num_updates, s)
            for s in range(max(1, -(-target // 2)), min(2 * target, num_updates) + 1)
        )
        assert _short(num_updates, size) == best, num_updates
        assert _short(num_updates, size) <= _short(num_updates, target)


def test_known_sizes():
    assert choose_chunk(195) == 13  # the CartPole grid: a divisor, all chunks whole
    # 488 updates (1M steps of 2048) has no divisor near 24: 14 lacks 2, not 16
    assert choose_chunk(488) == 14 and _short(488, 14) == 2
    assert _short(4882, choose_chunk(4882)) == 1  # 10M steps of 2048
    assert choose_chunk(488, requested=7) == 7
    assert choose_chunk(10, requested=50) == 10
    assert choose_chunk(488, align=50) == 10  # divides the checkpoint interval


TINY = {
    "env": "CartPole-v1",
    "total_steps": 7 * 256,  # 7 updates: chunks of 3, 3 and a last one of 1
    "num_envs": 4,
    "num_steps": 64,
    "epochs": 2,
    "minibatch_size": 64,
    "loss": ["ppo_clip", "kl_adaptive"],
    "chunk_updates": 3,
    "final_eval_episodes": 0,
}


def _equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_a_chunk_in_two_calls_equals_it_in_one():
    program = build(experiment(TINY))
    assert program.chunk_updates == 3
    whole, whole_metrics = program.run_chunk(
        program.init(program.hparams), program.hparams, program.updates(3)
    )
    runner, head = program.run_chunk(
        program.init(program.hparams), program.hparams, program.updates(1)
    )
    runner, tail = program.run_chunk(runner, program.hparams, program.updates(2))
    assert _equal(runner, whole)
    assert np.asarray(runner.update).tolist() == [3, 3]
    for name in Metrics._fields:
        full = np.asarray(getattr(whole_metrics, name))
        first, rest = np.asarray(getattr(head, name)), np.asarray(getattr(tail, name))
        assert np.isnan(first[:, 1:]).all() and np.isnan(rest[:, 2:]).all(), name
        assert np.array_equal(first[:, :1], full[:, :1], equal_nan=True), name
        assert np.array_equal(rest[:, :2], full[:, 1:], equal_nan=True), name
    for bad in (-1, 4, 1.0):
        with pytest.raises(ValueError, match="chunk_updates=3"):
            program.updates(bad)
    # No update at all: the runs stand still.
    before = program.init(program.hparams)
    copy = jax.tree.map(np.array, before)
    after, nothing = program.run_chunk(before, program.hparams, program.updates(0))
    assert _equal(after, copy)
    assert all(np.isnan(np.asarray(leaf)).all() for leaf in nothing)


def test_progress_shows_after_the_first_update_and_the_last_chunk_stops_at_the_end():
    events = []
    runner, metrics, report = run(
        experiment(TINY),
        on_chunk=lambda r, *_: events.append(("chunk", r.chunks_done, r.updates_done)),
        on_progress=lambda r: events.append(
            ("progress", r.chunks_done, r.updates_done)
        ),
    )
    assert events == [
        ("progress", 0, FIRST_CALL_UPDATES),
        ("chunk", 1, 3),
        ("chunk", 2, 6),
        ("chunk", 3, 7),
    ]
    assert np.asarray(runner.update).tolist() == [7, 7]
    assert (
        metrics["env_steps"].shape == (2, 7)
        and not np.isnan(metrics["env_steps"]).any()
    )
    assert report.steps_per_second > 0 and report.compile_seconds < report.seconds


def test_the_whole_process_benchmark_knows_the_first_call():
    # scripts/bench_whole_process.py keeps its own copy (it must not import the
    # engine); its klipjax compile figure subtracts that call's updates.
    source = (
        Path(__file__).parents[1] / "scripts" / "bench_whole_process.py"
    ).read_text()
    values = [
        node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and [t.id for t in node.targets if isinstance(t, ast.Name)]
        == ["FIRST_CALL_UPDATES"]
    ]
    assert values == [FIRST_CALL_UPDATES]
