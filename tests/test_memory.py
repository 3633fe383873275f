"""Sweeps larger than memory: runs advanced in groups inside one program, chosen by
the user (``parallel_runs``) or automatically from XLA's memory analysis."""

import numpy as np
import pytest

from klipjax.engine import memory
from tests.sweeps import experiment, run

TINY = {
    "env": "CartPole-v1",
    "total_steps": 1024,
    "num_envs": 4,
    "num_steps": 64,
    "epochs": 2,
    "minibatch_size": 64,
    "loss": ["ppo_clip", "kl_fixed"],
    "seeds": 3,
}


def train(**overrides):
    return run(experiment({**TINY, **overrides}))


@pytest.mark.slow  # groups are checked bit for bit in test_sharding
def test_runs_in_groups_learn_what_the_whole_sweep_learns():
    _, whole, whole_report = train()
    _, grouped, grouped_report = train(parallel_runs=4)  # 6 runs: groups of 4 and 2
    assert whole_report.parallel_runs == 6 and grouped_report.parallel_runs == 4
    # Same runs, same seeds; the vmap width may change float rounding, no more.
    for name in ("episode_return", "kill_fraction", "policy_loss"):
        np.testing.assert_allclose(grouped[name], whole[name], rtol=1e-3, atol=1e-5)


def test_a_sweep_that_does_not_fit_is_split_automatically(monkeypatch):
    _, _, report = train()
    assert report.program_bytes > 0
    # Pretend a third of the program's memory is free: fewer runs at once.
    monkeypatch.setattr(memory, "available_bytes", lambda: report.program_bytes // 3)
    _, metrics, small = train()
    assert 1 <= small.parallel_runs < 6
    assert small.program_bytes < report.program_bytes
    assert metrics["episode_return"].shape == (6, 4)


def test_the_memory_figures_are_reported():
    _, _, report = train()  # the program of the test above, compiled once
    peaks = memory.peak_bytes()
    assert peaks["host"] > report.program_bytes > 0
