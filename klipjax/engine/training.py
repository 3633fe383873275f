"""``train``: one sweep from a run table to ``Results``, on the host side.

Builds and compiles the sweep's one program, advances it chunk by chunk with a
progress bar (stderr; a widget in Jupyter), checkpoints into ``out_dir``, resumes
bit-identically, and turns SIGINT/SIGTERM into a stop at the next chunk boundary.
It prints nothing to stdout; messages go to the ``klipjax`` logger.

With several processes (``distributed=True``, see ``klipjax.engine.distributed``)
every process runs this same function: each trains its devices' runs, all write
their shards of the checkpoints, a stop is agreed at a chunk boundary, and process
0 alone shows progress, tracks and writes the sweep's files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from klipjax.config import checks, run_table
from klipjax.config import files as config_files
from klipjax.config.checks import ConfigError
from klipjax.config.settings import Config, HParams
from klipjax.engine import compile_cache, hardware, memory, placement
from klipjax.engine import distributed as _distributed
from klipjax.outputs import tracking
from klipjax.outputs.files import write_yaml
from klipjax.outputs.results import CONFIG_FILE, Results

if TYPE_CHECKING:
    from klipjax.engine import sweep
    from klipjax.engine.trainer import Trainer

log = logging.getLogger("klipjax")


class StopRequest:
    """SIGINT/SIGTERM: finish the current chunk, checkpoint, stop; twice: abort now.

    Installed for the length of a ``with`` block (main thread only: signals cannot
    be handled elsewhere) and the previous handlers restored after it.
    """

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s: finishing the current chunk, then stopping (again to abort at once)",
            signal.Signals(signum).name,
        )

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for signum in previous:
                signal.signal(signum, self)
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _prepare_out_dir(out: Path, resume: bool) -> None:
    """Checks (before any compile) that ``out`` can hold this run."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {str(out)!r} exists and is not a directory")
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise ConfigError(
                f"resume: {str(out)!r} is not a run directory (no {CONFIG_FILE})"
            )
        return
    if (out / CONFIG_FILE).exists():
        raise ConfigError(
            f"out_dir {str(out)!r} already holds a run: continue it with resume "
            f"(klipjax train --resume {out}) or choose another directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out_dir {str(out)!r} cannot be created: {err.strerror}")
    if not os.access(out, os.W_OK):
        raise ConfigError(f"out_dir {str(out)!r} is not writable")


def _check_same_sweep(out: Path, config: Config, table: HParams) -> dict[str, int]:
    """The saved run's options, after checking it is the sweep being resumed."""
    saved = config_files.load(out / CONFIG_FILE)
    if saved.config != config:
        raise ConfigError(
            f"resume: {out}/{CONFIG_FILE} holds another Config ({saved.config})"
        )
    same = run_table.num_runs(saved.hparams) == run_table.num_runs(table) and all(
        np.array_equal(a, b) for a, b in zip(saved.hparams, table)
    )
    if not same:
        raise ConfigError(f"resume: {out}/{CONFIG_FILE} holds another run table")
    return saved.options


def _progress_bar(enabled: bool, total: int, initial: int):
    """A tqdm bar on stderr: a widget in Jupyter when ipywidgets is there, text
    otherwise (which Jupyter shows as well)."""
    if not enabled:
        return contextlib.nullcontext(None)
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(
        total=total,
        initial=initial,
        unit="update",
        desc="compiling",
        dynamic_ncols=True,
        file=sys.stderr,
    )


class _BarMoves:
    """Moves a progress bar (or nothing, for None) to each report's update."""

    def __init__(self, bar):
        self.bar = bar
        self.compiling = True

    def show(self, report: sweep.ChunkReport) -> None:
        bar = self.bar
        if bar is None:
            return
        if self.compiling:
            # The compile ends here: the bar's clock restarts and counts from this
            # update on (this first move feeds no rate), so the speed and the time
            # left it shows are the training's alone.
            self.compiling = False
            bar.unpause()
            bar.set_description("training", refresh=False)
            bar.n = bar.initial = report.updates_done
            bar.refresh()
            return
        if report.steps_per_second:
            bar.set_postfix_str(
                f"{report.steps_per_second:,.0f} env-steps/s", refresh=False
            )
        bar.update(report.updates_done - bar.n)


