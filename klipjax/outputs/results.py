"""``Results``: what a sweep produced, as arrays and tables, and its files on disk.

``klipjax.train`` returns one; ``Results.save`` writes exactly the files
``klipjax train --out DIR`` writes (``config.yaml``, ``metrics.parquet``,
``summary.json``, ``curves.png``, ``diagnostics.png``, and ``evaluation.png`` with
periodic evaluations) and ``load`` reads any such
directory back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from klipjax.config import files as config_files
from klipjax.config import run_table
from klipjax.config.checks import ConfigError
from klipjax.config.settings import Config, HParams
from klipjax.outputs import tables
from klipjax.outputs.files import write_json, write_parquet, write_yaml

if TYPE_CHECKING:
    import pandas as pd

METRICS_FILE = "metrics.parquet"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
# summary.json's timing fields (``Results.timing``)
TIMING_KEYS = (
    "wall_seconds",
    "compile_seconds",
    "eval_seconds",
    "resumes",
    "compile_cache_hits",
    "env_steps_per_second",
    "parallel_runs",
    "devices",
    "hardware",
    "memory_mb",
)
# Metrics drawn as small multiples beside the learning curves.
PANEL_METRICS = (
    "kill_fraction",
    "pass_fraction",
    "beta_t_kill_abs_mean",
    "approx_kl",
    "entropy",
    "explained_variance",
)


@dataclasses.dataclass(frozen=True)
class Results:
    """The outcome of a sweep of ``runs`` runs over ``updates`` updates each.

    Attributes:
        config: The static settings every run shared.
        hparams: The run table: ``HParams`` with numpy fields ``[runs]``.
        metrics: ``{name: float32 [runs, updates]}`` per-update metrics (NaN where
            undefined, e.g. ``episode_return`` in an update where no episode ended).
        params: Final parameters ``{"actor": ..., "critic": ...}``, each leaf
            ``[runs, ...]`` (numpy); None when loaded from a directory without
            checkpoints.
        status: Per run: ``"ok"``, ``"diverged"`` (frozen at ``diverged_at``) or
            ``"stopped"`` (interrupted before the last update).
        diverged_at: ``[runs]`` update index where a run turned non-finite, or -1.
        params_sha256: Per run, the SHA-256 of its final parameters.
        identity: The ppo_clip/klip pairs compared and their largest difference.
        timing: Wall, compile and throughput figures, and the memory used.
        options: The run options the sweep ran with (``chunk_updates``...).
        stopped_by: The signal number that stopped the sweep early, if any.
        obs_stats: The observation normaliser of every run (``RunningStats`` with
            ``[runs, ...]`` numpy fields), which ``policy`` needs; None when loaded
            from a directory without checkpoints.
    """

    config: Config
    hparams: HParams
    metrics: dict[str, np.ndarray]
    params: Any
    status: tuple[str, ...]
    diverged_at: np.ndarray
    params_sha256: tuple[str, ...]
    identity: dict[str, Any]
    timing: dict[str, Any]
    options: dict[str, int] = dataclasses.field(default_factory=dict)
    stopped_by: int | None = None  # the signal that stopped the sweep, if one did
    obs_stats: Any = None

    @property
    def num_runs(self) -> int:
        return run_table.num_runs(self.hparams)

    @property
    def complete(self) -> bool:
        """Whether every run reached its last update (or diverged on the way)."""
        return "stopped" not in self.status

    @property
    def varying(self) -> tuple[str, ...]:
        """Hyperparameters other than the loss and the seed that differ between runs."""
        return run_table.varying(self.hparams)

    def frame(self) -> pd.DataFrame:
        """One row per (run, update): ``run, update, loss, seed``, every varying
        hyperparameter, ``env_steps`` and every metric (``metrics.parquet``)."""
        return tables.metrics_frame(self.hparams, self.metrics, self.varying)

    def final_returns(self) -> np.ndarray:
        """``[runs]`` the paper's final return: per run, the mean episode return over
        the updates in the last 10% of env steps that ended an episode (NaN if none)."""
        return tables.final_returns(self.metrics, self.config.env_steps)

    def final_evaluation(self, deterministic: bool = True) -> np.ndarray:
        """``[runs]`` the mean return of the evaluation after the last update
        (``Config.final_eval_episodes`` episodes) with the most likely actions, or
        with sampled ones; NaN for runs without one (stopped, or evaluation off)."""
        column = "eval_return_det" if deterministic else "eval_return"
        return tables.final_evaluation(self.metrics, column)

    def policy(self, run: int):
        """The final policy of run ``run`` as a ``klipjax.policy.Policy``: pure JAX,
        ``policy.act(obs, key=None, deterministic=True)``; ``policy.save(dir)``
        exports it.

        Raises:
            ConfigError: No such run, or no parameters (a directory without
                checkpoints).
        """
        import jax
        import jax.numpy as jnp

        from klipjax import envs
        from klipjax.policy import Policy, PolicySpec

        if isinstance(run, bool) or not isinstance(run, (int, np.integer)):
            raise ConfigError(f"run={run!r}: expected a run index")
        if not 0 <= run < self.num_runs:
            raise ConfigError(f"run={run}: no such run (runs 0..{self.num_runs - 1})")
        if self.params is None or self.obs_stats is None:
            raise ConfigError(
                "these results hold no parameters (the run directory has no checkpoint)"
            )

        def pick(tree):
            return jax.tree.map(lambda leaf: jnp.asarray(leaf[run]), tree)

        spec = PolicySpec.of(
            self.config.env, envs.make(self.config.env), self.config.hidden_sizes
        )
        return Policy(
            pick(self.params["actor"]),
            pick(self.obs_stats),
            jnp.asarray(bool(self.hparams.normalize_obs[run] > 0)),
            spec,
        )

    def settings(self, finals: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Per setting (seeds pooled), its label, values, final-return statistics
        and the final return of each seed (``summary.json``'s ``settings``);
        ``finals`` are ``final_returns()`` if already computed."""
        finals = self.final_returns() if finals is None else finals
        return tables.group_final_returns(self.hparams, self.varying, finals)

    def summary(self) -> pd.DataFrame:
        """One row per setting (the loss and varying hyperparameters), seeds pooled:
        ``mean``, ``std`` (population) and ``n`` (seeds with a final return)."""
        rows = []
        for setting in self.settings():
            values = np.asarray(setting.pop("values"), np.float64)
            setting.pop("seeds")
            rows.append({**setting, "n": int(np.isfinite(values).sum())})
        import pandas as pd

        return pd.DataFrame(rows)

    def summary_dict(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        finals = self.final_returns()
        evaluated = self.final_evaluation(), self.final_evaluation(False)
        runs = []
        for run in range(self.num_runs):
            values = run_table.run_values(self.hparams, run)
            record = {
                "run": run,
                "loss": values.pop("loss"),
                "seed": values.pop("seed"),
                "hparams": values,
                "final_return": float(finals[run]),
                "final_eval_return_det": float(evaluated[0][run]),
                "final_eval_return": float(evaluated[1][run]),
                "params_sha256": self.params_sha256[run],
                "status": self.status[run],
            }
            if self.diverged_at[run] >= 0:
                record["diverged_at_update"] = int(self.diverged_at[run])
            runs.append(record)
        return {
            "env": self.config.env,
            "total_steps": self.config.env_steps,
            "num_runs": self.num_runs,
            "complete": self.complete,
            "updates_done": int(self.metrics["env_steps"].shape[1]),
            "swept": list(self.varying),
            **self.timing,
            "identity": self.identity,
            "settings": self.settings(finals),
            # The same settings scored by the final evaluation's greedy return.
            "final_evaluation": {
                "episodes": self.config.final_eval_episodes,
                "settings": self.settings(evaluated[0]),
            },
            "runs": runs,
        }

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Writes ``config.yaml``, ``metrics.parquet``, ``summary.json`` and the
        figures into ``out_dir`` (created if needed), each file atomically."""
        out = Path(out_dir)
        write_yaml(
            out / CONFIG_FILE,
            config_files.to_dict(self.config, self.hparams, self.options),
        )
        frame = self.frame()
        write_parquet(out / METRICS_FILE, frame)
        write_json(out / SUMMARY_FILE, self.summary_dict())
        self.draw(out, frame)
        return out

    def draw(self, out_dir: str | os.PathLike[str], frame=None) -> list[Path]:
        """Draws ``curves.png``, ``diagnostics.png`` and, with periodic
        evaluations, ``evaluation.png`` into ``out_dir``; returns their paths."""
        from klipjax.outputs import plots  # matplotlib only when drawing

        out = Path(out_dir)
        frame = self.frame() if frame is None else frame
        if not len(frame):
            return []
        swept = self.varying
        drawn = [
            plots.plot_curves(
                frame, out / "curves.png", swept=swept, title=self.config.env
            ),
            plots.plot_metric_panels(
                frame,
                out / "diagnostics.png",
                [m for m in PANEL_METRICS if m in frame.columns],
                swept=swept,
            ),
        ]
        evaluated = frame.dropna(subset=[c for c in ["eval_return_det"] if c in frame])
        if "eval_return_det" in frame and evaluated["update"].nunique() >= 2:
            drawn.append(  # a curve, not just the final point
                plots.plot_curves(
                    evaluated,
                    out / "evaluation.png",
                    y="eval_return_det",
                    swept=swept,
                    title=f"{self.config.env}: greedy evaluation",
                )
            )
        return drawn


def load(out_dir: str | os.PathLike[str]) -> Results:
    """Reads a directory that ``train``, ``Results.save`` or ``klipjax train`` wrote.

    Final parameters come from the directory's latest checkpoint when it has one.

    Raises:
        ConfigError: The directory lacks ``config.yaml``, ``summary.json`` or
            ``metrics.parquet``.
    """
    out = Path(out_dir)
    for name in (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE):
        if not (out / name).is_file():
            raise ConfigError(f"{str(out)!r} is not a results directory (no {name})")
    experiment = config_files.load(out / CONFIG_FILE)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    import pandas as pd

    frame = pd.read_parquet(out / METRICS_FILE, engine="pyarrow")
    num_runs = run_table.num_runs(experiment.hparams)
    metric_names = [
        c for c in frame.columns if c not in (*tables.INDEX_COLUMNS, *summary["swept"])
    ]
    updates = summary["updates_done"]
    metrics = {
        name: frame[name].to_numpy(np.float32).reshape(num_runs, updates)
        for name in metric_names
    }
    runs = summary["runs"]
    params, obs_stats = _checkpointed_state(out)
    return Results(
        config=experiment.config,
        hparams=experiment.hparams,
        metrics=metrics,
        params=params,
        status=tuple(run["status"] for run in runs),
        diverged_at=np.asarray([run.get("diverged_at_update", -1) for run in runs]),
        params_sha256=tuple(run["params_sha256"] for run in runs),
        identity=summary["identity"],
        timing={key: summary[key] for key in TIMING_KEYS if key in summary},
        options=experiment.options,
        obs_stats=obs_stats,
    )


def _checkpointed_state(out: Path) -> tuple:
    """``(params, obs_stats)`` from the latest checkpoint, or ``(None, None)``."""
    from klipjax.engine import checkpoint

    if not (out / checkpoint.CHECKPOINT_DIR).is_dir():
        return None, None
    return checkpoint.latest_state(out) or (None, None)
