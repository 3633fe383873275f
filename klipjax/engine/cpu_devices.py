"""One JAX CPU device per core, so that a sweep on a CPU uses every core.

XLA runs the program of one device on about one core (these programs' small matrix
products do not spread over threads), and JAX's CPU backend has a single device
unless told otherwise. With one device per core, the run axis
(``klipjax.engine.placement``) lays a sweep's runs over all of them. On a 2-core
x86-64 VM the CartPole preset trained 8 runs at 68.4k env-steps/s on two devices
against 34.8k on one, and 64 runs at 69.7k against 39.0k (docs/benchmarks.md).

The count can only be set before JAX starts its backends. ``configure`` runs when
``klipjax.envs`` is first imported (a ``Config``, ``train``, the command line), just
before gymnax, whose import starts them; ``import klipjax`` alone changes nothing,
so code that imports klipjax only for its losses keeps JAX's defaults. A count the
user chose is left alone: ``KLIPJAX_CPU_DEVICES``, JAX's ``jax_num_cpu_devices``
(or ``JAX_NUM_CPU_DEVICES``), or ``--xla_force_host_platform_device_count`` in
``XLA_FLAGS``.

A run's float rounding depends on the number of runs each device advances at once
(docs/distributed.md), so the same sweep can give other numbers on a machine with
another core count; ``parallel_runs`` fixes that width.
"""

from __future__ import annotations

import logging
import os

import jax

from klipjax.config.checks import ConfigError

ENV = "KLIPJAX_CPU_DEVICES"
XLA_COUNT_FLAG = "xla_force_host_platform_device_count"
log = logging.getLogger("klipjax")
_warned: list[bool] = []  # the warning below is given once per process


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def requested() -> int | None:
    """``KLIPJAX_CPU_DEVICES`` as a count, None if unset or empty.

    Raises:
        ConfigError: Not a whole number >= 1.
    """
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{ENV}={value!r}: expected a whole number >= 1")
    return int(value)


def configure() -> int | None:
    """Gives JAX's CPU backend one device per usable core (or ``KLIPJAX_CPU_DEVICES``)
    unless the user set a count through JAX. Returns the count set, None if it was
    left alone. If the backend is already running with fewer devices, it stays as
    it is, and a warning says so once."""
    wanted = requested()
    if XLA_COUNT_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    current = jax.config.jax_num_cpu_devices
    if current != -1 and (wanted is None or current == wanted):
        return None  # the user's count, or ours from an earlier call
    wanted = wanted or usable_cores()
    try:
        jax.config.update("jax_num_cpu_devices", wanted)
    except RuntimeError:  # the backends are up: their devices are fixed
        have = len(jax.devices("cpu"))
        if jax.default_backend() == "cpu" and have < wanted and not _warned:
            _warned.append(True)
            log.warning(
                "JAX's CPU backend was started with %d device(s) before klipjax "
                "could give it %d: CPU sweeps in this process use "
                "%d core(s). Import klipjax.envs (or set %s) before anything "
                "else uses JAX.",
                have,
                wanted,
                have,
                ENV,
            )
        return None
    return wanted


__all__ = ["ENV", "configure", "requested", "usable_cores"]
