"""The paper's grid on an accelerator, within a time budget, with its timings.

    python scripts/accelerator_grid.py --out DIR [--budget SECONDS]
        [--groups cartpole,acrobot,...] [--throughput-runs 1024] [--no-throughput]

Made for a borrowed GPU whose time is short: everything runs through the commands a
user has (``klipjax train`` and ``klipjax reproduce``), each in a child process
whose time is capped by what is left of ``--budget``, and a group stopped by the cap
is stopped with SIGTERM, so it checkpoints; the same command with the same ``--out``
continues it (and skips what is complete). In order:

1. Throughput: the CartPole preset's four variants x ``--throughput-runs / 4``
   seeds (1024 runs by default) on the accelerator, then the same sweep on the
   host's CPU (``JAX_PLATFORMS=cpu``), both for a few chunks: env-steps/s after
   compiling (``summary.json``), side by side, and their ratio.
2. The groups, cheapest first (the default order below): each through
   ``klipjax reproduce GROUP --out DIR``, which writes the group and REPORT.md; the
   wide-parallel Brax presets last, through ``klipjax train PRESET --out DIR/NAME``.

It writes ``DIR/accelerator_grid.md`` (the tables) and ``DIR/accelerator_grid.json``:
per group its state (complete, stopped, not started), wall, compile and evaluation
seconds, env-steps/s, peak device and host memory and the hardware, all read from the
groups' own ``summary.json``. Nothing is asserted: figures are written down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# Cheapest first, so a short budget still fills the table: the MinAtar and classic
# groups take minutes on an accelerator, the Brax groups 1M sequential physics steps
# per run (humanoid 10M), the wide presets last.
DEFAULT_GROUPS = (
    "cartpole",
    "acrobot",
    "pendulum",
    "mountain_car_continuous",
    "breakout",
    "space_invaders",
    "cartpole_clip_eps",
    "cartpole_beta",
    "cartpole_kl_target",
    "cartpole_soft",
    "brax_hopper",
    "brax_walker2d",
    "brax_ant",
    "brax_halfcheetah",
    "brax_humanoid",
    "brax_ant_wide",
    "brax_humanoid_wide",
)
# Presets for accelerators (many parallel envs per run), outside `reproduce`'s groups.
WIDE_PRESETS = ("brax_ant_wide", "brax_humanoid_wide")
PRESETS = Path(__file__).resolve().parents[1] / "klipjax" / "presets"
THROUGHPUT_UPDATES = 42  # 3 chunks of the default 14 updates: two steady ones
STOP_GRACE = 120  # seconds a stopped child gets to write its checkpoint
SUMMARY_KEYS = (
    "wall_seconds",
    "compile_seconds",
    "eval_seconds",
    "env_steps_per_second",
    "parallel_runs",
    "devices",
    "hardware",
    "memory_mb",
    "complete",
    "resumes",
)


class Clock:
    """What is left of the budget."""

    def __init__(self, budget: float):
        self.end = time.monotonic() + budget

    def left(self) -> float:
        return self.end - time.monotonic()


def klipjax_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "klipjax", *args]


def run_capped(command: list[str], clock: Clock, log: Path, env=None) -> str:
    """Runs ``command`` until it ends or the budget does (then SIGTERM: klipjax
    checkpoints and exits); returns ``"complete"``, ``"stopped"`` or
    ``"failed (exit N)"``. Output goes to ``log``."""
    with log.open("a") as sink:
        child = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env
        )
        try:
            code = child.wait(timeout=max(clock.left(), 1))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return "stopped"
    return "complete" if code == 0 else f"failed (exit {code})"


def read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    return {key: summary.get(key) for key in SUMMARY_KEYS}


def throughput(out: Path, runs: int, clock: Clock) -> dict:
    """The CartPole preset at ``runs`` runs for ``THROUGHPUT_UPDATES`` updates, on
    the default backend and then on the CPU."""
    seeds = max(1, runs // 4)  # the preset sweeps four variants
    total_steps = THROUGHPUT_UPDATES * 4 * 128  # the preset's 4 envs x 128 steps
    found = {}
    for backend, extra_env in (("accelerator", {}), ("cpu", {"JAX_PLATFORMS": "cpu"})):
        run_dir = out / f"throughput_{runs}_{backend}"
        if not read_summary(run_dir).get("complete"):
            shutil.rmtree(run_dir, ignore_errors=True)  # a stopped one starts over
            command = klipjax_command(
                "train",
                "--set",
                f"seeds={seeds}",
                "--set",
                f"total_steps={total_steps}",
                "--set",
                "final_eval_episodes=0",
                "--out",
                str(run_dir),
            )
            env = {**os.environ, **extra_env}
            state = run_capped(command, clock, out / f"throughput_{backend}.log", env)
            print(f"throughput, {backend}: {state}", flush=True)
        found[backend] = read_summary(run_dir)
    rates = [found[b].get("env_steps_per_second") for b in ("accelerator", "cpu")]
    found["ratio"] = rates[0] / rates[1] if all(rates) else None
    found["runs"] = seeds * 4
    return found


def run_groups(out: Path, groups: list[str], clock: Clock) -> dict[str, dict]:
    found = {}
    for name in groups:
        if clock.left() < 60:
            found[name] = {"state": "not started (budget spent)"}
            continue
        started = time.monotonic()
        run_dir = out / name
        if name in WIDE_PRESETS:  # not report groups: trained as a plain sweep
            summary = read_summary(run_dir)
            if summary.get("complete"):
                found[name] = {"state": "complete", **summary}
                continue
            if (run_dir / "config.yaml").is_file():
                command = klipjax_command("train", "--resume", str(run_dir))
            else:
                preset = str(PRESETS / f"{name}.yaml")
                command = klipjax_command("train", preset, "--out", str(run_dir))
        else:
            command = klipjax_command("reproduce", name, "--out", str(out))
        state = run_capped(command, clock, out / f"{name}.log")
        print(
            f"{name}: {state} after {time.monotonic() - started:.0f} s",
            flush=True,
        )
        found[name] = {"state": state, **read_summary(out / name)}
    return found


def markdown(found: dict) -> str:
    lines = []
    rate = found.get("throughput")
    if rate:
        lines += [
            f"## CartPole, {rate['runs']} runs: env-steps/s after compiling",
            "",
            "| backend | hardware | env-steps/s | compile s | peak device MiB |",
            "|---|---|---|---|---|",
        ]
        for backend in ("accelerator", "cpu"):
            row = rate.get(backend) or {}
            lines.append(
                f"| {backend} | {describe(row.get('hardware'))} | "
                f"{number(row.get('env_steps_per_second'))} | "
                f"{number(row.get('compile_seconds'), 1)} | "
                f"{number((row.get('memory_mb') or {}).get('peak_device'))} |"
            )
        ratio = rate.get("ratio")
        lines += ["", f"accelerator / CPU: {ratio:.1f}x" if ratio else "", ""]
    lines += [
        "## Groups (`klipjax reproduce`)",
        "",
        (
            "| group | state | hardware | wall s | compile s | eval s | env-steps/s "
            "| peak device MiB | peak host MiB |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in found.get("groups", {}).items():
        memory = row.get("memory_mb") or {}
        lines.append(
            f"| {name} | {row['state']} | {describe(row.get('hardware'))} | "
            f"{number(row.get('wall_seconds'))} | {number(row.get('compile_seconds'))} | "
            f"{number(row.get('eval_seconds'))} | "
            f"{number(row.get('env_steps_per_second'))} | "
            f"{number(memory.get('peak_device'))} | {number(memory.get('peak_host'))} |"
        )
    return "\n".join(lines) + "\n"


def describe(hardware) -> str:
    if not hardware:
        return ""
    kind = hardware.get("device_kind") or hardware.get("platform")
    return f"{kind} (jax {hardware.get('jax', '?')})"


def number(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=3600, help="seconds, all of it")
    parser.add_argument("--groups", default=",".join(DEFAULT_GROUPS))
    parser.add_argument("--throughput-runs", type=int, default=1024)
    parser.add_argument("--no-throughput", action="store_true")
    args = parser.parse_args(argv)
    groups = args.groups.split(",")
    known = sorted(path.stem for path in PRESETS.glob("*.yaml"))
    unknown = [name for name in groups if name not in known]
    if unknown:
        parser.error(f"unknown group {unknown[0]!r}; choose from {', '.join(known)}")
    if args.budget <= 0 or args.throughput_runs < 1:
        parser.error("--budget and --throughput-runs must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget)
    found = {}
    if not args.no_throughput:
        found["throughput"] = throughput(args.out, args.throughput_runs, clock)
    found["groups"] = run_groups(args.out, groups, clock)
    (args.out / "accelerator_grid.json").write_text(json.dumps(found, indent=2))
    table = markdown(found)
    (args.out / "accelerator_grid.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
