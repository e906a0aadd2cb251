"""The reproduction: verdict criteria on synthetic curves, claims on hand-made trials, the report
writer, the sized study configs, and the CLI end to end (tiny sizing, real MLflow server)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from complexity_tracker.cli.main import main
from complexity_tracker.config import RunConfig
from complexity_tracker.reproduce import (
    NOT_REPRODUCED,
    PARTLY,
    QUICK,
    REPRODUCED,
    TINY,
    ClaimResult,
    ReportContext,
    render_markdown,
    write_report,
)
from complexity_tracker.reproduce import claims, criteria
from complexity_tracker.reproduce.collect import TrialRecord
from complexity_tracker.reproduce.robust_eval import LambdaRobustness
from complexity_tracker.reproduce.sizing import STUDY_STEMS, dump_toml, sized_study
from complexity_tracker.robustness import TransferMatrix

EPOCHS = np.arange(21)
V_CURVE = 8.0 - 1.5 * np.sin(np.pi * EPOCHS / 20)            # falls by 1.5 bits, back up to 8
RISING = 5.0 + 3.0 * EPOCHS / 20                               # monotone, never saturates
SATURATING = 8.0 - 3.0 * np.exp(-EPOCHS / 3.0)                 # rises early, flat later
FALLING = 8.0 - 3.0 * EPOCHS / 20


# ------------------------------------------------------------------------------ criteria

def test_fall_then_rise_criterion_on_synthetic_curves() -> None:
    assert criteria.falls_then_rises(EPOCHS, V_CURVE)
    assert not criteria.falls_then_rises(EPOCHS, RISING)
    assert not criteria.falls_then_rises(EPOCHS, FALLING)
    shallow = 8.0 - 0.1 * np.sin(np.pi * EPOCHS / 20)          # a dip smaller than MIN_CHANGE_BITS
    assert not criteria.falls_then_rises(EPOCHS, shallow)
    shape = criteria.curve_shape(EPOCHS, V_CURVE)
    assert shape.argmin_epoch == 10 and shape.drop == pytest.approx(1.5)


def test_rise_then_saturate_criterion_on_synthetic_curves() -> None:
    assert criteria.rises_then_saturates(EPOCHS, SATURATING)
    assert not criteria.rises_then_saturates(EPOCHS, RISING), "a linear rise has not saturated"
    assert not criteria.rises_then_saturates(EPOCHS, V_CURVE), "falling first is phenomenon 1, not 2"
    assert not criteria.rises_then_saturates(EPOCHS, FALLING)


def test_shrink_and_decrease_criteria() -> None:
    assert criteria.shrinks(EPOCHS, FALLING)
    assert not criteria.shrinks(EPOCHS, np.full(21, 3.32))
    assert not criteria.shrinks(EPOCHS, V_CURVE), "ends where it started"
    assert criteria.has_decrease([1.0, 2.0, 1.5, 3.0])
    assert not criteria.has_decrease([1.0, 2.0, 1.9, 3.0]), "a 0.1-bit step is within the tolerance"
    assert criteria.has_decrease([2.0, math.nan, 1.0]) and not criteria.has_decrease([1.0, math.nan, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        criteria.curve_shape([0], [1.0])


def test_verdict_aggregation_rules() -> None:
    assert criteria.fraction_verdict({"mlp": [True, True, False], "lenet": [True, True, True]}) == REPRODUCED
    assert criteria.fraction_verdict({"mlp": [False, False, False], "lenet": [True, True, True]}) == PARTLY
    assert criteria.fraction_verdict({"mlp": [False, False, True], "lenet": [False, False, False]}) == NOT_REPRODUCED
    assert criteria.fraction_verdict({}) == NOT_REPRODUCED
    assert criteria.correlation_verdict(-0.9, 0.001, 20, -1) == REPRODUCED
    assert criteria.correlation_verdict(-0.9, 0.001, 3, -1) == PARTLY, "too few points to count"
    assert criteria.correlation_verdict(-0.2, 0.4, 20, -1) == PARTLY
    assert criteria.correlation_verdict(0.9, 0.001, 20, -1) == NOT_REPRODUCED
    assert criteria.correlation_verdict(math.nan, math.nan, 20, -1) == NOT_REPRODUCED
    assert criteria.combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert criteria.combine([REPRODUCED, NOT_REPRODUCED]) == PARTLY
    assert criteria.combine([NOT_REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED


# ------------------------------------------------------------------------------ claims on hand-made trials

def _record(number: int, curve: np.ndarray, *, model: str = "mlp", seed: int = 0, **config: object) -> TrialRecord:
    """A trial whose whole-network and single-layer H follow ``curve`` (C fixed at 10 bits)."""
    history = []
    for epoch, h in enumerate(curve):
        row = {"epoch": epoch, "test_acc": 0.9, "loss_gap": 0.1, "test_loss": 0.3}
        for layer in ("net.1", "network"):
            row.update({f"H/{layer}": h, f"I_XSY/{layer}": h / 3, f"I_XS/{layer}": h, f"C/{layer}": 10.0,
                        f"TC/{layer}": 10.0 - h})
        history.append(row)
    return TrialRecord(number, {}, RunConfig(model=model, seed=seed, **config), f"run{number}", history)


def test_phenomenon1_claim_follows_the_curves(tmp_path: Path) -> None:
    falling_rising = [_record(i, V_CURVE + 0.05 * i, model=m, seed=i) for i, m in enumerate(["mlp", "mlp", "lenet"])]
    result = claims.phenomenon1(falling_rising, tmp_path)
    assert result.verdict == REPRODUCED
    assert {row["model"] for row in result.our_measurements} == {"mlp", "lenet"}
    assert result.our_measurements[0]["fall then rise"] == "2/2"
    assert result.figures[0].is_file() and result.figures[0].stat().st_size > 1000

    monotone = [_record(i, RISING, seed=i) for i in range(3)]
    assert claims.phenomenon1(monotone, tmp_path).verdict == NOT_REPRODUCED


def test_entanglement_claim_uses_h_and_tc_per_layer(tmp_path: Path) -> None:
    # TC = C - H with constant C: every layer's rho(H, TC) is -1
    records = [_record(i, RISING + i, seed=i) for i in range(2)]
    result = claims.entanglement(records, tmp_path)
    assert result.verdict == REPRODUCED
    assert result.numbers["max_additivity_gap"] < 1e-9
    assert all(row["negative (p<0.05)"] == "yes" for row in result.our_measurements)


def _ceiling_records(h: np.ndarray, acc: float = 0.9) -> list[TrialRecord]:
    """One trial per (depth, task order) cell with final H = ``h[depth index, order index]``."""
    records = []
    for i, depth in enumerate((1, 2, 4)):
        for j, order in enumerate((1, 2, 3)):
            record = _record(len(records), np.array([5.0, h[i, j]]), depth=depth, task_order=order,
                             dataset="synthetic")
            record.history[-1]["test_acc"] = acc
            records.append(record)
    return records


def test_ceiling_claim_judges_monotonicity_over_learned_cells(tmp_path: Path) -> None:
    bumpy = np.array([[6.0, 7.0, 6.0], [7.0, 6.0, 7.5], [5.0, 7.5, 6.5]])
    assert claims.ceiling(_ceiling_records(bumpy), tmp_path).verdict == REPRODUCED
    increasing = np.add.outer(np.arange(3.0), np.arange(3.0)) + 4.0
    assert claims.ceiling(_ceiling_records(increasing), tmp_path).verdict == NOT_REPRODUCED
    unlearned = claims.ceiling(_ceiling_records(bumpy, acc=0.5), tmp_path)
    assert unlearned.verdict == NOT_REPRODUCED, "cells at chance level are not evidence"
    assert "9 of 9 cells stayed near chance" in unlearned.reason


def test_transferability_claim_from_matrices(tmp_path: Path) -> None:
    names = ["simple", "middle", "complex"]
    asymmetric = np.array([[1.0, 0.6, 0.5], [0.2, 1.0, 0.6], [0.1, 0.2, 1.0]])
    matrix = TransferMatrix(names, asymmetric, np.full((3, 3), 100), "pgd_linf", 0.1)
    evaluation = LambdaRobustness([], "deepfool", transfer={0: matrix})
    assert claims.transferability(evaluation, tmp_path).verdict == REPRODUCED
    reverse = TransferMatrix(names, asymmetric.T.copy(), np.full((3, 3), 100), "pgd_linf", 0.1)
    result = claims.transferability(LambdaRobustness([], "deepfool", transfer={0: reverse}), tmp_path)
    assert result.verdict == NOT_REPRODUCED
    assert result.numbers["transfer_asymmetry"] < 0


# ------------------------------------------------------------------------------ report writer

def test_report_has_a_section_and_a_verdict_line_per_claim(tmp_path: Path) -> None:
    figure = tmp_path / "reproduction" / "p1.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    results = [
        ClaimResult("p1", "Phenomenon 1", "falls then rises", "10.85 -> 7.35 -> 10.65",
                    [{"model": "mlp", "H | last": "8.1 ± 0.2"}], REPRODUCED, "3 of 3 runs", "drop >= 0.2 bits",
                    [figure]),
        ClaimResult("ceil", "The ceiling", "not monotonic", "curves only", [], NOT_REPRODUCED, "monotone", "steps"),
    ]
    path = write_report(results, ReportContext("tiny", 90.0, notes=["a note"]), tmp_path / "reproduction.md")
    text = path.read_text()
    assert text.count("\n## Phenomenon 1\n") == 1 and text.count("\n## The ceiling\n") == 1
    assert "**Verdict: reproduced.** 3 of 3 runs." in text
    assert "**Verdict: not reproduced.** monotone." in text
    assert "![p1](reproduction/p1.png)" in text
    assert "| mlp | 8.1 ± 0.2 |" in text and "H \\| last" in text, "pipes inside cells are escaped"
    assert "wall time of this invocation: **1.5 min**" in text and "- a note" in text
    summary = text.split("## Summary")[1].split("##")[0]
    assert "✅ reproduced" in summary and "❌ not reproduced" in summary
    assert render_markdown(results, ReportContext("tiny", 90.0), tmp_path) == text.replace("\n- a note", "")
    with pytest.raises(ValueError, match="verdict"):
        ClaimResult("x", "x", "x", "x", [], "probably", "x", "x")


# ------------------------------------------------------------------------------ sized study configs

@pytest.mark.parametrize("sizing", [QUICK, TINY], ids=lambda s: s.name)
def test_sized_configs_are_valid_and_renamed(sizing, tmp_path: Path) -> None:
    for stem in STUDY_STEMS:
        config, path = sized_study(stem, sizing, tmp_path)
        assert config.study.name.endswith(f"-{sizing.name}")
        with path.open("rb") as handle:
            written = tomllib.load(handle)
        assert written["study"]["name"] == config.study.name
        assert config.base_run_config().epochs <= 20
        assert len(config.grid()) == config.study.n_trials


def test_dump_toml_round_trips() -> None:
    document = {"study": {"name": 'a "b"', "n": 3, "flag": True},
                "search": {"x": [1.5, -2.0], "lam": {"choices": [-1.0], "include_zero": False}}}
    assert tomllib.loads(dump_toml(document)) == document


# ------------------------------------------------------------------------------ CLI end to end

def test_cli_tiny_reproduction_logs_report_and_resumes(tmp_path: Path, mlflow_server_url: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["reproduce", "--tiny", "--only", "phenomenon2", "--out", str(out), "--tracking-uri", mlflow_server_url,
            "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "phenomenon2" in printed and "report:" in printed
    text = (out / "reproduction.md").read_text()
    assert "## Phenomenon 2: residual networks, complexity rises early, then saturates" in text
    assert (out / "reproduction" / "phenomenon2.png").is_file()

    client = MlflowClient(mlflow_server_url)
    experiment = client.get_experiment_by_name("reproduce")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    verdict = runs[0].data.tags["verdict.phenomenon2"]
    assert runs[0].data.metrics["verdict/phenomenon2"] == {REPRODUCED: 1.0, PARTLY: 0.5, NOT_REPRODUCED: 0.0}[verdict]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"reproduction.md", "reproduction"} <= artifacts
    trial_runs = client.search_runs([client.get_experiment_by_name("paper-phenomenon2-tiny").experiment_id],
                                    "tags.`optuna.role` = 'trial'")
    assert len(trial_runs) == 2

    assert main(argv) == 0, "a second invocation resumes the finished study"
    assert len(client.search_runs([client.get_experiment_by_name("paper-phenomenon2-tiny").experiment_id],
                                  "tags.`optuna.role` = 'trial'")) == 2, "no trial was trained again"
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_cli_rejects_unknown_claim(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reproduce", "--only", "phenomenon9"])
    assert "invalid choice" in capsys.readouterr().err
