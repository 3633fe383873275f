"""Engine-level helpers for tests that need the runner itself (normaliser
statistics, checkpoints): a config mapping trained through ``sweep.build/run``."""

from klipjax.config import files
from klipjax.engine import sweep


def experiment(values: dict) -> files.Experiment:
    return files.from_dict(values)


def build(exp: files.Experiment, **options) -> sweep.SweepProgram:
    return sweep.build(exp.config, exp.hparams, **{**exp.options, **options})


def run(exp: files.Experiment, on_chunk=None, program=None, **kwargs):
    """``(runner, metrics, report)`` of the whole sweep; with no ``parallel_runs``
    given, the memory fitting may advance fewer runs at once (as ``train`` does)."""
    program = program or build(exp)
    if not exp.options.get("parallel_runs"):
        kwargs.setdefault(
            "rebuild", lambda parallel: build(exp, parallel_runs=parallel)
        )
    return sweep.run(program, on_chunk, **kwargs)
