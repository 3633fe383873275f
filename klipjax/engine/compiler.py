"""The XLA options klipjax compiles its programs with.

On a CPU, XLA's default LLVM optimisation level spends most of a sweep's compile on
code generation that the small matrix products of these programs do not repay:
level 1 compiled the CartPole chunk program in about 60% of the time and ran it
as fast (docs/benchmarks.md). Accelerators keep XLA's defaults. A level given in
``XLA_FLAGS`` is left alone. On a CPU the random-bit hash is also lowered as
straight-line code (``klipjax.engine.threefry``).
"""

from __future__ import annotations

import os

import jax

from klipjax.engine import threefry

CPU_OPTIMIZATION_LEVEL = 1
LEVEL_FLAG = "xla_backend_optimization_level"


def options() -> dict[str, int]:
    """``compiler_options`` for ``jax.jit`` on the default backend."""
    if jax.default_backend() != "cpu" or LEVEL_FLAG in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {LEVEL_FLAG: CPU_OPTIMIZATION_LEVEL}


def jit(fn, **kwargs):
    """``jax.jit`` with klipjax's compiler options."""
    if jax.default_backend() == "cpu":
        threefry.install_cpu_lowering()
    return jax.jit(fn, compiler_options=options() or None, **kwargs)
