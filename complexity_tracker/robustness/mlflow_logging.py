"""Log a :class:`ComparisonResult` to MLflow: per model on its run, the comparison on a summary run."""

from __future__ import annotations

import csv
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from ..tracking import MAX_METRICS_PER_BATCH, get_or_create_experiment
from .comparison import ComparisonResult, json_safe
from .plots import plot_accuracy_vs_epsilon, plot_robustness_vs_complexity, plot_transfer_matrix
from .tables import report

#: Prefix of every metric and artifact folder written by the robustness evaluation.
PREFIX = "robustness"
#: Complexity values whose correlations are logged as metrics (all of them go into correlations.csv).
LOGGED_CORRELATION_COMPLEXITY = ("H/network", "I_XSY/network")


def _log_metrics(client: MlflowClient, run_id: str, values: dict[str, float]) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, 0) for key, value in values.items() if math.isfinite(value)]
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])


def summary_metrics(result: ComparisonResult) -> dict[str, float]:
    """Transfer asymmetry and Spearman rho/p of network complexity vs every non-per-epsilon measure."""
    values: dict[str, float] = {f"{PREFIX}/n_models": float(len(result.models))}
    if result.transfer is not None:
        values.update({f"{PREFIX}/{k}": v for k, v in result.transfer.summary().items()})
    keys = {*LOGGED_CORRELATION_COMPLEXITY, result.complexity_key}
    for c in result.correlations:
        if c.complexity in keys and not c.measure.startswith("robust_acc/"):
            values[f"{PREFIX}/spearman_rho/{c.complexity}/{c.measure}"] = c.rho
            values[f"{PREFIX}/spearman_p/{c.complexity}/{c.measure}"] = c.p_value
    return values


def write_artifacts(result: ComparisonResult, folder: Path) -> list[Path]:
    """``comparison.json``, ``correlations.csv``, ``tables.txt`` and the figures, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(result.to_json())
    (folder / "tables.txt").write_text(report(result) + "\n")
    with open(folder / "correlations.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["complexity", "measure", "rho", "p_value", "n", "exact"])
        writer.writeheader()
        writer.writerows(c.to_dict() for c in result.correlations)
    figures = {"robustness_vs_complexity.png": plot_robustness_vs_complexity(result),
               "accuracy_vs_epsilon.png": plot_accuracy_vs_epsilon(result)}
    if result.transfer is not None:
        figures["transfer_matrix.png"] = plot_transfer_matrix(result)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
    return sorted(folder.iterdir())


def log_comparison(
    result: ComparisonResult,
    tracking_uri: str,
    *,
    summary_run_id: str | None = None,
    experiment_name: str = "complexity-tracker",
) -> str:
    """Log each model's measures (``robustness/<measure>``) and ``robustness/robustness.json`` on its
    own run (models without a run are skipped), and the comparison (summary metrics, tables,
    correlations, figures under ``robustness/``) on ``summary_run_id`` (e.g. the study's parent run)
    or on a new FINISHED run ``robustness-evaluation`` in the first model run's experiment.

    Returns the id of the run holding the comparison.
    """
    client = MlflowClient(tracking_uri)
    for model in result.models:
        if model.run_id is None:
            continue
        _log_metrics(client, model.run_id, {f"{PREFIX}/{k}": v for k, v in model.measures().items()})
        summary = {"name": model.name, "complexity": model.complexity, "measures": model.measures(),
                   "config": result.config.to_dict()}
        client.log_dict(model.run_id, json_safe(summary), f"{PREFIX}/robustness.json")
    created = summary_run_id is None
    if created:
        model_runs = [m.run_id for m in result.models if m.run_id is not None]
        if model_runs:
            experiment_id = client.get_run(model_runs[0]).info.experiment_id
        else:
            experiment_id = get_or_create_experiment(client, experiment_name)
        summary_run_id = client.create_run(experiment_id, run_name="robustness-evaluation").info.run_id
    try:
        _log_metrics(client, summary_run_id, summary_metrics(result))
        with tempfile.TemporaryDirectory() as tmp:
            write_artifacts(result, Path(tmp))
            client.log_artifacts(summary_run_id, tmp, PREFIX)
    except BaseException:
        if created:
            client.set_terminated(summary_run_id, "FAILED")
        raise
    if created:
        client.set_terminated(summary_run_id, "FINISHED")
    return summary_run_id
