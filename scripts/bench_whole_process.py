"""Benchmark: what a user waits for, process start to exit, klipjax beside two others.

    python scripts/bench_whole_process.py [--runs 8 | --runs 1,64,1024]
        [--steps 100000] [--pairs 3] [--out FILE.md] [--rejax-venv DIR]
        [--no-rejax] [--klipjax-set KEY=VALUE ...]

Kernel timings (``scripts/bench.py``) leave out what a user also pays for: starting
Python, imports, building the program, compiling it, writing results. Here every
tool trains ``--runs`` seeds of the paper's CartPole-v1 preset with ``ppo_clip``
(4 envs x 128 steps, 10 epochs of 8 minibatches of 64, Adam 3e-4, grad clip 0.5,
clip 0.2, gamma 0.99, lambda 0.95, vf 0.5, entropy 0, tanh 64-64 actor and critic)
in a fresh process, with every compilation cache cold, and the wall time from spawn
to exit is measured:

- klipjax through its command line, ``klipjax train`` (its own breakdown is read
  from the run directory's ``summary.json``); on a CPU its runs spread over one JAX
  device per core, as for any user (``--one-device`` adds a row on JAX's single CPU
  device, ``KLIPJAX_CPU_DEVICES=1``);
- a PureJaxRL-style single-file script (``scripts/baselines/purejaxrl_style.py``);
- rejax 0.1.3 in its own virtual environment (``scripts/bench_rejax.py``, one
  repeat, evaluation off), skipped if that environment cannot be created.

The tools run one after another, ``--pairs`` rounds, the order rotated each round so
no tool always runs first on a cold disk cache. Medians and per-round ratios are
printed and written to ``--out`` (Markdown) and a JSON file beside it. Speeds are
measured and written down, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from bench import BATCH, REJAX_VERSION, machine, rejax_python
from tqdm import tqdm

from klipjax.outputs.results import TIMING_KEYS

ROOT = Path(__file__).resolve().parents[1]
# Updates of klipjax's first call, which its `compile_seconds` includes: the
# engine's FIRST_CALL_UPDATES (tests/test_sweep.py checks they agree). Not imported:
# the engine's imports start JAX's default backend, which on a GPU would hold memory
# in this parent process while the timed children run.
FIRST_CALL_UPDATES = 1
SCRIPTS = ROOT / "scripts"
IMPORTS = {  # what each tool loads before it can train, timed as `python -c`
    "klipjax": "import klipjax.engine.training",
    "klipjax_cli": "import klipjax.cli",
    "purejaxrl_style": "import flax.linen, gymnax, jax, optax",
    "rejax": "import rejax",
}


class ChildFailed(RuntimeError):
    """A child exited non-zero, was killed, or printed no result."""


@dataclass
class Process:
    """A finished child: wall from spawn to exit, its own CPU time and peak RSS."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def run_process(
    command: list[str], env: dict[str, str], workdir: Path, timeout_s: float
) -> Process:
    """Runs ``command`` to its exit (killed after ``timeout_s``: a hung child must
    not stall the benchmark); output goes to files (no pipe to drain while timing)
    and ``wait4`` gives this child's own resource use."""
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)
        killer = threading.Timer(timeout_s, child.kill)
        killer.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        killer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if child.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-30:])
        why = (
            f"killed after {timeout_s:.0f} s (--timeout)"
            if wall >= timeout_s
            else f"exit code {child.returncode}"
        )
        raise ChildFailed(
            f"{why}: {' '.join(command)}\n"
            f"--- stderr (last lines) ---\n{tail}\n--- stdout ---\n{stdout[-1000:]}"
        )
    return Process(
        wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout, stderr
    )


def cold_env() -> dict[str, str]:
    """The environment with every persistent compilation cache off."""
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["KLIPJAX_CACHE_DIR"] = ""  # klipjax: an empty directory turns its cache off
    return env


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ChildFailed(f"no JSON line in the output:\n{stdout[-2000:]}")
    return json.loads(lines[-1])


