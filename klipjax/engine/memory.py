"""Memory: what a compiled program needs and what the device has available."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import jax


def program_bytes(compiled) -> int:
    """Bytes a compiled program holds while it runs: its arguments (the runners'
    state), outputs and temporaries, as XLA's memory analysis reports them (0 where
    the backend reports nothing)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return 0
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes  # donated state is written in place
        + analysis.temp_size_in_bytes
    )


def available_bytes() -> int:
    """Free memory of the first local device: the accelerator's own memory, or for
    the CPU backend its share of the host's available memory (the CPU devices,
    one per core, all draw on it)."""
    devices = jax.local_devices()
    stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return _host_available_bytes() // len(devices)


def _host_available_bytes() -> int:
    """The host's available memory (``MemAvailable``, else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def peak_bytes() -> dict[str, int]:
    """Peak memory so far: the process's resident host memory and, where the
    backend reports it, the first device's peak allocation."""
    peaks = {"host": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        peaks["device"] = int(stats["peak_bytes_in_use"])
    return peaks
