"""`klipjax reproduce` builds its report from tiny runs, so the report code cannot rot."""

import dataclasses
import json

import pandas as pd

from klipjax.cli import main
from klipjax.config import files, run_table
from klipjax.engine import hardware
from klipjax.outputs import report as reproduce


def test_every_group_has_a_preset_that_loads():
    for name in reproduce.GROUPS:
        full = reproduce.group_experiment(name, quick=False)
        quick = reproduce.group_experiment(name, quick=True)
        assert len(quick.hparams.seed) < len(full.hparams.seed)
        assert quick.config.num_updates < full.config.num_updates
        assert quick.config.num_updates >= reproduce.QUICK_MIN_UPDATES
    baseline = reproduce.group_experiment("cartpole", quick=False)
    # the paper's CartPole recipe is the default sweep, plus the live identity check
    default = files.load(None).config
    assert baseline.config == dataclasses.replace(default, identity_check=True)
    assert set(run_table.column(baseline.hparams, "loss")) == set(reproduce.VARIANTS)


def test_report_from_tiny_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "QUICK_MAX_STEPS", 1024)
    monkeypatch.setattr(reproduce, "QUICK_MIN_UPDATES", 2)
    out = tmp_path / "repro"
    assert (
        main(["reproduce", "cartpole", "cartpole_beta", "--quick", "--out", str(out)])
        == 0
    )
    report = (out / "REPORT.md").read_text()
    assert "QUICK mode" in report
    # one row per task and variant: IQM, its 95% CI, mean, seeds, P(> PPO-Clip),
    # the IQM of the greedy final evaluation and the paper's mean ± std
    assert "| task | env steps | variant | IQM | 95% CI | mean | n |" in report
    row = next(line for line in report.splitlines() if "| fixed beta |" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "CartPole-v1" and cells[6] == "2" and cells[-1] == "484 ± 23"
    assert cells[4].startswith("[") and cells[7][0] in "01"  # a CI; a probability
    assert 0 < float(cells[8]) <= 500  # the greedy evaluation's IQM
    assert "| CartPole-v1 | 1k (paper 100k) | PPO-Clip |" in report
    baseline = next(line for line in report.splitlines() if "| baseline |" in line)
    assert baseline.endswith("| 478 ± 18 |")
    assert "| setting | beta | IQM | 95% CI | mean | n |" in report
    assert (
        "| 1k (paper 100k) |" in report
    )  # a shorter budget than the paper's is flagged
    assert "| CartPole-v1 | 2 | yes | 0 | 0 |" in report  # identity: live gap 0
    assert "### cartpole_beta" in report and "| kl_fixed | 10 |" in report
    # the cost table says what each group ran on (the suite's one CPU device)
    cost = next(line for line in report.splitlines() if line.startswith("| cartpole |"))
    assert cost.endswith(f"| 1 x cpu ({hardware.host_cpu()}) |")
    figures = [
        "curves.png",
        "identity.png",
        "partition.png",
        "beta.png",
        "kl_beta.png",
        "knobs.png",
    ]
    for figure in figures:
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
        assert f"({figure})" in report
    capsys.readouterr()
    # a second call finds both groups complete and only rebuilds the report
    (out / "REPORT.md").unlink()
    assert main(["reproduce", "cartpole", "cartpole_beta", "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("already complete") == 2
    assert (out / "REPORT.md").is_file()


def _body(report: str) -> list[str]:
    """The report's lines but its first one (the date it was written)."""
    return report.splitlines()[3:]


def test_report_rebuilds_from_the_kept_columns_or_without_them(tmp_path, monkeypatch):
    """A directory under version control keeps `report_metrics.parquet`, not the
    full metrics: the report it rebuilds is the same; with neither, the tables
    still come from summary.json and the report says what it cannot draw."""
    monkeypatch.setattr(reproduce, "QUICK_MAX_STEPS", 1024)
    monkeypatch.setattr(reproduce, "QUICK_MIN_UPDATES", 2)
    out = tmp_path / "repro"
    assert main(["reproduce", "cartpole", "--quick", "--out", str(out)]) == 0
    group = out / "cartpole"
    kept = pd.read_parquet(group / reproduce.REPORT_METRICS_FILE)
    full = pd.read_parquet(group / "metrics.parquet")
    assert list(kept.columns) == [c for c in reproduce.REPORT_COLUMNS if c in full]
    assert "identity_gap" in kept and len(kept) == len(full)
    assert len(full.columns) > 2 * len(kept.columns)  # the point of the small file
    with_full = (out / "REPORT.md").read_text()
    assert "not kept" not in with_full

    (group / "metrics.parquet").unlink()
    with_kept = reproduce.write_report(out, quick=True).read_text()
    assert _body(with_kept) == _body(with_full)

    (group / reproduce.REPORT_METRICS_FILE).unlink()
    (out / "curves.png").unlink()
    summary = json.loads((group / "summary.json").read_text())
    del summary["hardware"]  # as in a summary written before it was recorded
    (group / "summary.json").write_text(json.dumps(summary))
    bare = reproduce.write_report(out, quick=True).read_text()
    assert "No per-update metrics are kept for cartpole" in bare
    assert not (out / "curves.png").exists() and "(curves.png)" not in bare
    # the final returns and the identity of parameters come from summary.json
    returns = [line for line in _body(with_full) if line.startswith("| CartPole-v1 |")]
    assert returns and all(line in bare for line in returns[:4])
    assert "| CartPole-v1 | 2 | yes | 0 | not kept |" in bare
    assert any(
        line.startswith("| cartpole |") and line.endswith("| not recorded |")
        for line in bare.splitlines()
    )
    # such a summary given its hardware by hand from the run's notes says so
    summary.pop("devices", None)  # not recorded either
    summary["hardware"] = {
        "platform": "gpu",
        "device_kind": "NVIDIA H100",
        "host_cpu": "not recorded",
        "jax": "0.11.2",
        "noted_after_the_run": "RUNS.md",
    }
    (group / "summary.json").write_text(json.dumps(summary))
    noted = reproduce.write_report(out, quick=True).read_text()
    assert any(
        line.startswith("| cartpole |")
        and line.endswith("| NVIDIA H100 (noted after the run, RUNS.md) |")
        for line in noted.splitlines()
    )


def test_unknown_group_is_a_clean_error(capsys):
    assert main(["reproduce", "cartpol"]) == 2
    assert "did you mean cartpole" in capsys.readouterr().err


def test_a_group_run_shorter_than_its_preset_is_named():
    def ran(total_steps):
        summary = {"total_steps": total_steps}
        return reproduce.GroupResult(reproduce.GROUPS["brax_humanoid"], summary, None)

    assert reproduce._shortened([ran(488 * 2048)]) == [
        "brax_humanoid ran 1M env steps per run, not its preset's 10M"
    ]
    assert reproduce._shortened([ran(4882 * 2048)]) == []  # the preset's 10M