@dataclass
class Tool:
    name: str
    python: Path
    timeout_s: float
    extra_overrides: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # on top of cold_env()

    @property
    def is_klipjax(self) -> bool:
        return self.name.startswith("klipjax")

    def command(self, runs: int, steps: int, workdir: Path) -> list[str]:
        if self.is_klipjax:
            cli = Path(self.python).with_name("klipjax")
            start = [str(cli)] if cli.exists() else [str(self.python), "-m", "klipjax"]
            overrides = [
                "loss=ppo_clip",  # not the default four-loss grid
                f"seeds={runs}",
                f"total_steps={steps}",
                "identity_check=false",
                *self.extra_overrides,
            ]
            sets = [arg for o in overrides for arg in ("--set", o)]
            return [*start, "train", *sets, "--out", str(workdir / "run")]
        if self.name == "purejaxrl_style":
            script = SCRIPTS / "baselines" / "purejaxrl_style.py"
            return [str(self.python), str(script), f"--runs={runs}", f"--steps={steps}"]
        updates = steps // BATCH
        script = SCRIPTS / "bench_rejax.py"
        return [
            str(self.python),
            str(script),
            f"--runs={runs}",
            f"--updates={updates}",
            "--repeats=1",  # one training, as a user runs it
        ]

    def measure(self, runs: int, steps: int) -> dict:
        with tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-") as tmp:
            workdir = Path(tmp)
            process = run_process(
                self.command(runs, steps, workdir),
                cold_env() | self.env,
                workdir,
                self.timeout_s,
            )
            row = {
                "tool": self.name,
                "runs": runs,
                "wall_s": process.wall_s,
                "cpu_s": process.cpu_s,
                "peak_rss_mb": process.peak_rss_mb,
            }
            if self.is_klipjax:
                row.update(klipjax_breakdown(workdir / "run", runs))
            else:
                reported = last_json(process.stdout)
                row.update(
                    compile_s=reported["compile_s"],
                    execute_s=reported["execute_s"],
                    final_return=reported.get("final_return"),
                    jax=reported.get("jax"),
                    device=reported.get("device"),
                )
            return row


def klipjax_breakdown(run_dir: Path, runs: int) -> dict:
    """klipjax's own timing from ``summary.json``, put on the baselines' footing.

    Its ``compile_seconds`` runs from ``train()``'s start to the end of the first
    call of the chunk program (setup, compile and ``FIRST_CALL_UPDATES`` updates)
    and ``env_steps_per_second`` is the steady rate of the later updates. So
    execution here is all updates at the steady rate, and compile is
    ``compile_seconds`` less the first call's share."""
    summary = json.loads((run_dir / "summary.json").read_text())
    chunk = yaml.safe_load((run_dir / "config.yaml").read_text()).get("chunk_updates")
    updates = summary["updates_done"]
    rate = summary["env_steps_per_second"]
    execute = runs * summary["total_steps"] / rate if rate else None
    first_call = execute * min(FIRST_CALL_UPDATES, updates) / updates if rate else 0.0
    setting = summary["settings"][0]
    evaluated = summary["final_evaluation"]["settings"][0]
    return {
        "compile_s": summary["compile_seconds"] - first_call,
        "execute_s": execute,
        "final_return": setting["mean"],
        "final_eval_return_det": evaluated["mean"],
        "klipjax_timing": {key: summary.get(key) for key in TIMING_KEYS},
        "chunk_updates": chunk,
        "updates": updates,
    }


