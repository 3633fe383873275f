"""Benchmark: klipjax against rejax on the paper's CartPole preset, sweep by sweep.

    python scripts/bench.py [--runs 1,8,64,256] [--updates 195] [--repeats 3]
                            [--rejax-venv DIR] [--no-rejax] [--out FILE.md]

For every sweep size it runs klipjax and then rejax (from PyPI, in its own virtual
environment, created on first use) in fresh child processes, alternating the two, and
records compile time, execution time after compile (median of the repeats), env-steps
per second over all runs, the compiled program's memory and the process's peak host
memory. It then times the loss variants side by side (``ppo_clip`` alone, ``klip``
alone, all eight variants mixed) at one sweep size. Results go to a Markdown file
(tables and ratios) and a JSON file beside it. Nothing here is a test: speeds are
measured and written down, never asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 4 * 128  # the preset's env steps per update
PAPER_UPDATES = 100_000 // BATCH
ALL_LOSSES = "ppo_clip,klip,klip_linear_ramp,klip_sigmoid,soft_min,kl_fixed,kl_adaptive,unclipped"
REJAX_VERSION = "0.1.3"


def flops_per_env_step(obs=4, hidden=(64, 64), actions=2, epochs=10) -> int:
    """Multiply-adds x 2 of the dense layers per env step of the CartPole preset: one
    actor pass in the rollout, two critic passes (observation and successor), ``epochs``
    forward+backward passes (x3) of actor and critic, and the post-update actor pass
    for the rollout KL. Activations, the loss and Adam are left out (elementwise)."""

    def macs(out):
        sizes = (obs, *hidden, out)
        return sum(a * b for a, b in itertools.pairwise(sizes))

    actor, critic = macs(actions), macs(1)
    return 2 * (actor + 2 * critic + epochs * 3 * (actor + critic) + actor)


# -- children ---------------------------------------------------------------------


def child_klipjax(runs: int, updates: int, repeats: int, loss: str) -> dict:
    os.environ["KLIPJAX_CACHE_DIR"] = ""  # a real compile every time
    import jax

    from klipjax.config import files
    from klipjax.engine import memory, sweep

    losses = loss.split(",")
    seeds = max(1, runs // len(losses))
    overrides = [
        f"loss=[{loss}]" if len(losses) > 1 else f"loss={loss}",
        f"seeds={seeds}",
        f"total_steps={updates * BATCH}",
        f"chunk_updates={updates}",  # one call: times the program, not the host loop
    ]
    experiment = files.load(None, overrides)
    program = sweep.build(experiment.config, experiment.hparams, **experiment.options)
    start = time.perf_counter()
    runner = program.init(program.hparams)
    updates = program.updates(program.chunk_updates)
    compiled = program.run_chunk.lower(runner, program.hparams, updates).compile()
    compile_seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    program = program._replace(run_chunk=compiled)
    times = []
    for _ in range(repeats):
        runner = jax.block_until_ready(program.init(program.hparams))
        start = time.perf_counter()
        jax.block_until_ready(program.run_chunk(runner, program.hparams, updates))
        times.append(time.perf_counter() - start)
    execute = statistics.median(times)
    device = jax.local_devices()[0]
    peaks = memory.peak_bytes()
    num_runs = len(experiment.hparams.seed)
    return {
        "system": "klipjax",
        "loss": loss,
        "runs": num_runs,
        "updates": updates,
        "compile_s": compile_seconds,
        "execute_s": execute,
        "execute_all_s": times,
        "env_steps_per_s": num_runs * updates * BATCH / execute,
        "program_temp_mb": getattr(analysis, "temp_size_in_bytes", 0) / 2**20,
        "program_state_mb": getattr(analysis, "argument_size_in_bytes", 0) / 2**20,
        "peak_device_mb": peaks["device"] / 2**20 if "device" in peaks else None,
        "peak_host_mb": peaks["host"] / 2**20,
        "device": f"{device.platform}:{device.device_kind}",
        "jax": jax.__version__,
    }


# -- parent -----------------------------------------------------------------------


def run_child(command: list[str]) -> dict:
    result = subprocess.run(
        command, check=False, capture_output=True, text=True, cwd=ROOT
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{result.stderr[-3000:]}\n{result.stdout[-1000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def klipjax_command(runs, updates, repeats, loss="ppo_clip") -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--runs",
        str(runs),
        "--updates",
        str(updates),
        "--repeats",
        str(repeats),
        "--loss",
        loss,
    ]


def rejax_python(venv: Path) -> Path:
    """The rejax environment's interpreter, creating the environment if needed (and
    installing rejax again if an earlier install was cut short).

    Raises:
        subprocess.CalledProcessError: venv or pip failed (e.g. PyPI unreachable).
    """
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with rejax=={REJAX_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('rejax'))",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if installed.stdout.strip() != REJAX_VERSION:
        print(f"installing rejax=={REJAX_VERSION} into {venv} ...", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"rejax=={REJAX_VERSION}"],
            check=True,
        )
    return python


def machine() -> str:
    from klipjax.engine.hardware import host_cpu

    return f"{host_cpu()}, Python {platform.python_version()}"


def write_markdown(path: Path, rows: list[dict], variants: list[dict], args) -> None:
    klip = {r["runs"]: r for r in rows if r["system"] == "klipjax"}
    rejax = {r["runs"]: r for r in rows if r["system"] == "rejax"}
    first = next(iter(klip.values()))
    flops = flops_per_env_step()
    lines = [
        f"# Benchmark: {first['device']}",
        "",
        f"- Machine: {machine()}; jax {first['jax']}.",
        (
            "- Preset: CartPole-v1, 4 envs x 128 steps, 10 epochs of minibatch 64, "
            f"{args.updates} updates per run ({args.updates * BATCH:,} env steps), "
            f"loss ppo_clip. Execution time is the median of {args.repeats} runs of "
            "the compiled program; compile time is lowering plus compiling."
        ),
        f"- FLOPs per env step (dense layers, analytic): {flops:,}.",
        f"- Written by `scripts/bench.py` on {time.strftime('%Y-%m-%d')}.",
        "",
        (
            "| runs | klipjax env-steps/s | compile s | execute s | GFLOP/s | program "
            "temp MB | state MB | peak host MB | peak device MB | rejax env-steps/s "
            "| rejax compile s | klipjax / rejax |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for runs, r in sorted(klip.items()):
        other = rejax.get(runs)
        device_mb = f"{r['peak_device_mb']:.0f}" if r["peak_device_mb"] else "-"
        lines.append(
            f"| {runs} | {r['env_steps_per_s']:,.0f} | {r['compile_s']:.1f} | "
            f"{r['execute_s']:.2f} | {r['env_steps_per_s'] * flops / 1e9:.1f} | "
            f"{r['program_temp_mb']:.1f} | {r['program_state_mb']:.1f} | "
            f"{r['peak_host_mb']:.0f} | {device_mb} | "
            + (
                f"{other['env_steps_per_s']:,.0f} | {other['compile_s']:.1f} | "
                f"{r['env_steps_per_s'] / other['env_steps_per_s']:.2f}x |"
                if other
                else "- | - | - |"
            )
        )
    if variants:
        base = variants[0]["env_steps_per_s"]
        lines += [
            "",
            f"## Loss variants ({variants[0]['runs']} runs each, same program size)",
            "",
            "| losses in the sweep | env-steps/s | time vs ppo_clip |",
            "|---|---:|---:|",
        ]
        for v in variants:
            lines.append(
                f"| {v['loss'].replace(',', ', ')} | {v['env_steps_per_s']:,.0f} | "
                f"{base / v['env_steps_per_s']:.3f}x |"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", default="1,8,64,256", help="sweep sizes, comma-separated"
    )
    parser.add_argument("--updates", type=int, default=PAPER_UPDATES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loss", default="ppo_clip", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--variants-runs", type=int, default=8, help="sweep size of the loss comparison"
    )
    parser.add_argument("--rejax-venv", type=Path, default=ROOT / ".bench-rejax")
    parser.add_argument("--no-rejax", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/cpu.md")
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                child_klipjax(int(args.runs), args.updates, args.repeats, args.loss)
            )
        )
        return

    sizes = [int(n) for n in args.runs.split(",")]
    rejax = None if args.no_rejax else rejax_python(args.rejax_venv)
    rows = []
    for runs in sizes:  # alternate the two systems, size by size
        for system in ("klipjax", "rejax"):
            if system == "rejax" and rejax is None:
                continue
            command = (
                klipjax_command(runs, args.updates, args.repeats)
                if system == "klipjax"
                else [
                    str(rejax),
                    str(ROOT / "scripts" / "bench_rejax.py"),
                    "--runs",
                    str(runs),
                    "--updates",
                    str(args.updates),
                    "--repeats",
                    str(args.repeats),
                ]
            )
            row = run_child(command)
            rows.append(row)
            print(
                f"{system:8s} runs={runs:5d} {row['env_steps_per_s']:12,.0f} env-steps/s "
                f"compile {row['compile_s']:.1f}s execute {row['execute_s']:.2f}s",
                flush=True,
            )
    variants = []
    if args.variants_runs:
        for loss in ("ppo_clip", "klip", ALL_LOSSES):
            row = run_child(
                klipjax_command(args.variants_runs, args.updates, args.repeats, loss)
            )
            variants.append(row)
            print(
                f"variants {loss}: {row['env_steps_per_s']:,.0f} env-steps/s",
                flush=True,
            )
    write_markdown(args.out, rows, variants, args)
    args.out.with_suffix(".json").write_text(
        json.dumps({"rows": rows, "variants": variants}, indent=1)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
