"""Threefry-2x32 as straight-line code in klipjax's CPU programs.

jax lowers its random-bit hash (Threefry-2x32, 20 rounds: Salmon et al., "Parallel
random numbers: as easy as 1, 2, 3", 2011) on CPU as a five-step loop. A sweep's
chunk program draws random bits in a dozen places (key splits, the rollout's
noise, the env's resets, the shuffles), and each loop brings its own kernels and
copies of the loop state: the CartPole chunk program had 14 while loops and 298
copies, and 5 and 154 as straight-line code, which compiled in 6.1 CPU-seconds
against 6.4 (medians of four alternations on a 2-core x86-64 CPU) and ran as fast
(docs/benchmarks.md). The hash is the same, so every random number, and every
result, is unchanged (tests/test_threefry.py).
"""

from __future__ import annotations

import threading

import jax.numpy as jnp
import numpy as np

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
PARITY = 0x1BD11BDA  # the key schedule's third word is key0 ^ key1 ^ PARITY
_installed = False
_lock = threading.Lock()


def threefry2x32(key0, key1, x0, x1):
    """The Threefry-2x32 hash of the counter words ``(x0, x1)`` under the key
    ``(key0, key1)`` (uint32 arrays, broadcast together): 20 rounds, the key
    injected every 4."""
    key0, key1, x0, x1 = jnp.broadcast_arrays(
        *(jnp.asarray(a, jnp.uint32) for a in (key0, key1, x0, x1))
    )
    schedule = (key0, key1, key0 ^ key1 ^ np.uint32(PARITY))
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for block in range(5):
        for rotation in ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))
            x1 = x1 ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def install_cpu_lowering() -> None:
    """Lowers jax's Threefry primitive with ``threefry2x32`` on CPU from now on
    (for every program of the process: the numbers are jax's own). Idempotent;
    if this jax has no such primitive, its own lowering stays."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        try:
            from jax.extend.random import threefry2x32_p
            from jax.interpreters import mlir
        except ImportError:
            return
        mlir.register_lowering(
            threefry2x32_p,
            mlir.lower_fun(threefry2x32, multiple_results=True),
            platform="cpu",
        )
