"""Compare several trained classifiers: complexity, robustness, transferability and their correlation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..metrics import class_balanced_probe, measure_complexity
from .attacks import check_inputs
from .config import RobustnessConfig
from .correlation import Correlation, complexity_robustness_correlations
from .errors import IncompatibleModelsError
from .evaluate import RobustnessReport, attack_runs, evaluate_robustness, select_samples
from .progress import progress_bar
from .transfer import TransferMatrix, check_same_classes, transfer_matrix


@dataclass
class EvaluatedModel:
    """One model's complexity (bits, ``ComplexityReport.to_dict()`` keys) and robustness."""

    name: str
    complexity: dict[str, float]
    robustness: RobustnessReport
    run_id: str | None = None
    transfer: dict[str, float] = field(default_factory=dict)

    def measures(self) -> dict[str, float]:
        """Robustness measures plus ``transfer_out``/``transfer_in`` (mean rates to/from the other models)."""
        return {**self.robustness.measures(), **self.transfer}


@dataclass
class ComparisonResult:
    """Models ordered by ``complexity_key`` (ascending), their transfer matrix in that order, and
    the Spearman correlations between every complexity value and every robustness measure."""

    models: list[EvaluatedModel]
    transfer: TransferMatrix | None
    correlations: list[Correlation]
    complexity_key: str
    config: RobustnessConfig
    complexity_source: str = "measured"

    def to_json(self) -> str:
        """:meth:`to_dict` as strict JSON: NaN and infinities become ``null``."""
        return json.dumps(json_safe(self.to_dict()), indent=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "complexity_key": self.complexity_key,
            "complexity_source": self.complexity_source,
            "config": self.config.to_dict(),
            "models": [
                {"name": m.name, "run_id": m.run_id, "complexity": m.complexity, "measures": m.measures()}
                for m in self.models
            ],
            "transfer": self.transfer.to_dict() if self.transfer is not None else None,
            "correlations": [c.to_dict() for c in self.correlations],
        }


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None`` and numpy scalars by Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def compare_models(
    models: Mapping[str, nn.Module],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: RobustnessConfig | None = None,
    *,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
    probe_per_class: int = 200,
    complexity_key: str = "H/network",
    complexity_kwargs: Mapping[str, Any] | None = None,
    run_ids: Mapping[str, str] | None = None,
    transfer: bool = True,
    complexity: Mapping[str, Mapping[str, float]] | None = None,
    complexity_source: str | None = None,
    progress: bool = False,
) -> ComparisonResult:
    """Measure complexity and robustness of each model, the transfer matrix and the correlations.

    Args:
        models: name -> classifier; all must predict the same classes on inputs of the same shape.
        inputs, labels: evaluation data in [0, 1]; ``config.n_samples`` of them are attacked.
        config: attacks, budgets, seed.
        probe: (inputs, labels) on which complexity is measured; by default a class-balanced
            probe of ``probe_per_class`` samples per class drawn from ``inputs``.
        complexity_key: the complexity value (a ``ComplexityReport.to_dict()`` key, bits) that
            orders the models, e.g. ``"H/network"``.
        complexity_kwargs: extra arguments of :func:`~complexity_tracker.measure_complexity`.
        run_ids: name -> MLflow run id, kept on the results for logging.
        transfer: also compute the transfer matrix (needs >= 2 models to be informative).
        complexity: name -> complexity values already known (bits, e.g. what each model's run
            logged); when given, nothing is measured and ``probe`` is unused.
        complexity_source: how ``complexity`` was obtained, for the report.
        progress: show tqdm bars on stderr, one per model and one for the transfer matrix.
    """
    config = config or RobustnessConfig()
    if not models:
        raise IncompatibleModelsError("no models to compare; give at least one model")
    labels = labels.cpu()
    check_inputs(inputs, labels)
    names = list(models)
    n_classes = check_same_classes(list(models.values()), names, inputs)
    check_inputs(inputs, labels, n_classes)
    if complexity is None:
        if probe is None:
            chosen = torch.as_tensor(class_balanced_probe(labels, per_class=probe_per_class, seed=config.seed))
            probe = (inputs[chosen], labels[chosen])
        kwargs = dict(complexity_kwargs or {})
        complexity = {name: measure_complexity(models[name], *probe, **kwargs).to_dict() for name in names}
        complexity_source = complexity_source or (
            f"measured on a probe of {len(probe[1])} samples ({kwargs.get('estimator', 'kde')})"
        )
    complexity = {name: dict(complexity[name]) for name in names}
    missing = [name for name in names if complexity_key not in complexity[name]]
    if missing:
        raise IncompatibleModelsError(
            f"complexity_key {complexity_key!r} is not measured for {missing}; "
            f"available keys: {sorted(complexity[missing[0]])}"
        )

    def order(name: str) -> float:
        value = complexity[name][complexity_key]
        return math.inf if math.isnan(value) else value

    names.sort(key=order)
    evaluated = []
    for name in names:
        with progress_bar(name, attack_runs(config), progress) as bar:
            report = evaluate_robustness(models[name], inputs, labels, config, bar=bar)
        evaluated.append(EvaluatedModel(name, complexity[name], report, (run_ids or {}).get(name)))
    matrix = None
    if transfer and len(names) >= 2:
        x, y = select_samples(inputs, labels, config.n_samples, config.seed)
        with progress_bar("transfer", len(names), progress) as bar:
            matrix = transfer_matrix([models[name] for name in names], names, x, y, config, bar=bar)
        for index, model in enumerate(evaluated):
            model.transfer = {"transfer_out": matrix.outgoing(index), "transfer_in": matrix.incoming(index)}
    correlations = complexity_robustness_correlations(
        [m.complexity for m in evaluated], [m.measures() for m in evaluated]
    )
    return ComparisonResult(evaluated, matrix, correlations, complexity_key, config,
                            complexity_source or "given by the caller")
