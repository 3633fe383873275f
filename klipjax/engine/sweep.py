"""A sweep: every run of a table stacked on one leading axis and trained as one program.

Each run carries its own seed inside ``HParams``, so the seeds x hyperparameters grid
is a single flat run axis: ``jit(vmap(run_chunk))`` over ``[runs]``. The host calls
the compiled chunk repeatedly (``run``); that is where progress is reported and
checkpoints are taken. The run axis spans every device of every process
(``klipjax.engine.placement``): each device advances its own slice, all at once or
in groups of ``parallel_runs``, and the programs hold no collectives.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from klipjax import envs
from klipjax.config import run_table
from klipjax.config.checks import ConfigError
from klipjax.config.settings import Config, HParams
from klipjax.core.variants import LOSSES
from klipjax.engine import compiler, distributed, memory, placement
from klipjax.engine.trainer import Evaluation, Metrics, Runner, Trainer, make_trainer
from klipjax.envs import brax_adapter as brax_envs

log = logging.getLogger("klipjax")
DEFAULT_CHUNKS = 20  # progress/checkpoint granularity: about this many host calls
MEMORY_FRACTION = 0.8  # of the memory available when a sweep starts
# Per device. On a CPU, wider vmaps stop paying once the runs' working set leaves the caches:
# the CartPole preset ran at 81k env-steps/s with 64 runs at a time against 71k with
# all 256 at once (2-core x86-64, docs/benchmarks.md). Accelerators take every run.
CPU_PARALLEL_RUNS = 64
# Per-update columns filled between chunks (NaN where no evaluation was made): the
# mean return of an evaluation with sampled actions, and with the most likely ones.
EVAL_METRICS = ("eval_return", "eval_return_det")
METRIC_NAMES = Metrics._fields + EVAL_METRICS
# Updates in a sweep's first call of its chunk program: its end shows the first
# progress and times the compile apart from the steady speed (any count runs on
# the one compiled program).
FIRST_CALL_UPDATES = 1


def choose_chunk(num_updates: int, requested: int | None = None, align: int = 0) -> int:
    """Updates per jitted call.

    The requested size if given; else, near ``num_updates / DEFAULT_CHUNKS`` (within a
    factor of 2), a divisor of ``num_updates`` (chunks of equal length), or failing
    one the size whose last chunk falls the fewest updates short of a whole one (the
    last call makes only the updates left). With ``align`` (the checkpoint interval)
    the chunk also divides ``align``, so checkpoints fall on chunk boundaries.
    """
    if requested is not None:
        return max(1, min(requested, num_updates))
    target = max(1, round(num_updates / DEFAULT_CHUNKS))
    if align:
        return max(
            size for size in range(1, min(target, align) + 1) if align % size == 0
        )
    sizes = range(max(1, -(-target // 2)), min(2 * target, num_updates) + 1)

    def short(size: int) -> int:  # updates the last chunk lacks
        return -num_updates % size

    # the fullest last chunk first, then the size nearest the target
    return min(sizes, key=lambda size: (short(size), abs(size - target)))


class SweepProgram(NamedTuple):
    """The compiled pieces of a sweep and its run table (on the devices)."""

    config: Config
    hparams: HParams  # [padded_runs] global arrays over the run axis
    init: Callable[[HParams], Runner]
    run_chunk: Callable[[Runner, HParams, jax.Array], tuple[Runner, Metrics]]
    evaluate: Callable[..., Evaluation]  # (runner, hparams, episodes=...) per run
    chunk_updates: int
    num_chunks: int
    parallel_runs: int  # runs each device advances at once
    placement: placement.Placement

    @property
    def num_runs(self) -> int:
        """The table's runs (the padding excluded)."""
        return self.placement.num_runs

    def updates(self, count: int) -> jax.Array:
        """``run_chunk``'s last argument: ``count`` (at most ``chunk_updates``)
        updates of every run, ``run_chunk(runner, hparams, updates(count))``."""
        if not isinstance(count, (int, np.integer)) or not (
            0 <= count <= self.chunk_updates
        ):
            raise ValueError(
                f"updates per call: expected an int from 0 to "
                f"chunk_updates={self.chunk_updates}, got {count!r}"
            )
        return placement.put_shared(np.int32(count), self.placement)


