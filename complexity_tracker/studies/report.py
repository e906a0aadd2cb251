"""Tables and figures of a study, rebuilt from the Optuna storage and the MLflow runs.

* :func:`trial_rows` / :func:`format_table`: the ``study status`` table.
* :func:`write_report`: ``trials.csv`` and the figures that fit the search space (ceiling heatmap
  and curves for depth x task order, the lambda sweep, the Pareto front of two objectives,
  parameter importances), written to a folder and logged on the study's parent run under
  ``study/``.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from .. import plots, text_table
from .budget import SURPLUS_ATTR, retried_numbers
from .config import LAM_IS_ZERO, LOG10_LAM, StudyConfig
from .mlflow_runs import INTERRUPTED_ATTR, RUN_ID_ATTR

NETWORK_COMPLEXITY = ("H/network", "I_XSY/network")
#: Importances need this many COMPLETE trials (fANOVA on fewer is noise).
MIN_TRIALS_FOR_IMPORTANCE = 4
METRIC_LABELS = {
    "test_loss": "test loss (nats)",
    "train_loss": "train loss (nats)",
    "loss_gap": "test - train loss (nats)",
    "test_acc": "test accuracy",
    "train_acc": "train accuracy",
    "H/network": "H(S) network (bits)",
    "I_XSY/network": "I(X;S;Y) network (bits)",
    "I_XS/network": "I(X;S) network (bits)",
}


def state_label(trial: FrozenTrial, retried: set[int]) -> str:
    """The Optuna state, with why a FAIL happened when known (interrupted, retried)."""
    label = trial.state.name
    if trial.state == TrialState.FAIL:
        if trial.user_attrs.get(INTERRUPTED_ATTR):
            label += " (interrupted)"
        if trial.number in retried:
            label += " -> retried"
    return label


def study_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial except the surplus ones (pruned at once, without a run)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]


def param_names(config: StudyConfig) -> list[str]:
    """Names of the study's Optuna parameters, in config order."""
    names = []
    for param in config.search:
        if param.include_zero and param.choices is None:
            names.append(LAM_IS_ZERO)
        names.append(param.name)
    return names


