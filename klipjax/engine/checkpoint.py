"""Checkpoints of a whole sweep between compiled chunks (orbax-checkpoint).

A checkpoint holds the full ``Runner`` of every run (parameters, optimiser state with
its schedule count, normaliser statistics, env states, RNG keys, counters, adaptive
beta, divergence markers) and the per-update metrics so far, so a resumed sweep ends
bit-identical to one never interrupted. Steps are numbered by chunks done.

The runner is saved as it lies on the devices: with several processes each writes
the shards of its own runs into the one (shared) directory, and a restore reads
back whichever shards the new layout needs, on the same or another process count.

orbax loads on first use (about a second of imports): a fresh sweep saves only
once a chunk has run, and ``klipjax.train`` imports orbax on a thread meanwhile.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import numpy as np

from klipjax.config import files as config_files
from klipjax.config import run_table
from klipjax.core.normalization import RunningStats
from klipjax.engine.sweep import METRIC_NAMES
from klipjax.engine.trainer import Runner

CHECKPOINT_DIR = "checkpoints"
TIMING_ITEM = "timing"


def orbax():
    """``orbax.checkpoint``, imported on first use."""
    import orbax.checkpoint as ocp

    return ocp


class SweepCheckpointer:
    """Saves and restores ``(runner, metrics)`` under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | Path, keep: int = 2):
        self.directory = (Path(run_dir) / CHECKPOINT_DIR).absolute()
        self.keep = keep

    @functools.cached_property
    def manager(self):
        """orbax's manager of ``directory``, made (and orbax imported) on first use."""
        ocp = orbax()
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.keep, create=True, cleanup_tmp_directories=True
            ),
        )

    def save(
        self,
        chunks_done: int,
        runner: Runner,
        metrics: dict[str, np.ndarray],
        timing: dict[str, Any],
    ):
        """Starts an asynchronous save; every process calls it. orbax copies each
        process's shards of the runner to host memory before it returns (the
        writing goes on in the background), so the next chunk may reuse (donate)
        the device buffers at once. The metrics, the same on every process, and
        ``timing`` (the seconds spent on the sweep so far, over all its
        processes' lives, and the training's measured speed) are written by
        process 0."""
        host_metrics = {name: np.asarray(metrics[name]) for name in METRIC_NAMES}
        ocp = orbax()
        self.manager.save(
            chunks_done,
            args=ocp.args.Composite(
                runner=ocp.args.StandardSave(runner),
                # "metrics" is reserved by CheckpointManager (for best_fn)
                history=ocp.args.StandardSave(host_metrics),
                **{TIMING_ITEM: ocp.args.JsonSave(timing)},
            ),
            force=True,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(
        self,
        step: int,
        abstract_runner: Runner,
        updates_done: int,
        num_runs: int | None = None,
    ):
        """Restores the runner (onto the abstract target's shardings), the
        metrics of the table's ``num_runs`` runs (default: the runner's) and the
        saved timing (empty from a checkpoint written before it was kept)."""
        if num_runs is None:
            num_runs = jax.tree.leaves(abstract_runner)[0].shape[0]
        abstract_metrics = {
            name: jax.ShapeDtypeStruct((num_runs, updates_done), np.float32)
            for name in METRIC_NAMES
        }
        ocp = orbax()
        # orbax lists only the items this process has registered, so look on disk
        kept = (self.directory / str(step) / TIMING_ITEM).is_dir()
        timing = {TIMING_ITEM: ocp.args.JsonRestore()} if kept else {}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                # The runner's rows past the table's runs are padding, as many as
                # the device count needs (see placement): a checkpoint from another
                # count holds more or fewer. Extra rows are dropped, missing ones
                # read as zeros, which is a frozen run (``diverged_at`` 0) that is
                # dropped again at the end. Every other shape is fixed by the
                # config, which a resume checks first.
                runner=ocp.args.StandardRestore(abstract_runner, strict=False),
                history=ocp.args.StandardRestore(abstract_metrics),
                **timing,
            ),
        )
        metrics = {name: np.asarray(value) for name, value in restored.history.items()}
        return restored.runner, metrics, dict(restored.get(TIMING_ITEM) or {})

    def close(self):
        """Waits for pending saves to be on disk."""
        if "manager" not in self.__dict__:
            return  # never used: nothing to wait for
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_runner(init, hparams) -> Runner:
    """Shapes, dtypes and shardings of a sweep's runner, without computing it."""
    shapes = jax.eval_shape(init, hparams)
    device = jax.devices()[0]
    leaves = jax.tree.leaves(hparams)
    sharding = getattr(leaves[0], "sharding", None) if leaves else None

    def with_sharding(leaf):
        target = sharding if sharding is not None and leaf.ndim >= 1 else None
        target = target or jax.sharding.SingleDeviceSharding(device)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=target)

    return jax.tree.map(with_sharding, shapes)


def latest_state(run_dir: str | Path) -> tuple | None:
    """``(params, obs_stats)`` of every run (``[runs, ...]`` numpy leaves) in the
    latest checkpoint under ``run_dir``, or None if it has none. Needs no model: the
    tree is read as saved, then cut to the runs of the directory's table."""
    directory = (Path(run_dir) / CHECKPOINT_DIR).absolute()
    ocp = orbax()
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        # Saved from other devices (another process count): read onto this one.
        anywhere = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                runner=ocp.args.StandardRestore(fallback_sharding=anywhere)
            ),
        )
    runner = restored.runner
    if not isinstance(runner, dict):
        runner = runner._asdict()
    stats = runner["obs_stats"]
    if isinstance(stats, dict):  # a NamedTuple reads back as a mapping
        stats = RunningStats(stats["mean"], stats["var"], stats["count"])
    elif isinstance(stats, (list, tuple)):
        stats = RunningStats(*stats)
    from klipjax.outputs.results import CONFIG_FILE

    num_runs = run_table.num_runs(
        config_files.load(Path(run_dir) / CONFIG_FILE).hparams
    )
    return jax.tree.map(lambda x: np.asarray(x)[:num_runs], (runner["params"], stats))