def train(
    config: Config,
    hparams: HParams,
    *,
    progress: bool = True,
    out_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    chunk_updates: int | None = None,
    parallel_runs: int = 0,
    trainer: Trainer | None = None,
    log: Any = None,
    distributed: bool = False,
) -> Results:
    """Trains every run of ``hparams`` as one compiled program.

    Args:
        config: Static settings shared by all runs.
        hparams: The run table (``grid``, ``sample``, ``concat``) or one run
            (``hparams``): ``[runs]`` fields.
        progress: Show a progress bar on stderr (a widget in Jupyter).
        out_dir: Directory for ``config.yaml``, checkpoints, ``metrics.parquet``,
            ``summary.json`` and figures (as ``klipjax train --out`` writes it); None
            keeps everything in memory.
        checkpoint_every: Updates between checkpoints (needs ``out_dir``); one is
            always written at the end and on SIGINT/SIGTERM.
        resume: Continue the run in ``out_dir`` from its latest checkpoint; the
            config and table must be the ones it was started with. The result is
            bit-identical to an uninterrupted run.
        chunk_updates: Updates per compiled call (default: about 1/20 of the run).
        parallel_runs: Runs each device advances at once (0: all, fewer if memory
            is short). A run's float rounding depends on this width: 1 trains every
            run exactly as it trains alone (docs/distributed.md).
        trainer: A ``make_trainer`` result to use instead of building one.
        log: Track every run live at chunk boundaries: ``"tensorboard"``,
            ``"wandb"``, a ``klipjax.outputs.tracking.TensorBoard`` / ``WandB``
            with options, or a list of these (see ``klipjax.outputs.tracking``).
            W&B failures only warn; training goes on.
        distributed: This is one of several processes training the sweep together
            (every one calls ``train`` with the same arguments): starts JAX's
            distributed runtime (``jax.distributed.initialize()``, the cluster
            detected) unless it is running. ``out_dir`` must then be a directory
            every process sees. See docs/distributed.md.

    Returns:
        ``Results`` with ``metrics[name]`` shaped ``[runs, updates]`` (on every
        process). A run stopped by SIGINT/SIGTERM returns what it has (``status``
        "stopped").

    Raises:
        ConfigError: A bad argument, an environment that cannot be built, an
            ``out_dir`` that holds another run.
    """
    started = time.perf_counter()
    if distributed:
        _distributed.initialize()
    # Only now: importing the environments touches a device, which must come after
    # the distributed runtime starts.
    from klipjax.engine import sweep

    if not isinstance(config, Config):
        raise ConfigError(
            f"config: expected klipjax.Config, got {type(config).__name__}"
        )
    table = run_table.as_table(hparams)
    main = _distributed.is_main()
    log_to = tracking.destinations(log) if main else []
    checkpoint_every = checks.as_int("checkpoint_every", checkpoint_every, 0)
    parallel_runs = checks.as_int("parallel_runs", parallel_runs, 0)
    if chunk_updates is not None:
        chunk_updates = checks.as_int("chunk_updates", chunk_updates)
    out = None if out_dir is None else Path(out_dir)
    if out is None and (resume or checkpoint_every):
        raise ConfigError("resume and checkpoint_every need an out_dir")
    created = out is not None and not out.exists()
    if out is not None:
        _on_every_process(lambda: _prepare_out_dir(out, resume))
        if resume:
            saved = _on_every_process(lambda: _check_same_sweep(out, config, table))
            chunk_updates = saved.get("chunk_updates", chunk_updates)
            checkpoint_every = saved.get("checkpoint_every", checkpoint_every)
            parallel_runs = saved.get("parallel_runs", parallel_runs)

    compile_cache.enable()
    hits_before = compile_cache.hits()
    options = {"checkpoint_every": checkpoint_every, "parallel_runs": parallel_runs}

    def build(parallel: int) -> sweep.SweepProgram:
        return sweep.build(
            config,
            table,
            chunk_updates=chunk_updates,
            checkpoint_every=checkpoint_every,
            parallel_runs=parallel,
            trainer=trainer,
        )

    try:
        program = build(parallel_runs)
    except BaseException:
        if created and main and not any(out.iterdir()):
            out.rmdir()  # nothing half-made is left behind by a sweep that never ran
        raise
    options["chunk_updates"] = program.chunk_updates  # a resume must reuse it
    checkpointer, runner, metrics, start_chunk, earlier = None, None, None, 0, {}
    if out is not None:
        if not resume and main:
            write_yaml(out / CONFIG_FILE, config_files.to_dict(config, table, options))
        _check_shared(out)
        checkpointer, runner, metrics, start_chunk, earlier = _open_checkpoints(
            out, program, resume
        )

    sweep_log = None
    if log_to:
        logged = 0 if metrics is None else metrics["env_steps"].shape[1]
        if sweep.final_evaluation_missing(program, metrics, start_chunk):
            # Checkpointed before the final evaluation, whose failure cut off the
            # last chunk's report: that chunk is logged again, with its evaluation.
            logged = (program.num_chunks - 1) * program.chunk_updates
        sweep_log = tracking.SweepLog(
            log_to, config, table, out_dir=out, start_update=logged
        )
    stop = StopRequest()
    stopped_by = None
    saved_before_evaluation = False
    try:
        with (
            stop.installed(),
            _progress_bar(
                progress and main,
                config.num_updates,
                min(start_chunk * program.chunk_updates, config.num_updates),
            ) as bar,
        ):
            on_progress = _BarMoves(bar).show

            def on_chunk(report: sweep.ChunkReport, runner, metrics) -> bool:
                nonlocal stopped_by
                if out is not None and main and report.chunks_done == start_chunk + 1:
                    _import_writers_aside()
                on_progress(report)
                # A signal to any process stops them all after this same chunk.
                stopped_by = _distributed.agree_max(stop.signum or 0) or None
                finished = report.updates_done >= config.num_updates
                due = checkpoint_every and report.updates_done % checkpoint_every == 0
                if (
                    checkpointer is not None
                    and (due or finished or stopped_by)
                    and report.chunks_done > start_chunk  # not the restored one
                    and not saved_before_evaluation  # that checkpoint is the last
                ):
                    so_far = _timing_so_far(started, report, earlier)
                    checkpointer.save(report.chunks_done, runner, metrics, so_far)
                if sweep_log is not None:
                    sweep_log.write(metrics)
                return stopped_by is not None

            def before_final_evaluation(report, runner, metrics) -> None:
                # A crash or hang in the evaluation then costs only the evaluation.
                nonlocal saved_before_evaluation
                so_far = _timing_so_far(started, report, earlier)
                checkpointer.save(report.chunks_done, runner, metrics, so_far)
                saved_before_evaluation = True

            runner, metrics, report = sweep.run(
                program,
                on_chunk,
                runner=runner,
                metrics=metrics,
                start_chunk=start_chunk,
                rebuild=None if parallel_runs else build,
                before_final_evaluation=None
                if checkpointer is None
                else before_final_evaluation,
                on_progress=on_progress,
            )
    finally:
        if checkpointer is not None:
            checkpointer.close()
        if sweep_log is not None:
            sweep_log.close()
    complete = report.updates_done >= config.num_updates
    if not complete:
        # the module's logger: the `log` argument names the trackers here
        logging.getLogger("klipjax").warning(
            "stopped at update %d/%d%s",
            report.updates_done,
            config.num_updates,
            f"; partial results and a checkpoint are in {out}/" if out else "",
        )
    results = _results(
        config,
        table,
        program.placement,
        runner,
        metrics,
        complete,
        timing=_timing(
            _timing_so_far(started, report, earlier),
            report,
            compile_cache.hits() - hits_before,
            program.placement,
        ),
        options=options,
        stopped_by=stopped_by,
    )
    if out is not None:
        if main:
            results.save(out)
        _distributed.barrier("klipjax results written")
    return results


