"""JAX's persistent compilation cache, on by default for the command line.

A second invocation of the same sweep (same static config, run count and devices)
loads its compiled program from disk instead of compiling it again.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "KLIPJAX_CACHE_DIR"
DEFAULT_CACHE = Path.home() / ".cache" / "klipjax" / "xla"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_hits = [0]
_listening = []


def enable() -> str | None:
    """Points JAX at the cache directory: ``$KLIPJAX_CACHE_DIR``, else
    ``~/.cache/klipjax/xla``; an empty ``KLIPJAX_CACHE_DIR`` turns the cache off.
    Returns the directory in use, or None."""
    directory = os.environ.get(CACHE_ENV, str(DEFAULT_CACHE))
    if not directory:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    if not _listening:  # one listener per process
        _listening.append(True)

        def count(event, **kwargs):
            if event == CACHE_HIT_EVENT:
                _hits[0] += 1

        jax.monitoring.register_event_listener(count)
    return directory


def hits() -> int:
    """Programs loaded from the cache so far in this process."""
    return _hits[0]
