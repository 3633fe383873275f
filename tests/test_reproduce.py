"""`klipjax reproduce` builds its report from tiny runs, so the report code cannot rot."""

import dataclasses

from klipjax.cli import main
from klipjax.config import files, run_table
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
