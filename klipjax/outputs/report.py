"""The paper's experiments as preset sweeps, and the report that compares them.

Each group is one sweep config in ``klipjax/presets/`` (one compile per group). A
reproduction directory holds one run directory per group plus ``REPORT.md`` and its
figures, built from the groups' ``summary.json`` and per-update metrics alone. Each
group keeps the metrics columns the report reads in a small ``report_metrics.parquet``
beside the full ``metrics.parquet``, so a directory under version control can keep
the small file only and still have its report rebuilt when a group is added. A group
with neither (one kept before the small file existed) keeps its tables from
``summary.json``; the report names what it cannot draw for it.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from klipjax import stats
from klipjax.config import files as config_files
from klipjax.engine import hardware
from klipjax.outputs import plots
from klipjax.outputs.compare import format_interval
from klipjax.outputs.files import write_atomic, write_parquet
from klipjax.outputs.results import METRICS_FILE, SUMMARY_FILE

# Package data, so a wheel installed anywhere finds them.
PRESETS = resources.files("klipjax") / "presets"
VARIANTS = ("ppo_clip", "klip", "kl_fixed", "kl_adaptive")
VARIANT_TITLES = {
    "ppo_clip": "PPO-Clip",
    "klip": "per-sample KL",
    "kl_fixed": "fixed beta",
    "kl_adaptive": "adaptive beta",
}
# Final return, mean +- std over 5 seeds (Colletti & Holzinger 2026, results table).
PAPER_FINAL_RETURNS = {
    "CartPole-v1": {
        "ppo_clip": (478, 18),
        "klip": (478, 18),
        "kl_fixed": (484, 23),
        "kl_adaptive": (492, 9),
    },
}
# The paper's MuJoCo tasks, compared with their Brax versions (other physics: brax's
# models and solvers differ from MuJoCo-Gymnasium's, so the numbers are a reference
# for the ordering of the variants more than for the returns themselves).
PAPER_FINAL_RETURNS |= {
    f"brax/{task}": {
        "ppo_clip": clip,
        "klip": clip,
        "kl_fixed": fixed,
        "kl_adaptive": adaptive,
    }
    for task, clip, fixed, adaptive in (
        ("halfcheetah", (1955, 312), (2111, 1066), (2207, 1117)),
        ("hopper", (2598, 278), (2616, 208), (2236, 365)),
        ("walker2d", (3717, 425), (3995, 402), (3639, 374)),
        ("ant", (2193, 361), (16, 16), (159, 86)),
        ("humanoid", (660, 70), (342, 31), (553, 22)),
    )
}
# Env steps per run behind the paper's final returns.
PAPER_TOTAL_STEPS = {"CartPole-v1": 100_000} | {
    task: 10_000_000 if task == "brax/humanoid" else 1_000_000
    for task in PAPER_FINAL_RETURNS
    if task.startswith("brax/")
}
PAPER_PEAK_KILL = {
    "CartPole-v1": 0.05,
    "brax/ant": 0.25,
    "brax/halfcheetah": 0.19,
    "brax/hopper": 0.11,
    "brax/humanoid": 0.57,
    "brax/walker2d": 0.16,
}
# The per-update columns the report draws and tabulates (13 of metrics.parquet's 29),
# kept per group in REPORT_METRICS_FILE.
REPORT_METRICS_FILE = "report_metrics.parquet"
REPORT_COLUMNS = (
    "run",
    "update",
    "loss",
    "env_steps",
    "episode_return",
    "identity_gap",
    "kill_fraction",
    "kill_fraction_max",
    "in_band_fraction",
    "pass_fraction",
    "beta_t_kill_abs_mean",
    "beta_t_p90",
    "kl_beta",
)
NOT_KEPT = "not kept"
QUICK_SEEDS = 2
BOOTSTRAP_SEED = 0  # the report's intervals are reproducible
QUICK_MAX_STEPS = 40_000
QUICK_MIN_UPDATES = 4


BRAX_GROUPS = tuple(
    f"brax_{task}" for task in ("ant", "halfcheetah", "hopper", "walker2d", "humanoid")
)


class Group(NamedTuple):
    name: str
    kind: str  # "task" (the four variants), "knob" or "soft"
    knob: str | None = None


GROUPS = {
    group.name: group
    for group in (
        Group("cartpole", "task"),
        Group("cartpole_clip_eps", "knob", "clip_eps"),
        Group("cartpole_beta", "knob", "beta"),
        Group("cartpole_kl_target", "knob", "kl_target"),
        Group("cartpole_soft", "soft", "softness"),
        Group("acrobot", "task"),
        Group("breakout", "task"),
        Group("space_invaders", "task"),
        Group("pendulum", "task"),
        Group("mountain_car_continuous", "task"),
        *(Group(name, "task") for name in BRAX_GROUPS),
    )
}
# Names that stand for several groups.
ALIASES = {"brax": BRAX_GROUPS}
# `klipjax reproduce` with no group: everything but the Brax tasks, which need the
# optional extra and hours of CPU (name them, or `brax`, to run them).
DEFAULT_GROUPS = tuple(name for name in GROUPS if name not in BRAX_GROUPS)


def expand_groups(names: list[str]) -> list[str]:
    """The groups to run: ``DEFAULT_GROUPS`` for none, aliases replaced by their
    groups, repeats dropped; unknown names are kept for the caller to report."""
    expanded = []
    for name in names or DEFAULT_GROUPS:
        for group in ALIASES.get(name, (name,)):
            if group not in expanded:
                expanded.append(group)
    return expanded


def paper_task(task: str) -> str:
    """The task the paper's tables know: a Brax id without its ``@backend``."""
    return task.partition("@")[0]


