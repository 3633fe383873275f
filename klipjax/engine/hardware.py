"""What a sweep ran on, for its ``summary.json``: timings mean little without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def host_cpu() -> str:
    """The host's CPU model and core count, e.g. ``"AMD EPYC 7B13, 2 cores"``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def describe() -> dict[str, Any]:
    """The accelerator (its kind as JAX names it: ``cpu``, ``NVIDIA H100 80GB
    HBM3``, ...), the host CPU and the jax version of this process."""
    import jax

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "host_cpu": host_cpu(),
        "jax": jax.__version__,
    }


def label(hardware: dict[str, Any] | None, devices: int | None) -> str:
    """One line for tables: ``"2 x cpu (AMD EPYC 7B13, 2 cores)"``, ``"1 x NVIDIA
    H100 80GB HBM3"``; ``"not recorded"`` for a summary written before. A summary
    written before may have been given its ``hardware`` by hand from the run's
    notes, marked ``noted_after_the_run`` (where those notes are): the line says so."""
    if not hardware:
        return "not recorded"
    count = f"{devices} x " if devices else ""
    details = [hardware["host_cpu"]] if hardware["platform"] == "cpu" else []
    if hardware.get("noted_after_the_run"):
        details.append(f"noted after the run, {hardware['noted_after_the_run']}")
    return f"{count}{hardware['device_kind']}" + (
        f" ({'; '.join(details)})" if details else ""
    )