def build(
    config: Config,
    table: HParams,
    *,
    chunk_updates: int | None = None,
    checkpoint_every: int = 0,
    parallel_runs: int = 0,
    trainer: Trainer | None = None,
) -> SweepProgram:
    """Traces nothing yet: returns jitted, vmapped ``init`` and ``run_chunk``.

    ``parallel_runs`` runs are advanced at once on each device (0: all of them on
    an accelerator, ``CPU_PARALLEL_RUNS`` on a CPU); a run's float rounding depends
    on that width, not on the other runs or on which device or process trains it
    (docs/distributed.md). A given ``trainer`` must compile every code path the
    table's runs take.
    """
    num_runs = run_table.num_runs(table)
    paths = run_table.code_paths(table)
    if trainer is not None and not trainer.paths.covers(paths):
        raise ConfigError(
            f"the trainer was compiled for {trainer.paths} but the runs take {paths}"
        )
    align = math.gcd(checkpoint_every, config.eval_every)
    chunk = choose_chunk(config.num_updates, chunk_updates, align)
    if config.eval_every and config.eval_every % chunk:
        raise ConfigError(
            f"eval_every={config.eval_every}: evaluations fall between compiled "
            f"chunks, so it must be a multiple of chunk_updates={chunk}"
        )
    layout = placement.place(num_runs)
    per_device = layout.runs_per_device
    default = CPU_PARALLEL_RUNS if jax.default_backend() == "cpu" else per_device
    safe = brax_envs.safe_step_batch(config.env)
    if safe is not None:
        default = max(1, safe // config.num_envs)
        at_once = (parallel_runs or 1) * config.num_envs
        if at_once > safe:
            log.warning(
                "%s: %d envs stepped at once per CPU device (parallel_runs x "
                "num_envs); above %d, jaxlib's batched LAPACK calls in Brax's "
                "physics can deadlock on a CPU (README, Brax)",
                config.env,
                at_once,
                safe,
            )
    parallel = min(parallel_runs or default, per_device)
    distributed.check_same(
        "sweep (config, run table or options)",
        config,
        b"".join(np.asarray(column).tobytes() for column in table),
        (chunk_updates, checkpoint_every, parallel_runs, chunk, parallel),
    )
    if trainer is None:
        # When and how long to evaluate is the host's business: the programs are
        # the same for any evaluation schedule, so it is not part of the key.
        program_config = dataclasses.replace(
            config, eval_every=0, eval_episodes=1, final_eval_episodes=0
        )
        init, run_all, evaluate = _cached_program(
            program_config,
            paths,
            chunk,
            parallel,
            layout.mesh,
            per_device,
            make_trainer,
            envs.factory_of(config.env),
        )
    else:
        init, run_all, evaluate = _jitted_program(
            trainer, chunk, parallel, layout.mesh, per_device
        )
    hparams = placement.put(placement.padded_table(table, layout), layout)
    return SweepProgram(
        config=config,
        hparams=hparams,
        init=init,
        run_chunk=run_all,
        evaluate=evaluate,
        chunk_updates=chunk,
        num_chunks=-(-config.num_updates // chunk),
        parallel_runs=parallel,
        placement=layout,
    )


@functools.lru_cache(maxsize=8)
def _cached_program(
    config, paths, chunk, parallel, mesh, runs_per_device, factory, env_factory
):
    """The jitted pieces of a sweep shape, kept so that a later sweep of the same
    shape in this process (new values, same config) reuses their compilation.
    ``env_factory`` is part of the key only: an id registered anew is a new env."""
    del env_factory
    return _jitted_program(
        factory(config, paths), chunk, parallel, mesh, runs_per_device
    )


def _jitted_program(trainer: Trainer, chunk, parallel, mesh, runs_per_device):
    """``init``, ``run_chunk`` and ``evaluate`` over the whole run axis: each a
    per-device body (``runs_per_device`` runs) under ``shard_map``."""

    def run_chunk(runner, hp, updates):
        return trainer.run_chunk(runner, hp, chunk, updates)

    # ``updates``, how many this call makes, is one count for every run.
    run_runs = jax.vmap(run_chunk, in_axes=(0, 0, None))
    if parallel < runs_per_device:
        run_device = _in_groups(run_runs, parallel, runs_per_device)
    else:
        run_device = run_runs

    def per_device(fn, shared=None):
        return placement.per_device(fn, mesh, shared)

    safe = brax_envs.safe_step_batch(trainer.policy_spec.env)

    def evaluate(runner, hp, *, episodes):
        def on_device(runner, hp):
            slots = 2 * episodes  # per run: both modes
            if safe is None:
                # Every run at once: an evaluation holds no rollout buffers.
                one = functools.partial(trainer.evaluate, episodes=episodes)
                return jax.vmap(one)(runner, hp)
            # An env with a bound on its batch (Brax on a CPU): as many runs at a
            # time as it allows, and the slots of one run in batches if needed.
            one = functools.partial(
                trainer.evaluate,
                episodes=episodes,
                env_batch=safe if slots > safe else None,
            )
            return jax.lax.map(
                lambda args: one(*args), (runner, hp), batch_size=max(1, safe // slots)
            )

        return per_device(on_device)(runner, hp)

    return (
        compiler.jit(per_device(jax.vmap(trainer.init))),
        compiler.jit(
            per_device(run_device, shared=(False, False, True)), donate_argnums=0
        ),
        compiler.jit(evaluate, static_argnames="episodes"),
    )


def _in_groups(run_group: Callable, parallel: int, runs: int) -> Callable:
    """``run_group(runner, hp, updates)`` (over ``parallel`` runs) applied to ``runs``
    runs one group after another inside the program: the transient memory
    (rollouts, minibatches) is that of one group. Every group is exactly
    ``parallel`` wide (the last one filled up with copies of the first runs, dropped
    after), so a run's rounding depends on ``parallel`` alone, not on how many runs
    a device holds."""
    groups = -(-runs // parallel)
    fill = groups * parallel - runs

    def in_groups(x):
        x = jnp.concatenate([x, x[:fill]]) if fill else x
        return x.reshape((groups, parallel) + x.shape[1:])

    def back(x):
        return x.reshape((groups * parallel,) + x.shape[2:])[:runs]

    def run_all(runner, hp, updates):
        out = jax.lax.map(
            lambda group: run_group(*group, updates),
            jax.tree.map(in_groups, (runner, hp)),
        )
        return jax.tree.map(back, out)

    return run_all


def compile_to_fit(
    program: SweepProgram,
    runner: Runner,
    rebuild: Callable[[int], SweepProgram] | None,
    after_lowering: Callable[[], Any] | None = None,
) -> tuple[SweepProgram, int]:
    """Compiles the chunk program for ``runner`` (arrays or shapes, laid over the
    run axis); if the program needs more than ``MEMORY_FRACTION`` of the available
    memory and ``rebuild(parallel_runs)`` is given (the user left ``parallel_runs``
    to klipjax), rebuilds it to advance proportionally fewer runs at once (the
    fewest any process asks for: all must run one program). ``after_lowering`` is
    called once the program is traced, before XLA compiles it. Returns the program
    (its ``run_chunk`` now the compiled executable) and its memory need in bytes
    (per device)."""
    updates = program.updates(program.chunk_updates)  # any count: one program
    lowered = program.run_chunk.lower(runner, program.hparams, updates)
    if after_lowering is not None:
        after_lowering()
    compiled = lowered.compile()
    need = memory.program_bytes(compiled)
    if rebuild is not None and program.parallel_runs > 1:
        budget = MEMORY_FRACTION * memory.available_bytes()
        fitting = program.parallel_runs
        if need > budget:
            fitting = max(1, int(program.parallel_runs * budget / need))
        fitting = distributed.agree_min(fitting)
        if fitting < program.parallel_runs:
            program = rebuild(fitting)
            compiled = program.run_chunk.lower(
                runner, program.hparams, updates
            ).compile()
            need = memory.program_bytes(compiled)
    return program._replace(run_chunk=compiled), need


class ChunkReport(NamedTuple):
    """What the host learns after each chunk (for progress bars and checkpoints)."""

    chunks_done: int
    updates_done: int
    env_steps_done: int  # summed over runs
    seconds: float
    compile_seconds: float
    steps_per_second: float | None  # all runs, after the compiling first call
    parallel_runs: int = 0  # runs advanced at once, over all devices
    program_bytes: int = 0  # the compiled chunk's memory (per device): state,
    # outputs, temporaries; 0 if this process compiled none
    eval_seconds: float = 0.0  # spent evaluating (compiles included), not in the rate


def run(
    program: SweepProgram,
    on_chunk: Callable[[ChunkReport, Runner, dict[str, np.ndarray]], bool | None]
    | None = None,
    *,
    runner: Runner | None = None,
    metrics: dict[str, np.ndarray] | None = None,
    start_chunk: int = 0,
    rebuild: Callable[[int], SweepProgram] | None = None,
    before_final_evaluation: Callable[
        [ChunkReport, Runner, dict[str, np.ndarray]], None
    ]
    | None = None,
    on_progress: Callable[[ChunkReport], None] | None = None,
) -> tuple[Runner, dict[str, np.ndarray], ChunkReport]:
    """Trains every run of the program; returns the final runner (``[padded_runs,
    ...]`` over the run axis, see ``placement``), the table's ``[runs, updates]``
    metrics (numpy, on every process) and the last report.
    ``runner``/``metrics``/``start_chunk`` continue an interrupted sweep;
    ``rebuild`` lets the memory fitting advance fewer runs at once (see
    ``compile_to_fit``). ``on_chunk`` sees each chunk's result; returning True
    stops after that chunk (every process must return the same).
    ``before_final_evaluation`` sees the trained sweep before its final evaluation
    (without it), to checkpoint it: a crash there then costs only the evaluation,
    which a resume from that checkpoint runs alone. ``on_progress`` sees the report
    after the first call's ``FIRST_CALL_UPDATES`` updates, inside the first chunk
    (for a progress bar: no chunk ends there)."""
    config = program.config
    num_runs = program.num_runs
    distributed.check_same("checkpoint", start_chunk)
    start = time.perf_counter()
    compile_seconds = eval_seconds = 0.0
    # XLA compiles a program on one core: the initial runner's program compiles and
    # runs on a thread while the chunk program compiles, and the evaluation
    # programs start compiling once the chunk program is traced (tracing is Python,
    # which threads would only take turns at).
    sharding = program.placement.sharding
    if runner is None:
        lowered_init = program.init.lower(program.hparams)
        shapes = _on_run_axis(lowered_init.out_info, sharding)
        initial = _in_background(
            "klipjax-init", lambda: lowered_init.compile()(program.hparams)
        )
    else:
        runner = jax.device_put(runner, sharding)
        shapes, initial = _on_run_axis(runner, sharding), None
    # A sweep resumed from its checkpoint before the final evaluation runs just that,
    # so it compiles no chunk program (on Brax, minutes of a CPU's time).
    final_missing = final_evaluation_missing(program, metrics, start_chunk)
    evaluations: dict[int, concurrent.futures.Future] = {}
    if final_missing:
        evaluations.update(
            _compile_evaluations_aside(program, shapes, program.num_chunks - 1)
        )
        program_bytes = 0  # not measured: no chunk program
    else:
        program, program_bytes = compile_to_fit(
            program,
            shapes,
            rebuild,
            after_lowering=lambda: evaluations.update(
                _compile_evaluations_aside(program, shapes, start_chunk)
            ),
        )
    if initial is not None:
        runner = jax.device_put(initial.result(), sharding)
    parallel = min(program.parallel_runs * program.placement.mesh.size, num_runs)
    collected = [] if metrics is None else [metrics]
    chunks = []
    steady_from = None  # updates done when the first (compiling) call returned
    counts: dict[int, jax.Array] = {}

    def progress(chunks_done: int, updates: int) -> ChunkReport:
        seconds = time.perf_counter() - start
        steady = 0 if steady_from is None else updates - steady_from
        return ChunkReport(
            chunks_done=chunks_done,
            updates_done=updates,
            env_steps_done=updates * config.batch_size * num_runs,
            seconds=seconds,
            compile_seconds=compile_seconds,
            steps_per_second=steady
            * config.batch_size
            * num_runs
            / (seconds - compile_seconds - eval_seconds)
            if steady
            else None,
            parallel_runs=parallel,
            program_bytes=program_bytes,
            eval_seconds=eval_seconds,
        )

    report = progress(
        start_chunk, min(start_chunk * program.chunk_updates, config.num_updates)
    )
    if final_missing:
        evaluated = time.perf_counter()
        metrics = {name: np.array(column) for name, column in metrics.items()}
        collected = [metrics]
        _evaluate_into(metrics, program, evaluations, runner, config.num_updates, -1)
        eval_seconds += time.perf_counter() - evaluated
        report = progress(start_chunk, report.updates_done)
        if on_chunk is not None:  # the last chunk's report, which the crash cut off
            on_chunk(report, runner, metrics)

    def call(updates: int) -> Metrics:
        """``updates`` updates of every run (one compiled program for any count)."""
        nonlocal runner
        if updates not in counts:
            counts[updates] = program.updates(updates)
        runner, out = program.run_chunk(runner, program.hparams, counts[updates])
        return placement.to_host(out, program.placement)

    for index in range(start_chunk, program.num_chunks):
        begin = index * program.chunk_updates
        size = min(program.chunk_updates, config.num_updates - begin)
        if steady_from is None:
            # Setup, compiling and a first short call; the rest runs at steady speed.
            first = min(FIRST_CALL_UPDATES, size)
            chunk_metrics = call(first)
            compile_seconds = time.perf_counter() - start
            steady_from = begin + first
            if first < size:
                if on_progress is not None:
                    on_progress(progress(index, steady_from))
                rest = call(size - first)
                chunk_metrics = _joined(chunk_metrics, rest, first)
        else:
            chunk_metrics = call(size)
        updates = begin + size
        columns = _chunk_columns(chunk_metrics)
        chunks.append(columns)
        final = updates >= config.num_updates
        if (
            final
            and before_final_evaluation is not None
            and evaluation_episodes(config, updates)
        ):
            before_final_evaluation(
                progress(index + 1, updates),
                runner,
                _merge(collected, chunks, config.num_updates),
            )
        evaluated = time.perf_counter()
        last = (updates - 1) % program.chunk_updates
        _evaluate_into(columns, program, evaluations, runner, updates, last)
        eval_seconds += time.perf_counter() - evaluated
        report = progress(index + 1, updates)
        if on_chunk is not None and on_chunk(
            report, runner, _merge(collected, chunks, config.num_updates)
        ):
            break
    return runner, _merge(collected, chunks, config.num_updates), report


def evaluation_episodes(config: Config, updates_done: int) -> int:
    """Episodes per mode of the evaluation due after ``updates_done`` updates (0:
    none): the final one after the last update, else a periodic one."""
    if updates_done >= config.num_updates and config.final_eval_episodes:
        return config.final_eval_episodes
    if config.eval_every and updates_done % config.eval_every == 0:
        return config.eval_episodes
    return 0


def _on_run_axis(tree: Any, sharding) -> Any:
    """Shapes and dtypes of ``tree``'s leaves (all ``[padded_runs, ...]``), laid
    over the run axis."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def _in_background(name: str, work: Callable[[], Any]) -> concurrent.futures.Future:
    """``work()`` on a thread of its own; the thread ends when the work is done."""
    pool = concurrent.futures.ThreadPoolExecutor(1, name)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


def _compile_evaluations_aside(
    program: SweepProgram, shapes: Runner, start_chunk: int
) -> dict[int, concurrent.futures.Future]:
    """Compiles, on a thread of its own, the evaluation programs the sweep will
    call (one per episode count), while the chunk program compiles and runs: XLA
    compiles a program on one core, so on two or more the evaluation's compile
    costs the sweep almost nothing. Returns the compiled programs to come."""
    config = program.config
    boundaries = (
        min((index + 1) * program.chunk_updates, config.num_updates)
        for index in range(start_chunk, program.num_chunks)
    )
    counts = sorted({evaluation_episodes(config, u) for u in boundaries} - {0})
    if not counts:
        return {}

    def compile_one(episodes: int):
        lowered = program.evaluate.lower(shapes, program.hparams, episodes=episodes)
        return lowered.compile()

    return {
        episodes: _in_background(
            "klipjax-eval-compile", functools.partial(compile_one, episodes)
        )
        for episodes in counts
    }


def _chunk_columns(chunk_metrics: Metrics) -> dict[str, np.ndarray]:
    """A chunk's ``{name: [runs, chunk]}`` metrics, its ``EVAL_METRICS`` not yet
    evaluated (NaN)."""
    columns = {
        name: np.asarray(getattr(chunk_metrics, name)) for name in Metrics._fields
    }
    shape = columns["env_steps"].shape
    for name in EVAL_METRICS:
        columns[name] = np.full(shape, np.nan, np.float32)
    return columns


def _evaluate_into(
    columns: dict[str, np.ndarray],
    program: SweepProgram,
    evaluations: dict[int, concurrent.futures.Future],
    runner: Runner,
    updates_done: int,
    column: int,
) -> None:
    """Runs the evaluation due after ``updates_done`` updates (if any) and writes it
    into the ``EVAL_METRICS`` columns of that update, ``column`` of ``columns`` (a
    chunk's ``[runs, chunk]`` or the whole ``[runs, updates]`` metrics)."""
    episodes = evaluation_episodes(program.config, updates_done)
    if not episodes:
        return
    evaluate = evaluations[episodes].result()  # compiled beside the training
    result = placement.to_host(evaluate(runner, program.hparams), program.placement)
    columns["eval_return"][:, column] = result.stochastic
    columns["eval_return_det"][:, column] = result.deterministic


def final_evaluation_missing(
    program: SweepProgram, metrics: dict[str, np.ndarray] | None, start_chunk: int
) -> bool:
    """The sweep resumes trained, from a checkpoint written before its final
    evaluation (``run`` then runs just that evaluation, and reports it to
    ``on_chunk`` as its last chunk)."""
    config = program.config
    if start_chunk < program.num_chunks or metrics is None:
        return False
    if not evaluation_episodes(config, config.num_updates):
        return False
    return bool(np.isnan(metrics["eval_return_det"][:, config.num_updates - 1]).all())


def _joined(head: Metrics, tail: Metrics, split: int) -> Metrics:
    """One chunk's ``[runs, chunk]`` metrics from two calls: ``head``'s first
    ``split`` updates, then ``tail``'s."""
    return jax.tree.map(
        lambda h, t: np.concatenate([h[:, :split], t[:, : h.shape[1] - split]], 1),
        head,
        tail,
    )


def _merge(previous, chunks, num_updates) -> dict[str, np.ndarray]:
    """Concatenates chunk metrics into ``{name: [runs, updates]}``, tail trimmed."""
    merged = {}
    for name in METRIC_NAMES:
        parts = [p[name] for p in (*previous, *chunks)]
        merged[name] = np.concatenate(parts, axis=1)[:, :num_updates] if parts else None
    return merged


def params_sha256(params: Any) -> list[str]:
    """Per run, the SHA-256 of the parameters' bytes (tree order, float32);
    ``params`` is stacked ``[runs, ...]``."""
    leaves = jax.tree.leaves(distributed.to_host(params))
    hashes = []
    for run in range(leaves[0].shape[0]):
        digest = hashlib.sha256()
        for leaf in leaves:
            digest.update(np.ascontiguousarray(leaf[run]).tobytes())
        hashes.append(digest.hexdigest())
    return hashes


def max_param_difference(params: Any, run_a: int, run_b: int) -> float:
    """Largest absolute difference between two runs' parameters."""
    leaves = jax.tree.leaves(distributed.to_host(params))
    return float(max(np.max(np.abs(x[run_a] - x[run_b])) for x in leaves))


def identity_pairs(table: HParams) -> list[tuple[int, int]]:
    """``(ppo_clip run, klip run)`` index pairs that differ only in the loss: the
    theorem says their training is identical."""
    clip, klip = LOSSES.index("ppo_clip"), LOSSES.index("klip")
    rest = np.stack(
        [
            np.asarray(column, np.float64)
            for f, column in zip(HParams._fields, table)
            if f != "loss_id"
        ],
        axis=1,
    )
    klip_runs = {rest[i].tobytes(): i for i in np.flatnonzero(table.loss_id == klip)}
    return [
        (int(i), klip_runs[rest[i].tobytes()])
        for i in np.flatnonzero(table.loss_id == clip)
        if rest[i].tobytes() in klip_runs
    ]


def identity_differences(table: HParams, params: Any) -> dict:
    """Compares the parameters of every ``identity_pairs`` pair."""
    pairs = identity_pairs(table)
    if not pairs:
        return {"pairs": 0}
    hashes = params_sha256(params)
    return {
        "pairs": len(pairs),
        "max_param_difference": max(
            max_param_difference(params, a, b) for a, b in pairs
        ),
        "identical_params": all(hashes[a] == hashes[b] for a, b in pairs),
    }


__all__ = [
    "ChunkReport",
    "SweepProgram",
    "build",
    "choose_chunk",
    "identity_differences",
    "identity_pairs",
    "max_param_difference",
    "params_sha256",
    "run",
]
