"""The XLA options klipjax compiles its programs with.

On a CPU, XLA's default LLVM optimisation level spends most of a sweep's compile on
code generation that the small matrix products of these programs do not repay:
level 1 compiled the CartPole chunk program in about 60% of the time and ran it
as fast (docs/benchmarks.md). XLA's CPU pass that splits each large reduction into
a windowed partial reduction and a final one is skipped: it made two kernels of each
of the ~130 such reductions (bias gradients, norms, statistics), and without it the
chunk program compiled in about 13% less CPU time and ran 2-6% faster. The sums keep
XLA's vectorised accumulation, in another order: float32 results moved at rounding
level against klipjax versions before 2026-11-30, and stay bit-identical from one
invocation to the next. Accelerators keep XLA's defaults; an option given in
``XLA_FLAGS`` is left alone. On a CPU the random-bit hash is also lowered as
straight-line code (``klipjax.engine.threefry``).
"""

from __future__ import annotations

import os

import jax

from klipjax.engine import threefry

CPU_OPTIMIZATION_LEVEL = 1
LEVEL_FLAG = "xla_backend_optimization_level"
DISABLED_PASSES_FLAG = "xla_disable_hlo_passes"
CPU_DISABLED_PASSES = "tree_reduction_rewriter"


def options() -> dict[str, int | str]:
    """``compiler_options`` for ``jax.jit`` on the default backend."""
    if jax.default_backend() != "cpu":
        return {}
    chosen = os.environ.get("XLA_FLAGS", "")
    cpu_options = {
        LEVEL_FLAG: CPU_OPTIMIZATION_LEVEL,
        DISABLED_PASSES_FLAG: CPU_DISABLED_PASSES,
    }
    return {flag: value for flag, value in cpu_options.items() if flag not in chosen}


def jit(fn, **kwargs):
    """``jax.jit`` with klipjax's compiler options."""
    if jax.default_backend() == "cpu":
        threefry.install_cpu_lowering()
    return jax.jit(fn, compiler_options=options() or None, **kwargs)
