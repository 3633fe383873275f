"""The run axis over 4 (forced) CPU devices: each device trains its own runs in
groups with no collectives in the compiled programs, over several chunks; a run
count that does not divide is padded; a checkpoint restores onto the sharded
layout; a run's result depends on the group width, not on the runs per device."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import re, tempfile
    import jax
    from klipjax.engine import checkpoint, sweep
    from tests.sweeps import build, experiment, run

    assert jax.device_count() == 4
    COLLECTIVE = re.compile(
        r"\\b(all-gather|all-reduce|all-to-all|collective-permute|"
        r"collective-broadcast|reduce-scatter|send|recv)(-start)?\\("
    )
    TINY = {"total_steps": 2048, "num_steps": 64, "epochs": 1, "chunk_updates": 2,
            "loss": ["ppo_clip", "klip"], "final_eval_episodes": 0,
            "parallel_runs": 2}
    # 10 runs: padded to 12, 3 a device, advanced 2 at a time (the last group
    # filled up with a copy)
    cfg = experiment({**TINY, "seeds": 5})
    program = build(cfg)
    runner = program.init(program.hparams)
    compiled = {
        "chunk": program.run_chunk.lower(
            runner, program.hparams, program.updates(program.chunk_updates)
        ).compile(),
        "init": program.init.lower(program.hparams).compile(),
        "evaluate": program.evaluate.lower(
            runner, program.hparams, episodes=1
        ).compile(),
    }
    for name, executable in compiled.items():
        found = COLLECTIVE.findall(executable.as_text())
        assert not found, (name, len(found), found[:3])

    runner, metrics, report = run(cfg, program=program)
    assert report.chunks_done == 4  # inputs keep the layout the chunk compiled for
    assert metrics["episode_return"].shape == (10, 8)
    kernel = runner.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert len(kernel.sharding.device_set) == 4, kernel.sharding
    hashes = sweep.params_sha256(runner.params)[:10]
    assert hashes[:5] == hashes[5:], "ppo_clip and klip differ"

    # Stop after one chunk, checkpoint, restore onto the sharded layout, finish.
    with tempfile.TemporaryDirectory() as run_dir:
        saver = checkpoint.SweepCheckpointer(run_dir)
        first, partial, _ = run(cfg, lambda *a: True, program=program)
        saver.save(1, first, partial, {"wall_seconds": 2.5, "resumes": 0})
        saver.close()
        loader = checkpoint.SweepCheckpointer(run_dir)
        abstract = checkpoint.abstract_runner(program.init, program.hparams)
        restored, history, spent = loader.restore(
            1, abstract, program.chunk_updates, program.num_runs
        )
        assert spent == {"wall_seconds": 2.5, "resumes": 0}
        restored_kernel = restored.params["actor"]["params"]["MLP_0"]["Dense_0"]
        assert len(restored_kernel["kernel"].sharding.device_set) == 4
        resumed, _, _ = run(cfg, program=program, runner=restored,
                            metrics=history, start_chunk=1)
    assert sweep.params_sha256(resumed.params)[:10] == hashes, "resume differs"

    # 8 runs, 2 a device, all at once: the same width 2, the same results
    narrow, _, _ = run(experiment({**TINY, "seeds": 4}))
    narrow_hashes = sweep.params_sha256(narrow.params)
    assert narrow_hashes == hashes[:4] + hashes[5:9], "the width is not all"
    print("OK")
    """
)


def test_runs_over_four_devices_train_without_collectives_and_resume():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