def group_experiment(name: str, quick: bool) -> config_files.Experiment:
    """The sweep of a group; ``quick`` keeps 2 seeds and a few updates of each run
    (Brax groups: ``QUICK_MIN_UPDATES``, their physics is slow on CPU)."""
    values = config_files.load_file(PRESETS / f"{name}.yaml")
    if quick:
        values["seeds"] = QUICK_SEEDS
        batch = values.get("num_envs", 4) * values.get("num_steps", 128)
        total = values.get("total_steps", 100_000)
        values["total_steps"] = max(
            QUICK_MIN_UPDATES * batch, min(total // 10, QUICK_MAX_STEPS)
        )
        if name in BRAX_GROUPS:
            values["total_steps"] = QUICK_MIN_UPDATES * batch
    return config_files.from_dict(values)


class GroupResult(NamedTuple):
    group: Group
    summary: dict[str, Any]
    frame: pd.DataFrame | None  # the REPORT_COLUMNS per run and update, if kept

    @property
    def task(self) -> str:
        return self.summary["env"]


def load_group(run_dir: Path, group: Group) -> GroupResult:
    """A complete group: its summary, and its per-update report columns from
    ``metrics.parquet`` or else ``REPORT_METRICS_FILE`` (``None`` if neither).
    Read from ``metrics.parquet``, the columns are also written to
    ``REPORT_METRICS_FILE``, the file a directory under version control keeps."""
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    frame = None
    for name in (METRICS_FILE, REPORT_METRICS_FILE):
        if (run_dir / name).is_file():
            frame = pd.read_parquet(run_dir / name, engine="pyarrow")
            # a preset without the live check records no identity_gap
            frame = frame[[c for c in REPORT_COLUMNS if c in frame.columns]]
            if name == METRICS_FILE:
                write_parquet(run_dir / REPORT_METRICS_FILE, frame)
            break
    return GroupResult(group, summary, frame)


def is_complete(run_dir: Path) -> bool:
    path = run_dir / SUMMARY_FILE
    return path.is_file() and bool(json.loads(path.read_text()).get("complete"))


def _seed_scores(setting: dict) -> np.ndarray:
    """A setting's final returns, one per seed, those without one dropped."""
    values = np.array([np.nan if v is None else v for v in setting["values"]], float)
    return values[np.isfinite(values)]


def _iqm_cells(setting: dict) -> list[str]:
    """``IQM, 95% CI, mean, n`` of a setting's seeds (``n/a`` when none has a
    final return); the CI is the stratified bootstrap's (`klipjax.stats`)."""
    scores = _seed_scores(setting)
    if not scores.size:
        return ["n/a", "-", "n/a", "0"]
    estimate = stats.interval_estimate(scores, stats.iqm, seed=BOOTSTRAP_SEED)
    return [
        f"{estimate.value:.1f}",
        format_interval(estimate, 1),
        f"{scores.mean():.1f}",
        str(scores.size),
    ]


def _improvement_cell(setting: dict, baseline: dict | None) -> str:
    """P(setting > baseline) with its CI; ``baseline`` for the baseline itself."""
    if baseline is None:
        return "-"
    if setting is baseline:
        return "baseline"
    scores, reference = _seed_scores(setting), _seed_scores(baseline)
    if not scores.size or not reference.size:
        return "n/a"
    estimate = stats.probability_of_improvement(scores, reference, seed=BOOTSTRAP_SEED)
    return f"{estimate.value:.2f} {format_interval(estimate, 2)}"


def _steps(count: float) -> str:
    if count < 950_000:
        return f"{count / 1e3:.0f}k"
    return f"{count / 1e6:.1f}".removesuffix(".0") + "M"


def _shortened(done: list[GroupResult]) -> list[str]:
    """Groups that ran fewer env steps than their preset (``train --set`` into the
    reproduction directory)."""
    notes = []
    for result in done:
        preset = group_experiment(result.group.name, quick=False).config
        planned = preset.num_updates * preset.batch_size
        ran = result.summary["total_steps"]
        if ran != planned:
            notes.append(
                f"{result.group.name} ran {_steps(ran)} env steps per run, not its "
                f"preset's {_steps(planned)}"
            )
    return notes


def _budget_cell(result: GroupResult) -> str:
    """Env steps per run; the paper's budget beside it where ours is shorter (its
    final returns come later in training)."""
    ours = result.summary["total_steps"]
    paper = PAPER_TOTAL_STEPS.get(paper_task(result.task))
    if paper and ours < 0.9 * paper:
        return f"{_steps(ours)} (paper {_steps(paper)})"
    return _steps(ours)


def _final_return_table(tasks: list[GroupResult]) -> list[str]:
    """One row per task and variant: IQM, its CI, mean, seeds, P(> PPO-Clip), and
    the paper's mean ± std."""
    lines = [
        (
            "| task | env steps | variant | IQM | 95% CI | mean | n | P(> PPO-Clip) | "
            "greedy eval (IQM) | paper (mean ± std) |"
        ),
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for result in tasks:
        by_loss = {s["loss"]: s for s in result.summary["settings"]}
        evaluated = result.summary.get("final_evaluation", {})
        greedy = {s["loss"]: s for s in evaluated.get("settings", [])}
        paper = PAPER_FINAL_RETURNS.get(paper_task(result.task), {})
        baseline = by_loss.get("ppo_clip")
        for variant in (v for v in VARIANTS if v in by_loss):
            setting = by_loss[variant]
            reference = (
                f"{paper[variant][0]} ± {paper[variant][1]}"
                if variant in paper
                else "-"
            )
            cells = [
                result.task,
                _budget_cell(result),
                VARIANT_TITLES[variant],
                *_iqm_cells(setting),
                _improvement_cell(setting, baseline),
                _iqm_cells(greedy[variant])[0] if variant in greedy else "-",
                reference,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min"


def _cost_lines(done: list[GroupResult]) -> list[str]:
    """What each group ran and what it cost (as recorded in its summary.json)."""
    lines = [
        (
            "| group | runs x env steps | wall (incl. compile) | env-steps/s after "
            "compiling | ran on |"
        ),
        "|---|---|---|---|---|",
    ]
    for result in done:
        summary = result.summary
        ran_on = hardware.label(summary.get("hardware"), summary.get("devices"))
        wall = _duration(summary["wall_seconds"])
        if summary.get("resumes"):
            wall += f" (over {summary['resumes'] + 1} processes)"
        lines.append(
            f"| {result.group.name} | {summary['num_runs']} x "
            f"{_steps(summary['total_steps'])} | {wall} | "
            f"{summary['env_steps_per_second'] or 0:,.0f} | {ran_on} |"
        )
    return lines


def _identity_lines(tasks: list[GroupResult]) -> list[str]:
    lines = [
        (
            "| task | ppo_clip/klip pairs | identical parameters | largest parameter "
            "difference | largest gradient difference (live check) |"
        ),
        "|---|---|---|---|---|",
    ]
    for result in tasks:
        identity = result.summary["identity"]
        if not identity.get("pairs"):
            continue
        gap = None if result.frame is None else result.frame.get("identity_gap")
        gap_text = NOT_KEPT if result.frame is None else "not recorded"
        if gap is not None and np.isfinite(gap).any():
            gap_text = f"{np.nanmax(gap.to_numpy()):g}"
        lines.append(
            f"| {result.task} | {identity['pairs']} | "
            f"{'yes' if identity['identical_params'] else 'no'} | "
            f"{identity['max_param_difference']:g} | {gap_text} |"
        )
    return lines


def _kill_lines(tasks: list[GroupResult]) -> list[str]:
    lines = [
        "| task | " + " | ".join(VARIANT_TITLES[v] for v in VARIANTS) + " | paper |",
        "|---" * (len(VARIANTS) + 2) + "|",
    ]
    for result in tasks:
        if result.frame is None:
            cells = [NOT_KEPT] * len(VARIANTS)
        else:
            by_loss = result.frame.groupby("loss")
            update_peak = by_loss["kill_fraction"].max()
            minibatch_peak = by_loss["kill_fraction_max"].max()
            cells = [
                f"{update_peak[v]:.1%} / {minibatch_peak[v]:.1%}"
                if v in update_peak
                else "-"
                for v in VARIANTS
            ]
        paper = PAPER_PEAK_KILL.get(paper_task(result.task))
        lines.append(
            f"| {result.task} | "
            + " | ".join(cells)
            + f" | {'up to ' + format(paper, '.0%') if paper else '-'} |"
        )
    return lines


def _knob_panel(result: GroupResult) -> plots.KnobPanel:
    knob = result.group.knob
    lines: dict[str, tuple[list[float], list[list[float]]]] = {}
    for setting in result.summary["settings"]:
        values = [v if v is not None else np.nan for v in setting["values"]]
        knob_values, per_seed = lines.setdefault(setting["loss"], ([], []))
        knob_values.append(setting.get(knob, _run_value(result, setting, knob)))
        per_seed.append(values)
    title = {
        "clip_eps": "clip radius",
        "beta": "fixed beta",
        "kl_target": "KL target",
        "softness": "soft clip",
    }[knob]
    return plots.KnobPanel(title, knob, lines, log_x=knob in ("beta", "kl_target"))


def _run_value(result: GroupResult, setting: dict, knob: str) -> float:
    """A knob's value for a setting whose knob was not swept (a single value)."""
    for run in result.summary["runs"]:
        if run["loss"] == setting["loss"]:
            return run["hparams"][knob]
    return float("nan")


def _knob_table(result: GroupResult) -> list[str]:
    knob = result.group.knob
    lines = [
        f"| setting | {knob} | IQM | 95% CI | mean | n |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for setting in result.summary["settings"]:
        value = setting.get(knob, _run_value(result, setting, knob))
        cells = [setting["loss"], f"{value:g}", *_iqm_cells(setting)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _not_kept_lines(tasks: list[GroupResult]) -> list[str]:
    """Names the task groups with no per-update metrics kept, if any."""
    names = [r.group.name for r in tasks if r.frame is None]
    if not names:
        return []
    return [
        (
            f"No per-update metrics are kept for {', '.join(names)} (neither "
            f"`{METRICS_FILE}` nor `{REPORT_METRICS_FILE}` in the group's directory): "
            "the figures leave them out, and their live identity check and kill "
            f"fractions read '{NOT_KEPT}'; the tables built from `summary.json` (final "
            "return, identical parameters, cost) include them as any group."
        ),
        "",
    ]


def _task_figure_sections(tasks: list[GroupResult], out: Path) -> list[str]:
    """The curves, the identity and the sample-partition sections of the task
    groups, drawn from the groups whose per-update metrics are kept; the
    single-task figures show the first of them."""
    drawn = [r for r in tasks if r.frame is not None]
    lines = ["## Learning curves (mean ± std over seeds)", "", *_not_kept_lines(tasks)]
    if drawn:
        plots.plot_task_curves({r.task: r.frame for r in drawn}, out / "curves.png")
        lines += ["![curves](curves.png)", ""]
    lines += [
        "## The identity: PPO-Clip and the per-sample KL form",
        "",
        (
            "Runs of `ppo_clip` and `klip` with the same seed inside one sweep. The live "
            "check computes both forms' gradients on every minibatch of the `ppo_clip` "
            "runs where the preset enables it."
        ),
        "",
        *_identity_lines(tasks),
        "",
    ]
    if not drawn:
        return lines
    first = drawn[0]
    pair = first.frame[first.frame["loss"].isin(["ppo_clip", "klip"])]
    if len(pair):
        plots.plot_curves(
            pair,
            out / "identity.png",
            title=f"{first.task}: PPO-Clip (solid) vs per-sample KL (dashed)",
        )
        lines += ["![identity](identity.png)", ""]
    plots.plot_metric_panels(
        first.frame,
        out / "partition.png",
        ["in_band_fraction", "kill_fraction", "pass_fraction"],
    )
    plots.plot_metric_panels(
        first.frame, out / "beta.png", ["beta_t_kill_abs_mean", "beta_t_p90"]
    )
    lines += [
        "## Where the samples sit: I_in, I_kill, I_pass",
        "",
        f"Per update, the fractions over all samples of its minibatch steps ({first.task}):",
        "",
        "![partition](partition.png)",
        "",
        (
            "Peak fraction of samples in I_kill over training: of an update (mean over "
            "its minibatches) / of a single minibatch:"
        ),
        "",
        *_kill_lines(tasks),
        "",
        "## beta_t on I_kill",
        "",
        (
            "Mean |beta_t| over I_kill and the 90th percentile of beta_t per update "
            "(the coefficients the step gate implies; the run's own gate for the soft "
            "variants):"
        ),
        "",
        "![beta](beta.png)",
        "",
    ]
    # The scalar beta only exists for the KL variants.
    scalar = first.frame[first.frame["loss"].isin(["kl_fixed", "kl_adaptive"])]
    if len(scalar):
        plots.plot_curves(
            scalar,
            out / "kl_beta.png",
            y="kl_beta",
            title=f"{first.task}: scalar beta of the KL variants",
        )
        lines += [
            "The scalar beta of the KL variants (fixed, or adapted once per rollout):",
            "",
            "![kl_beta](kl_beta.png)",
            "",
        ]
    return lines


def write_report(out: Path, quick: bool) -> Path:
    """Builds ``out/REPORT.md`` and its figures from every complete group in ``out``
    (not only the ones just run), in the order of ``GROUPS``."""
    import jax

    done = [load_group(out / n, GROUPS[n]) for n in GROUPS if is_complete(out / n)]
    tasks = [r for r in done if r.group.kind == "task"]
    knobs = [r for r in done if r.group.kind in ("knob", "soft")]
    if quick:
        mode = "QUICK mode: 2 seeds, a few updates per run; not comparable to the paper"
    else:
        mode = "; ".join(["full presets", *_shortened(done)])
    lines = [
        "# klipjax reproduction of Colletti & Holzinger (2026)",
        "",
        (
            f"Report written {dt.datetime.now():%Y-%m-%d %H:%M} on {platform.machine()} "
            f"({jax.devices()[0].platform}, jax {jax.__version__}); "
            f"{mode}. "
            f"Groups: {', '.join(r.group.name for r in done) or 'none'}."
        ),
        "",
        (
            "Final return: per run, the mean episode return over the updates in the last 10% "
            "of its environment steps (updates with no finished episode skipped). Per "
            "setting: the interquartile mean (IQM) of its seeds' final returns with a 95% "
            "bootstrap confidence interval (seeds resampled), the mean and the number of "
            "seeds n; P(> PPO-Clip) is the probability that a run of the variant ends "
            "above a PPO-Clip run of the same task (0.5: no difference), with its 95% "
            "CI. Greedy eval: the IQM over seeds of each run's final evaluation (the "
            "mean return of `final_eval_episodes` fresh episodes with the most likely "
            "actions; '-' for groups run before evaluation existed). The paper reports "
            "mean ± std over 5 seeds. `klipjax compare` gives the "
            "same statistics for any run directories."
        ),
        "",
    ]
    if tasks:
        lines += ["## Final return", "", *_final_return_table(tasks), ""]
        lines += _task_figure_sections(tasks, out)
    lines += [
        "## What ran, and what it cost",
        "",
        (
            "Wall time of each group's sweep as recorded when it ran, and what it ran "
            "on (the devices its runs spread over; for groups run before summaries "
            "kept it, 'not recorded', or what their notes say, marked as noted after "
            "the run)."
        ),
        "",
        *_cost_lines(done),
        "",
    ]
    if knobs:
        plots.plot_knob_panels([_knob_panel(r) for r in knobs], out / "knobs.png")
        lines += [
            "## Knob sweeps and the soft-clip grid",
            "",
            "Final return against each knob (mean over seeds, standard-error bars).",
            "",
            "![knobs](knobs.png)",
            "",
        ]
        for result in knobs:
            lines += [f"### {result.group.name}", "", *_knob_table(result), ""]
    path = out / "REPORT.md"
    write_atomic(path, "\n".join(lines))
    return path