def trial_rows(study: optuna.Study, config: StudyConfig, per_layer: bool = False) -> list[dict[str, Any]]:
    """One row per trial: number, state, parameters, objective values, complexity (bits), run id."""
    trials = study_trials(study)
    retried = retried_numbers(trials)
    rows = []
    for trial in trials:
        row: dict[str, Any] = {"trial": trial.number, "state": state_label(trial, retried)}
        row.update({name: trial.params.get(name) for name in param_names(config)})
        for index, objective in enumerate(config.study.objectives):
            row[objective] = trial.values[index] if trial.values is not None else None
        complexity = {k: v for k, v in trial.user_attrs.items() if k.startswith(("H/", "I_XSY/"))}
        for key in NETWORK_COMPLEXITY:
            row[key] = complexity.get(key)
        if per_layer:
            row.update({k: v for k, v in complexity.items() if k not in NETWORK_COMPLEXITY})
            row["lam"] = trial.user_attrs.get("lam")
        row["mlflow_run_id"] = trial.user_attrs.get(RUN_ID_ATTR)
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of :func:`trial_rows` as an aligned text table (floats with 4 significant digits; run ids
    shortened)."""
    if not rows:
        return "(no trials yet)"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    cells = [
        [str(row[c])[:8] if c == "mlflow_run_id" and row.get(c) else row.get(c) for c in columns] for row in rows
    ]
    return text_table.format_table(["run" if c == "mlflow_run_id" else c for c in columns], cells)


def summary_line(study: optuna.Study, config: StudyConfig) -> str:
    counts: dict[str, int] = defaultdict(int)
    for trial in study_trials(study):
        counts[trial.state.name] += 1
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    return f"study {study.study_name!r}: {config.study.n_trials} slots; trials: {states or 'none'}"


def write_report(
    study: optuna.Study,
    config: StudyConfig,
    out_dir: str | Path,
    *,
    client: MlflowClient | None = None,
    parent_run_id: str | None = None,
) -> list[Path]:
    """Write ``trials.csv`` and the study's figures into ``out_dir``; with ``client`` and
    ``parent_run_id`` also read per-epoch curves from the trial runs and log everything on the
    parent run under ``study/``.  Returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_csv(out / "trials.csv", trial_rows(study, config, per_layer=True))]
    complete = [t for t in study_trials(study) if t.state == TrialState.COMPLETE]
    figures: dict[str, Figure] = {}
    if config.searched("depth") and config.searched("task_order"):
        figures.update(ceiling_figures(complete))
    if config.searched(LOG10_LAM):
        figures["gap_vs_lambda.png"] = lambda_figure(complete, config)
    if client is not None:
        figures.update(epoch_curve_figures(client, complete, config))
    if len(config.study.objectives) == 2:
        figure = pareto_figure(study, complete, config)
        if figure is not None:
            figures["pareto_front.png"] = figure
    importances = param_importances(study, complete, config)
    if importances:
        figures["param_importances.png"] = plots.plot_param_importances(importances)
    for name, figure in figures.items():
        path = out / name
        figure.savefig(path, dpi=110)
        written.append(path)
    if client is not None and parent_run_id is not None:
        client.log_artifacts(parent_run_id, str(out), artifact_path="study")
    return written


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def ceiling_figures(trials: Sequence[FrozenTrial]) -> dict[str, Figure]:
    """Heatmaps (depth x task order n) and curves over n per depth of the final network complexity;
    cells with several trials (seeds) show their mean."""
    cells: dict[tuple[int, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        for key in NETWORK_COMPLEXITY:
            if key in trial.user_attrs:
                cells[(trial.params["depth"], trial.params["task_order"])][key].append(trial.user_attrs[key])
    if not cells:
        return {}
    depths = sorted({d for d, _ in cells})
    orders = sorted({n for _, n in cells})
    figures: dict[str, Figure] = {}
    for key in NETWORK_COMPLEXITY:
        matrix = np.full((len(depths), len(orders)), np.nan)
        for (depth, order), values in cells.items():
            if values.get(key):
                matrix[depths.index(depth), orders.index(order)] = float(np.mean(values[key]))
        name = key.split("/")[0]
        figures[f"ceiling_heatmap_{name}.png"] = plots.plot_heatmap(
            matrix, depths, orders, title=f"final {METRIC_LABELS[key]}", row_name="depth",
            column_name="task order n",
        )
        series = {
            f"depth {depth}": (orders, [float(v) for v in matrix[depths.index(depth)]]) for depth in depths
        }
        figures[f"ceiling_vs_order_{name}.png"] = plots.plot_curves(
            series, title=f"final {METRIC_LABELS[key]} against task order", xlabel="task order n",
        )
    return figures


def lambda_figure(trials: Sequence[FrozenTrial], config: StudyConfig) -> Figure:
    """Gap, test loss and complexity against log10 lambda (lambda = 0 at the left)."""
    points = []
    for trial in trials:
        log10_lam = None if trial.params.get(LAM_IS_ZERO) else trial.params.get(LOG10_LAM)
        values = {k: v for k, v in trial.user_attrs.items() if k in NETWORK_COMPLEXITY}
        values.update(dict(zip(config.study.objectives, trial.values)))
        points.append((log10_lam, values))
    metrics = {k: METRIC_LABELS[k] for k in ("loss_gap", "test_loss") if k in config.study.objectives}
    metrics.update({k: METRIC_LABELS[k] for k in NETWORK_COMPLEXITY})
    return plots.plot_lambda_sweep(points, metrics, title=f"{config.study.name}: complexity loss sweep")


def trial_label(trial: FrozenTrial) -> str:
    params = trial.params
    if params.get(LAM_IS_ZERO) or (LOG10_LAM in params and params[LOG10_LAM] is None):
        params = {**{k: v for k, v in params.items() if k not in (LAM_IS_ZERO, LOG10_LAM)}, "lam": 0}
    params = {k: v for k, v in params.items() if k != LAM_IS_ZERO}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def epoch_curve_figures(client: MlflowClient, trials: Sequence[FrozenTrial], config: StudyConfig) -> dict[str, Figure]:
    """Network complexity against the epoch for every complete trial, read from its MLflow run
    (like the paper's training-dynamics figures)."""
    figures = {}
    for key in NETWORK_COMPLEXITY:
        series = {}
        for trial in sorted(trials, key=trial_label):
            run_id = trial.user_attrs.get(RUN_ID_ATTR)
            if run_id is None:
                continue
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            if history:
                series[trial_label(trial)] = ([m.step for m in history], [m.value for m in history])
        if series:
            figures[f"curves_{key.split('/')[0]}.png"] = plots.plot_curves(
                series, title=f"{METRIC_LABELS[key]} during training", xlabel="epoch",
            )
    return figures


def pareto_figure(study: optuna.Study, trials: Sequence[FrozenTrial], config: StudyConfig) -> Figure | None:
    if not trials:
        return None
    front = {t.number for t in study.best_trials}
    values = [t.values for t in trials]
    on_front = [t.number in front for t in trials]
    names = tuple(METRIC_LABELS[o] for o in config.study.objectives)
    return plots.plot_pareto_front(
        values, on_front, names, labels=[trial_label(t) for t in trials], title=f"{config.study.name}: Pareto front"
    )


def param_importances(
    study: optuna.Study, trials: Sequence[FrozenTrial], config: StudyConfig
) -> dict[str, dict[str, float]]:
    """``{objective: {param: importance}}`` by Optuna's default evaluator (fANOVA), or ``{}`` when
    fewer than :data:`MIN_TRIALS_FOR_IMPORTANCE` trials are complete or no parameter varies.

    ``log10_lam`` and its ``lam_is_zero`` switch count as one parameter, lambda = 0 placed one
    decade below the searched range (:func:`lambda_as_one_param`): otherwise the trials at
    lambda = 0, which have no log10_lam, would leave it out of the importances altogether.
    """
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    trials = lambda_as_one_param(trials)
    varying = [name for name in trials[0].params if len({repr(t.params.get(name)) for t in trials}) > 1]
    varying = [name for name in varying if all(name in t.params for t in trials)]
    if not varying:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        merged = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    merged.add_trials(trials)
    importances = {}
    for index, objective in enumerate(config.study.objectives):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                merged, params=varying, target=lambda t, i=index: t.values[i]
            )
        importances[objective] = {k: v for k, v in values.items() if math.isfinite(v)}
    return importances


def lambda_as_one_param(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Copies of ``trials`` in which lambda = 0 (``lam_is_zero``) is ``log10_lam`` one decade below
    the smallest log10 lambda tried, so that every trial has a ``log10_lam``."""
    tried = [t.params[LOG10_LAM] for t in trials if LOG10_LAM in t.params]
    if not tried or all(LOG10_LAM in t.params for t in trials):
        return list(trials)
    low, high = min(tried) - 1.0, max(tried)
    merged = []
    for trial in trials:
        params = {k: v for k, v in trial.params.items() if k != LAM_IS_ZERO}
        distributions = {k: v for k, v in trial.distributions.items() if k != LAM_IS_ZERO}
        params.setdefault(LOG10_LAM, low)
        distributions[LOG10_LAM] = optuna.distributions.FloatDistribution(low, high)
        merged.append(optuna.trial.create_trial(params=params, distributions=distributions, values=trial.values,
                                                state=TrialState.COMPLETE))
    return merged