def _import_writers_aside() -> None:
    """Imports what writing the run directory needs (orbax for the checkpoints,
    pandas and pyarrow for the parquet file, matplotlib for the figures) on a thread
    while the sweep trains: the compiled chunks hold no Python lock, and otherwise
    these imports (about 2 s) would wait for the first save or the end of training."""

    def load() -> None:
        # Only a head start: whatever fails here, save() imports (and reports) itself.
        with contextlib.suppress(Exception):
            from klipjax.engine import checkpoint

            checkpoint.orbax()
            import pandas  # noqa: F401
            import pyarrow.parquet  # noqa: F401

            from klipjax.outputs import plots  # noqa: F401

    threading.Thread(target=load, name="klipjax-import-writers", daemon=True).start()


def _on_every_process(check: Callable[[], Any]) -> Any:
    """``check()`` on every process; if it fails on any, every process raises (no
    process goes on alone to wait for the others in a collective)."""
    try:
        value, error = check(), None
    except ConfigError as err:
        value, error = None, err
    failed = _distributed.gather_ints([error is not None])[:, 0]
    if error is not None:
        raise error
    if failed.any():
        raise ConfigError(
            f"process {int(failed.argmax())} refused the sweep (see its message)"
        )
    return value


def _check_shared(out: Path) -> None:
    """With several processes, checks that they all see ``out`` (process 0 has
    written its config there): checkpoints are written by every process."""
    if jax.process_count() == 1:
        return
    _distributed.barrier("klipjax config written")
    seen = _distributed.gather_ints([(out / CONFIG_FILE).is_file()])[:, 0]
    if not seen.all():
        raise ConfigError(
            f"out_dir {str(out)!r}: process {int(seen.argmin())} does not see what "
            "process 0 wrote there; several processes need a directory on a "
            "filesystem they all share"
        )


