"""Experiment tracking: every run of a sweep as one run in TensorBoard or W&B.

Each klipjax run becomes one logged run, named by its setting and seed and
grouped by its setting, with its hyperparameters (and the sweep's ``Config``) as
the run's config and ``env_steps`` as the step axis. ``klipjax.train(...,
log=...)`` writes the new updates of every run at each chunk boundary;
`log_results` writes a finished ``Results`` (``klipjax log RUN_DIR``).

TensorBoard event files are written by tensorboardX (no TensorFlow needed), one
directory per run: ``<dir>/<setting>/seed=<seed>``, the hyperparameters in the
HParams dashboard. A resumed sweep opens new event files that tell TensorBoard to
discard what the interrupted one wrote past the checkpoint.

W&B is optional and must never cost a run: when ``wandb`` is missing, or a run
cannot be created (no network, no login, a timeout), one warning goes to the
``klipjax`` logger and training goes on without it. ``WANDB_MODE=offline`` (or
``WandB(mode="offline")``) writes runs under ``<dir>/wandb/`` for ``wandb sync``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from klipjax.config import run_table
from klipjax.config.checks import ConfigError
from klipjax.config.settings import Config, HParams
from klipjax.outputs import tables

log = logging.getLogger("klipjax")

TENSORBOARD_DIR = "tensorboard"  # inside a run directory
WANDB_PROJECT = "klipjax"  # unless WandB(project=...) or $WANDB_PROJECT says otherwise
WANDB_IDS_FILE = "klipjax-run-ids.json"  # in <dir>/wandb/: a resume continues its runs
# Events queued per TensorBoard run before its writer thread must write: large,
# because the log is flushed at every chunk boundary anyway.
TENSORBOARD_QUEUE = 10_000
INSTALL_HINT = "pip install 'klipjax[tracking]'"


@dataclasses.dataclass(frozen=True)
class TensorBoard:
    """Where and how to write TensorBoard logs (``log="tensorboard"`` for defaults).

    Attributes:
        dir: The log directory (``tensorboard --logdir DIR``); default
            ``<out_dir>/tensorboard``, or ``runs/tensorboard-<time>`` without one.
    """

    dir: str | os.PathLike[str] | None = None


@dataclasses.dataclass(frozen=True)
class WandB:
    """Where and how to log to Weights & Biases (``log="wandb"`` for defaults).

    Attributes:
        project: Default ``$WANDB_PROJECT``, else ``"klipjax"``.
        entity: Default ``$WANDB_ENTITY`` or the login's default entity.
        dir: Where wandb keeps its files (``<dir>/wandb/``); default the sweep's
            ``out_dir``, else the working directory.
        mode: ``"online"``, ``"offline"`` or ``"disabled"``; default
            ``$WANDB_MODE``, else online.
        tags: Tags for every run.
        init_timeout: Seconds to wait for each run to start before giving up on
            W&B (with a warning) for the rest of the sweep.
        finish_timeout: Seconds to wait for uploads when a run ends.
    """

    project: str | None = None
    entity: str | None = None
    dir: str | os.PathLike[str] | None = None
    mode: str | None = None
    tags: tuple[str, ...] = ()
    init_timeout: float = 20.0
    finish_timeout: float = 30.0


Destination = TensorBoard | WandB
DESTINATIONS = {"tensorboard": TensorBoard, "wandb": WandB}


def destinations(log: Any) -> tuple[Destination, ...]:
    """Checks ``train``'s ``log`` argument and returns its destinations.

    Args:
        log: None, ``"tensorboard"``, ``"wandb"``, a `TensorBoard` or `WandB`, or
            a list of these.

    Raises:
        ConfigError: An unknown name, a destination named twice, or TensorBoard
            asked for without tensorboardX installed.
    """
    if log is None:
        return ()
    items = [log] if isinstance(log, (str, TensorBoard, WandB)) else log
    if not isinstance(items, Sequence):
        raise ConfigError(f"log={log!r}: expected 'tensorboard', 'wandb' or a list")
    chosen: list[Destination] = []
    for item in items:
        if isinstance(item, str):
            if item not in DESTINATIONS:
                raise ConfigError(
                    f"log={item!r}: choose from {', '.join(map(repr, DESTINATIONS))}"
                )
            item = DESTINATIONS[item]()
        if not isinstance(item, (TensorBoard, WandB)):
            raise ConfigError(f"log: {item!r} is not a tracking destination")
        if any(type(other) is type(item) for other in chosen):
            raise ConfigError(f"log: {type(item).__name__} given twice")
        chosen.append(item)
    tensorboard = any(isinstance(d, TensorBoard) for d in chosen)
    if tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(f"log='tensorboard' needs tensorboardX: {INSTALL_HINT}")
    return tuple(chosen)


class RunInfo(NamedTuple):
    """How one klipjax run appears in a tracker."""

    name: str  # e.g. "klip clip_eps=0.1 seed=3"
    group: str  # its setting, e.g. "klip clip_eps=0.1"
    path: str  # its TensorBoard directory, e.g. "klip,clip_eps=0.1/seed=3"
    config: dict[str, Any]  # Config fields, the run's hyperparameters, its place


def _path_part(text: str) -> str:
    """``text`` as one portable directory name."""
    return re.sub(r"[^\w.,=+-]", "_", text.replace(" ", ","))


def run_infos(config: Config, table: HParams, sweep: str) -> list[RunInfo]:
    """Names, groups, directories and configs of every run of a sweep."""
    keys = ("seed",) + run_table.TRACED_KEYS
    columns = {key: run_table.column(table, key) for key in keys}
    swept = run_table.varying(table)
    static = dataclasses.asdict(config)
    infos, paths = [], {}
    for run in range(run_table.num_runs(table)):
        values = {key: columns[key][run] for key in keys}
        label = tables.setting_label(values, swept)
        path = f"{_path_part(label)}/seed={values['seed']}"
        paths.setdefault(path, []).append(run)
        infos.append(
            RunInfo(
                name=f"{label} seed={values['seed']}",
                group=label,
                path=path,
                config={
                    **static,
                    **values,
                    "run": run,
                    "setting": label,
                    "sweep": sweep,
                },
            )
        )
    # Runs of one setting and seed (a concatenated table) keep apart by index.
    for path, runs in paths.items():
        if len(runs) > 1:
            for run in runs:
                infos[run] = infos[run]._replace(path=f"{path}-run{run}")
    return infos


class _TensorBoardRuns:
    """One tensorboardX ``SummaryWriter`` per run, opened at its first row."""

    def __init__(self, root: Path, infos: list[RunInfo]):
        self.root = root
        self.infos = infos
        self.writers: dict[int, Any] = {}

    def _writer(self, run: int, first_step: int):
        writer = self.writers.get(run)
        if writer is None:
            from tensorboardX import SummaryWriter
            from tensorboardX.summary import hparams

            # purge_step: a resumed sweep hides what the interrupted one wrote
            # from this step on (its rows are written again, identically).
            writer = SummaryWriter(
                str(self.root / self.infos[run].path),
                purge_step=first_step,
                max_queue=TENSORBOARD_QUEUE,
                flush_secs=3600,
                # Event files are named by the second they open in, and TensorBoard
                # reads them in name order: a resume in the same second must sort
                # after (and not overwrite) the file it supersedes.
                filename_suffix=f".{time.time_ns()}",
            )
            hparam_values = {
                key: value if isinstance(value, (bool, int, float, str)) else str(value)
                for key, value in self.infos[run].config.items()
            }
            # The session start alone: TensorBoard's HParams dashboard builds the
            # experiment from every run's session and their scalar tags.
            _, session_start, _ = hparams(hparam_values, {})
            writer.file_writer.add_summary(session_start)
            self.writers[run] = writer
        return writer

    def write(self, run: int, steps: np.ndarray, rows: Mapping[str, np.ndarray]):
        writer = self._writer(run, int(steps[0]))
        names = list(rows)
        columns = np.stack([rows[name] for name in names], axis=1).tolist()
        for step, values in zip(steps.tolist(), columns):
            self._add(writer, step, zip(names, values))

    def summarize(self, run: int, step: int, values: Mapping[str, float]) -> None:
        self._add(self._writer(run, step), step, values.items())

    @staticmethod
    def _add(writer, step: int, values) -> None:
        """One event holding every non-NaN value of a step: ``add_scalar`` per
        value costs about ten times as much."""
        from tensorboardX.proto.summary_pb2 import Summary

        scalars = [
            Summary.Value(tag=name, simple_value=value)
            for name, value in values
            if not math.isnan(value)
        ]
        if scalars:
            writer.file_writer.add_summary(Summary(value=scalars), global_step=step)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class _WandbRuns:
    """One wandb run per klipjax run (``reinit="create_new"``: all open at once),
    created at its first row; any failure turns W&B off for the sweep, with one
    warning, and training goes on."""

    def __init__(
        self,
        options: WandB,
        infos: list[RunInfo],
        root: Path | None,
        *,
        resume: bool,
        warn: bool,
    ):
        self.options = options
        self.warn = warn
        self.infos = infos
        self.root = root
        self.resume = resume
        self.runs: dict[int, Any] = {}
        self.failed: str | None = None
        self.wandb = None
        self.ids: list[str] | None = None
        self.announced = False

    def _fail(self, message: str) -> None:
        self.failed = message
        if self.warn:
            log.warning(
                "W&B logging is off for this sweep, training goes on: %s", message
            )
        self.close()

    def _module(self):
        if self.wandb is None:
            try:
                import wandb
            except ImportError:
                self._fail(f"wandb is not installed ({INSTALL_HINT})")
                return None
            self.wandb = wandb
        return self.wandb

    def _run_ids(self) -> list[str]:
        """Run ids, kept in ``<dir>/wandb/`` so that a resumed sweep continues
        the same W&B runs."""
        if self.ids is not None:
            return self.ids
        path = None if self.root is None else self.root / "wandb" / WANDB_IDS_FILE
        if self.resume and path is not None and path.is_file():
            saved = json.loads(path.read_text())
            if len(saved) == len(self.infos):
                self.ids = saved
                return saved
        token = secrets.token_hex(4)
        self.ids = [f"{token}-{run:04d}" for run in range(len(self.infos))]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.ids))
        return self.ids

    def _settings(self, wandb):
        options = self.options
        wanted = {
            "mode": options.mode or os.environ.get("WANDB_MODE") or None,
            "init_timeout": options.init_timeout,
            "finish_timeout": options.finish_timeout,
            "reinit": "create_new",  # every run of the sweep open at once
            "console": "off",  # leave stdout/stderr (and the progress bar) alone
            "silent": True,  # no banner per run; one line from klipjax instead
            "x_disable_stats": True,  # no system-metrics sampler per run
            "save_code": False,
        }
        known = getattr(wandb.Settings, "model_fields", wanted)
        return wandb.Settings(
            **{k: v for k, v in wanted.items() if v is not None and k in known}
        )

    def _run(self, run: int):
        if self.failed:
            return None
        existing = self.runs.get(run)
        if existing is not None:
            return existing
        wandb = self._module()
        if wandb is None:
            return None
        info = self.infos[run]
        try:
            handle = wandb.init(
                project=self.options.project
                or os.environ.get("WANDB_PROJECT")
                or WANDB_PROJECT,
                entity=self.options.entity,
                dir=None if self.root is None else str(self.root),
                id=self._run_ids()[run],
                resume="allow",
                name=info.name,
                group=f"{info.config['env']} {info.group}",
                tags=list(self.options.tags),
                config=info.config,
                settings=self._settings(wandb),
            )
        # wandb raises many kinds of errors; none may stop training
        except Exception as err:  # noqa: BLE001
            self._fail(f"a run could not start: {type(err).__name__}: {err}")
            return None
        if not self.announced:
            self.announced = True
            if handle.settings.mode in ("offline", "dryrun"):
                where = f"offline in {Path(handle.dir).parent.parent} (wandb sync)"
            else:
                where = f"to {handle.get_project_url()}"
            log.info("W&B: logging %d runs %s", len(self.infos), where)
        self.runs[run] = handle
        return handle

    def write(self, run: int, steps: np.ndarray, rows: Mapping[str, np.ndarray]):
        handle = self._run(run)
        if handle is None:
            return
        names = list(rows)
        columns = np.stack([rows[name] for name in names], axis=1).tolist()
        try:
            for step, values in zip(steps.tolist(), columns):
                row = {n: v for n, v in zip(names, values) if not math.isnan(v)}
                if row:
                    handle.log(row, step=step)
        except Exception as err:  # noqa: BLE001
            self._fail(f"logging failed: {type(err).__name__}: {err}")

    def summarize(self, run: int, step: int, values: Mapping[str, float]) -> None:
        handle = self._run(run)
        if handle is None:
            return
        try:
            handle.summary.update(
                {k: v for k, v in values.items() if not math.isnan(v)}
            )
        except Exception as err:  # noqa: BLE001
            self._fail(f"logging failed: {type(err).__name__}: {err}")

    def flush(self) -> None:
        """wandb streams on its own; nothing to do."""

    def close(self) -> None:
        runs, self.runs = self.runs, {}
        for handle in runs.values():
            try:
                handle.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("W&B: a run did not finish cleanly: %s", err)


class SweepLog:
    """The tracked runs of one sweep: `write` the metrics as they grow, then `close`.

    Args:
        destinations: What `destinations` returned.
        config: The sweep's static settings.
        table: Its run table, ``[runs]``.
        out_dir: The sweep's directory, where logs go by default (None: see
            `TensorBoard` and `WandB`).
        start_update: Updates already logged (a resumed sweep's restored ones).
        sweep: A name for the sweep in each run's config (default: ``out_dir``'s
            name, or the time).
        live: Written while the sweep trains: a W&B failure is a warning (else
            only recorded in ``failures``, for the caller to report).
    """

    def __init__(
        self,
        destinations: Sequence[Destination],
        config: Config,
        table: HParams,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        start_update: int = 0,
        sweep: str | None = None,
        live: bool = True,
    ):
        out = None if out_dir is None else Path(out_dir)
        stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
        sweep = sweep or (out.name if out is not None else f"sweep-{stamp}")
        self.config = config
        self.logged = start_update
        self.infos = run_infos(config, table, sweep)
        self.writers: list[Any] = []
        for destination in destinations:
            if isinstance(destination, TensorBoard):
                root = destination.dir or (
                    out / TENSORBOARD_DIR
                    if out is not None
                    else Path("runs") / f"tensorboard-{stamp}"
                )
                self.writers.append(_TensorBoardRuns(Path(root), self.infos))
                log.info("TensorBoard: tensorboard --logdir %s", root)
            else:
                root = destination.dir or out
                self.writers.append(
                    _WandbRuns(
                        destination,
                        self.infos,
                        None if root is None else Path(root),
                        resume=start_update > 0,
                        warn=live,
                    )
                )

    @property
    def failures(self) -> list[str]:
        """Why a destination wrote nothing (W&B only: TensorBoard errors raise)."""
        return [w.failed for w in self.writers if getattr(w, "failed", None)]

    def write(self, metrics: Mapping[str, np.ndarray | None]) -> None:
        """Writes every run's updates that are new since the last call.

        Args:
            metrics: ``{name: [runs, updates_so_far]}``; ``env_steps`` is the step
                axis, every other numeric metric a series (NaN values skipped).
                Once the last update is in, each run's final return is written
                as ``final_return`` (TensorBoard: a scalar at the last step; W&B:
                the run summary).
        """
        done = int(np.shape(metrics["env_steps"])[1])
        if done <= self.logged:
            return
        new = slice(self.logged, done)
        # Exact step numbers: env_steps itself is float32, inexact past 2**24.
        steps = np.arange(self.logged + 1, done + 1, dtype=np.int64) * (
            self.config.batch_size
        )
        rows = {
            name: np.asarray(values[:, new], np.float64)
            for name, values in metrics.items()
            if name != "env_steps"
            and values is not None
            and np.issubdtype(np.asarray(values).dtype, np.number)
        }
        finished = done >= self.config.num_updates
        scored = {"episode_return", "episodes"} <= set(metrics)
        finals = (
            tables.final_returns(metrics, self.config.env_steps)
            if finished and scored
            else None
        )
        for writer in self.writers:
            for run in range(len(self.infos)):
                writer.write(run, steps, {k: v[run] for k, v in rows.items()})
                if finals is not None:
                    writer.summarize(
                        run, int(steps[-1]), {"final_return": float(finals[run])}
                    )
            writer.flush()
        self.logged = done

    def close(self) -> None:
        """Flushes and closes every writer (wandb: finishes its runs)."""
        for writer in self.writers:
            writer.close()


def log_results(
    results,
    to: str | Destination,
    *,
    run_dir: str | os.PathLike[str] | None = None,
) -> SweepLog:
    """Logs finished results to TensorBoard or W&B, as ``train(..., log=to)``
    would have while they ran (``klipjax log RUN_DIR --to ...``).

    Args:
        results: A ``Results`` (``klipjax.load(run_dir)``).
        to: ``"tensorboard"``, ``"wandb"``, or a `TensorBoard` / `WandB`.
        run_dir: The run directory the results came from: the default place of
            the logs and the sweep's name.

    Returns:
        The closed `SweepLog` (``failures`` says if W&B wrote nothing).
    """
    sweep_log = SweepLog(
        destinations(to),
        results.config,
        results.hparams,
        out_dir=run_dir,
        live=False,
    )
    try:
        sweep_log.write(results.metrics)
    finally:
        sweep_log.close()
    return sweep_log


__all__ = [
    "RunInfo",
    "SweepLog",
    "TensorBoard",
    "WandB",
    "destinations",
    "log_results",
    "run_infos",
]
