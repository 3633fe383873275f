"""Many processes, one sweep: JAX's multi-controller runtime.

Every process runs the same host loop and the same compiled chunk program on its
own devices (``klipjax.engine.placement``); the chunk program never communicates.
Between chunks the processes agree, in small all-gathers, on what shapes or ends
the program: the memory-fitted group width, a stop requested by a signal, and
that they were all started with the same sweep. With one process every function
here is a local no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from klipjax.config.checks import ConfigError

MANUAL_OPTIONS = "--coordinator HOST:PORT --num-processes N --process-id I"


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts JAX's distributed runtime (a no-op if it is running): with no
    arguments the cluster is detected (SLURM, Open MPI, Cloud TPU, Kubernetes),
    otherwise all three are given. Must come before anything uses a device.

    Raises:
        ConfigError: Partial or unusable arguments, no cluster detected, or a
            backend already in use in this process.
    """
    if jax.distributed.is_initialized():
        return
    manual = (coordinator, num_processes, process_id)
    if any(v is not None for v in manual) and any(v is None for v in manual):
        raise ConfigError(
            f"distributed: give all of {MANUAL_OPTIONS}, or none of them to "
            "detect SLURM, Open MPI, Cloud TPU or Kubernetes"
        )
    # klipjax handles SIGTERM itself (a stop agreed at a chunk boundary); JAX's
    # preemption service would also catch it, in C++, and hold it back.
    preemption = jax.config.jax_enable_preemption_service
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except RuntimeError as err:
        if "must be called before" not in str(err):
            raise
        raise ConfigError(
            "distributed: JAX already uses a device in this process; call "
            "klipjax.distributed.initialize() first, before building a Config or "
            "any JAX computation"
        ) from None
    except (ValueError, TypeError) as err:
        if coordinator is not None:
            raise ConfigError(f"distributed: {err}") from None
        raise ConfigError(
            "distributed: no cluster detected (SLURM, Open MPI, Cloud TPU, "
            f"Kubernetes); start every process with {MANUAL_OPTIONS}"
        ) from None
    finally:
        jax.config.update("jax_enable_preemption_service", preemption)


def is_main() -> bool:
    """Whether this process prints and writes the sweep's files (process 0)."""
    if not jax.distributed.is_initialized():
        # One process: asking JAX would start its backends, before klipjax.envs
        # could give the CPU one device per core (a report-only run, say).
        return True
    return jax.process_index() == 0


def gather_ints(values: Sequence[int]) -> np.ndarray:
    """``[processes, len(values)]``: every process's ``values``, on every process."""
    local = np.asarray(values, np.int32).reshape(1, -1)
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def agree_min(value: int) -> int:
    """The smallest of the processes' ``value``."""
    return int(gather_ints([value]).min())


def agree_max(value: int) -> int:
    """The largest of the processes' ``value``."""
    return int(gather_ints([value]).max())


def check_same(what: str, *parts: Any) -> None:
    """Raises ConfigError unless every process passed equal ``parts`` (compared by
    digest): processes started with different sweeps would train nonsense."""
    if jax.process_count() == 1:
        return
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else repr(part).encode())
    digest = hasher.digest()
    gathered = gather_ints(np.frombuffer(digest[:16], np.int32).tolist())
    differ = [p for p in range(len(gathered)) if (gathered[p] != gathered[0]).any()]
    if differ:
        raise ConfigError(
            f"distributed: process {differ[0]} was started with another {what} than "
            "process 0: start every process with the same arguments"
        )


def barrier(name: str) -> None:
    """Waits until every process gets here."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
    """The tree as numpy arrays of their global shape, on every process (arrays
    spread over several processes are all-gathered)."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


__all__ = [
    "agree_max",
    "agree_min",
    "barrier",
    "check_same",
    "gather_ints",
    "initialize",
    "is_main",
    "to_host",
]
