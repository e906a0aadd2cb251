"""Attacks on the models of the complexity-loss study: minimal L2 perturbation per model and a
transfer matrix per seed (models ordered by complexity), through :mod:`complexity_tracker.robustness`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from mlflow.tracking import MlflowClient

from ..data import load_data
from ..robustness import MIN_NORM_ATTACKS, RobustnessConfig, TransferMatrix, minimal_l2_perturbation, transfer_matrix
from ..robustness.evaluate import select_samples
from ..robustness.sources import from_run
from .collect import TrialRecord

@dataclass
class LambdaRobustness:
    """Per trial number: median minimal L2 perturbation (input units), samples attacked (correctly
    classified) and fooled; per seed: the transfer matrix of that seed's models, simplest first."""

    records: list[TrialRecord]
    attack: str
    min_l2: dict[int, float] = field(default_factory=dict)
    attacked: dict[int, int] = field(default_factory=dict)
    fooled: dict[int, int] = field(default_factory=dict)
    transfer: dict[int, TransferMatrix] = field(default_factory=dict)


def model_label(record: TrialRecord) -> str:
    """``"lam=0"`` or ``"lam=1e-3"``."""
    return "lam=0" if record.config.lam == 0 else f"lam=1e{np.log10(record.config.lam):g}"


def evaluate_lambda_models(
    records: Sequence[TrialRecord],
    tracking_uri: str,
    *,
    n_samples: int = 200,
    transfer_eps: float = 0.1,
    seed: int = 0,
) -> LambdaRobustness:
    """Minimal L2 perturbation of every model and the transfer matrix of every seed's models.

    The models are rebuilt from their MLflow runs (the study must log models); ``n_samples`` test
    samples (drawn with ``seed``) are attacked; transfer examples are PGD-Linf at ``transfer_eps``.
    """
    records = list(records)
    if not records:
        raise ValueError("no trained models to attack; run the complexity-loss study first")
    data = load_data(records[0].config)
    x, y = select_samples(data.x_test, data.y_test, n_samples, seed)
    config = RobustnessConfig(attacks=(), min_norm_attacks=MIN_NORM_ATTACKS, n_samples=n_samples,
                              transfer_attack="pgd_linf", transfer_eps=transfer_eps, seed=seed)
    client = MlflowClient(tracking_uri)
    models = {r.number: from_run(client, r.run_id).model for r in records}
    result = LambdaRobustness(records, " + ".join(MIN_NORM_ATTACKS))
    for record in records:
        minimal = minimal_l2_perturbation(models[record.number], x, y, MIN_NORM_ATTACKS, config)
        result.min_l2[record.number] = minimal.median
        result.attacked[record.number] = minimal.n_correct
        result.fooled[record.number] = minimal.n_success
    by_seed: dict[int, list[TrialRecord]] = {}
    for record in records:
        by_seed.setdefault(record.config.seed, []).append(record)
    for run_seed, group in by_seed.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (r.final["H/network"], r.number))
        result.transfer[run_seed] = transfer_matrix(
            [models[r.number] for r in group], [model_label(r) for r in group], x, y, config
        )
    return result