def import_seconds(tool: Tool, statement: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(tool.python), "-c", statement]
        return run_process(command, cold_env(), Path(tmp), tool.timeout_s).wall_s


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(rows: list[dict], tools: list[str]) -> tuple[list[dict], list[dict]]:
    """Per (runs, tool) medians, and per run count the median per-round ratios of
    each other tool to klipjax (above 1: klipjax takes less time)."""
    medians, ratios = [], []
    for runs in sorted({r["runs"] for r in rows}):
        by_tool = {
            t: [r for r in rows if r["runs"] == runs and r["tool"] == t] for t in tools
        }
        for tool, mine in by_tool.items():
            entry = {"runs": runs, "tool": tool, "rounds": len(mine)}
            for key in (
                "wall_s",
                "compile_s",
                "execute_s",
                "final_return",
                "cpu_s",
                "peak_rss_mb",
            ):
                entry[key] = median([r.get(key) for r in mine])
            if tool.startswith("klipjax"):
                timing = [r["klipjax_timing"] for r in mine]
                for key in ("wall_seconds", "compile_seconds", "eval_seconds"):
                    entry[key] = median([t[key] for t in timing])
                entry["outside_train_s"] = median(
                    [r["wall_s"] - r["klipjax_timing"]["wall_seconds"] for r in mine]
                )
                entry["final_eval_return_det"] = median(
                    [r["final_eval_return_det"] for r in mine]
                )
            medians.append(entry)
        ratio = {"runs": runs}
        for tool in tools[1:]:
            for key in ("wall_s", "execute_s"):
                per_round = [
                    other[key] / mine[key]
                    for mine, other in zip(by_tool["klipjax"], by_tool[tool])
                    if mine[key] and other[key]
                ]
                ratio[f"{tool}/klipjax {key}"] = median(per_round)
        ratios.append(ratio)
    return medians, ratios


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def tables(medians, ratios, imports, tools) -> list[str]:
    lines = [
        (
            "| runs | tool | whole process s | compile s | execution s | import s "
            "| final return | CPU s | peak RSS MB |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in medians:
        lines.append(
            f"| {m['runs']} | {m['tool']} | {fmt(m['wall_s'])} | {fmt(m['compile_s'])} "
            f"| {fmt(m['execute_s'], 2)} | {fmt(imports.get(m['tool']))} "
            f"| {fmt(m['final_return'])} | {fmt(m['cpu_s'])} | {fmt(m['peak_rss_mb'], 0)} |"
        )
    others = tools[1:]
    if others:
        lines += [
            "",
            "| runs | "
            + " | ".join(f"{t} / klipjax, whole process" for t in others)
            + " | "
            + " | ".join(f"{t} / klipjax, execution" for t in others)
            + " |",
            "|---:|" + "---:|" * 2 * len(others),
        ]
        for r in ratios:
            cells = [
                r[f"{t}/klipjax {key}"]
                for key in ("wall_s", "execute_s")
                for t in others
            ]
            lines.append(
                f"| {r['runs']} | "
                + " | ".join(f"{fmt(c, 2)}x" if c else "-" for c in cells)
                + " |"
            )
    lines += [
        "",
        "klipjax's own breakdown (`summary.json`, medians):",
        "",
        (
            "| runs | tool | whole process s | train() s | compile_seconds "
            "| eval_seconds | steady execution s | outside train() s "
            "| greedy eval return |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in medians:
        if m["tool"].startswith("klipjax"):
            lines.append(
                f"| {m['runs']} | {m['tool']} | {fmt(m['wall_s'])} | {fmt(m['wall_seconds'])} "
                f"| {fmt(m['compile_seconds'])} | {fmt(m['eval_seconds'])} "
                f"| {fmt(m['execute_s'], 2)} | {fmt(m['outside_train_s'])} "
                f"| {fmt(m['final_eval_return_det'])} |"
            )
    return lines


def write_report(path: Path, result: dict, lines: list[str]) -> None:
    args = result["args"]
    rejax_jax = next(
        (r.get("jax") for r in result["rows"] if r["tool"] == "rejax"), None
    )
    header = [
        f"# Whole-process benchmark: {result['device']}",
        "",
        f"- Machine: {result['machine']}; jax {result['jax']}"
        + (f" (rejax's environment: jax {rejax_jax})" if rejax_jax else "")
        + f"; {result['date']}.",
        (
            f"- Each tool trains {', '.join(map(str, args['runs']))} runs x "
            f"{args['steps'] // BATCH} updates ({args['steps'] // BATCH * BATCH:,} env "
            "steps per run) of the CartPole-v1 preset, loss ppo_clip, in a fresh process "
            f"with compilation caches off; {args['pairs']} round(s), order rotated each "
            "round; medians shown, ratios are medians of per-round ratios (above 1: "
            "klipjax takes less time)."
        ),
        (
            "- Devices: klipjax spreads its runs over one JAX CPU device per core "
            "(`klipjax_one_device`: JAX's single CPU device); the baselines run on "
            "JAX's single CPU device, as their recipes do."
        ),
        (
            "- Whole process: spawn to exit. Compile: lowering plus compiling (klipjax: "
            "its `compile_seconds` from `summary.json`, setup to the end of the first "
            "call of the chunk program, less that call's update at the steady rate). "
            "Execution: the training program (klipjax: all updates at its steady "
            "rate). Import: "
            "`python -c` of what the tool loads (klipjax: `klipjax.engine.training`; "
            f"`import klipjax.cli` alone: {fmt(result['imports'].get('klipjax_cli'))} s)."
        ),
        (
            "- Final return: per run, the mean return of the episodes that ended in the "
            "last 10% of env steps, then the mean over runs (rejax: not reported, its "
            "evaluation is off). klipjax, as a user runs it, also evaluates every run "
            "after training (`eval_seconds`, in its whole-process time)."
        ),
    ]
    if args["klipjax_set"]:
        header.append(f"- klipjax overrides: {', '.join(args['klipjax_set'])}.")
    if result.get("rejax_skipped"):
        header.append(f"- rejax skipped: {result['rejax_skipped']}")
    header.append("- Written by `scripts/bench_whole_process.py`.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + [""] + lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="8", help="run counts, comma-separated")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of every tool")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs/benchmarks/whole_process_cpu.md"
    )
    parser.add_argument("--rejax-venv", type=Path, default=ROOT / ".bench-rejax")
    parser.add_argument("--no-rejax", action="store_true")
    parser.add_argument(
        "--one-device",
        action="store_true",
        help="also klipjax on JAX's single CPU device (KLIPJAX_CPU_DEVICES=1), "
        "not one device per core",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds before a child is killed"
    )
    parser.add_argument(
        "--klipjax-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra klipjax override, e.g. final_eval_episodes=0",
    )
    args = parser.parse_args()
    run_counts = [int(n) for n in args.runs.split(",")]
    python = Path(sys.executable)

    tools = [
        Tool("klipjax", python, args.timeout, args.klipjax_set),
        Tool("purejaxrl_style", python, args.timeout),
    ]
    if args.one_device:
        tools.append(
            Tool(
                "klipjax_one_device",
                python,
                args.timeout,
                args.klipjax_set,
                {"KLIPJAX_CPU_DEVICES": "1"},
            )
        )
    rejax_skipped = "--no-rejax" if args.no_rejax else None
    if not args.no_rejax:
        try:
            tools.append(Tool("rejax", rejax_python(args.rejax_venv), args.timeout))
        except (subprocess.CalledProcessError, OSError) as err:
            rejax_skipped = f"its environment could not be created ({err})"
            print(f"rejax skipped: {rejax_skipped}", file=sys.stderr)
    names = [t.name for t in tools]

    imports = {}
    for key, statement in IMPORTS.items():
        tool = next((t for t in tools if key.startswith(t.name)), None)
        if tool is not None:
            imports[key] = import_seconds(tool, statement)
    print(
        "import s: " + ", ".join(f"{k} {v:.1f}" for k, v in imports.items()),
        file=sys.stderr,
    )

    rows = []
    jobs = [
        (n, r, i)
        for n in run_counts
        for r in range(args.pairs)
        for i in range(len(tools))
    ]
    with tqdm(jobs, file=sys.stderr, unit="process", dynamic_ncols=True) as bar:
        for runs, round_index, position in bar:
            tool = tools[(position + round_index) % len(tools)]  # rotated order
            bar.set_description(
                f"runs={runs} round {round_index + 1}/{args.pairs}: {tool.name}"
            )
            try:
                row = tool.measure(runs, args.steps)
            except ChildFailed as err:
                bar.close()
                sys.exit(f"{tool.name} failed (runs={runs}):\n{err}")
            row["round"] = round_index
            rows.append(row)
            bar.write(
                f"{tool.name:16s} runs={runs:<5d} whole {row['wall_s']:6.1f} s, compile "
                f"{fmt(row['compile_s'])} s, execution {fmt(row['execute_s'], 2)} s, "
                f"final return {fmt(row['final_return'])}",
                file=sys.stderr,
            )

    medians, ratios = summarise(rows, names)
    lines = tables(medians, ratios, imports, names)
    print("\n".join(lines))
    device = next((r["device"] for r in rows if r.get("device")), "unknown device")
    result = {
        "device": device,
        "machine": machine(),
        "jax": importlib.metadata.version("jax"),
        "date": dt.date.today().isoformat(),
        "rejax_version": REJAX_VERSION if "rejax" in names else None,
        "rejax_skipped": rejax_skipped,
        "args": {
            "runs": run_counts,
            "steps": args.steps,
            "pairs": args.pairs,
            "klipjax_set": args.klipjax_set,
            "one_device": args.one_device,
        },
        "imports": imports,
        "medians": medians,
        "ratios": ratios,
        "rows": rows,
    }
    write_report(args.out, result, lines)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