def _open_checkpoints(out: Path, program: sweep.SweepProgram, resume: bool):
    """The sweep's checkpointer, and with ``resume`` the state it holds:
    ``(checkpointer, runner, metrics, start_chunk, earlier)`` (None, None, 0, {}
    if none), ``earlier`` being what the checkpoint carries of the sweep's cost
    (see ``_timing_so_far``)."""
    from klipjax.engine import checkpoint  # orbax itself loads on first use

    config = program.config
    checkpointer = checkpoint.SweepCheckpointer(out)
    step = checkpointer.latest_step() if resume else None
    if step is None:
        if resume:
            log.info("no checkpoint yet: starting from the beginning")
        return checkpointer, None, None, 0, {}
    updates_done = min(step * program.chunk_updates, config.num_updates)
    abstract = checkpoint.abstract_runner(program.init, program.hparams)
    runner, metrics, earlier = checkpointer.restore(
        step, abstract, updates_done, program.num_runs
    )
    log.info("resuming at update %d/%d", updates_done, config.num_updates)
    earlier["resumes"] = earlier.get("resumes", 0) + 1
    return checkpointer, runner, metrics, step, earlier


def _results(
    config: Config,
    table: HParams,
    layout: placement.Placement,
    runner,
    metrics,
    complete: bool,
    **extra,
) -> Results:
    """The outcome read off the final runner (parameters, divergence, identity),
    gathered to every process."""
    from klipjax.engine import sweep

    params, obs_stats, diverged_at = placement.to_host(
        (runner.params, runner.obs_stats, runner.diverged_at), layout
    )
    diverged_at = np.asarray(diverged_at, np.int64)
    return Results(
        config=config,
        hparams=table,
        metrics=metrics,
        params=params,
        status=tuple(
            "diverged" if d >= 0 else ("ok" if complete else "stopped")
            for d in diverged_at
        ),
        diverged_at=diverged_at,
        params_sha256=tuple(sweep.params_sha256(params)),
        identity=sweep.identity_differences(table, params),
        obs_stats=obs_stats,
        **extra,
    )


def _timing_so_far(
    started: float, report: sweep.ChunkReport, earlier: dict[str, Any]
) -> dict[str, Any]:
    """What a checkpoint carries of the sweep's cost: wall, compile and evaluation
    seconds, this process's added to ``earlier``'s, those of the checkpoint it
    resumed from (the time of a process killed after its last checkpoint is not
    counted: its work is redone, and counted, here); how many ``resumes`` that
    took; and the training's speed and chunk program size as the last process that
    measured them saw them (a resume that only evaluates, or trains one chunk,
    measures no speed)."""
    now = {
        "wall_seconds": time.perf_counter() - started,
        "compile_seconds": report.compile_seconds,
        "eval_seconds": report.eval_seconds,  # evaluations, their compile included
    }
    so_far = {key: earlier.get(key, 0.0) + value for key, value in now.items()}
    so_far["resumes"] = earlier.get("resumes", 0)
    measured = {
        "env_steps_per_second": report.steps_per_second,
        "program_bytes": report.program_bytes,
    }
    for key, value in measured.items():
        so_far[key] = value or earlier.get(key)
    return so_far


def _timing(
    so_far: dict[str, Any],
    report: sweep.ChunkReport,
    cache_hits: int,
    layout: placement.Placement,
) -> dict[str, Any]:
    return {
        **{key: value for key, value in so_far.items() if key != "program_bytes"},
        "compile_cache_hits": cache_hits,  # programs loaded from the persistent cache
        "parallel_runs": report.parallel_runs,  # runs advanced at once, all devices
        "devices": layout.mesh.size,  # the run axis spans them (all processes)
        "hardware": hardware.describe(),
        "memory_mb": {
            # XLA's analysis of one chunk, per device
            "program": (so_far["program_bytes"] or 0) / 2**20,
            **{f"peak_{k}": v / 2**20 for k, v in memory.peak_bytes().items()},
        },
    }
