"""The run axis sharded over 4 (forced) CPU devices: training, the identity, and a
checkpoint restored onto the sharded layout."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile
    import jax
    from klipjax.engine import checkpoint, sweep
    from tests.sweeps import build, experiment, run

    assert jax.device_count() == 4
    cfg = experiment({"total_steps": 2048, "epochs": 2, "seeds": 4,
                          "loss": ["ppo_clip", "klip"], "chunk_updates": 2})
    runner, metrics, _ = run(cfg)
    kernel = runner.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert len(kernel.sharding.device_set) == 4, kernel.sharding
    hashes = sweep.params_sha256(runner.params)
    assert hashes[:4] == hashes[4:], "ppo_clip and klip differ"

    # Stop after one chunk, checkpoint, restore onto the sharded layout, finish.
    program = build(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        saver = checkpoint.SweepCheckpointer(run_dir)
        first, partial, _ = run(cfg, lambda *a: True, program=program)
        saver.save(1, first, partial)
        saver.close()
        loader = checkpoint.SweepCheckpointer(run_dir)
        abstract = checkpoint.abstract_runner(program.init, program.hparams)
        restored, history = loader.restore(1, abstract, program.chunk_updates)
        restored_kernel = restored.params["actor"]["params"]["MLP_0"]["Dense_0"]["kernel"]
        assert len(restored_kernel.sharding.device_set) == 4
        resumed, _, _ = run(cfg, program=program, runner=restored,
                                    metrics=history, start_chunk=1)
    assert sweep.params_sha256(resumed.params) == hashes, "resume changed the result"
    print("OK")
    """
)


def test_sharded_sweep_trains_and_resumes_identically():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "KLIPJAX_CACHE_DIR": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
