"""Minimal L2 adversarial perturbation per sample from minimum-norm attacks (DeepFool, FAB-L2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .attacks import predict, run_attack
from .config import MIN_NORM_ATTACKS, RobustnessConfig, check_attack_name
from .progress import step


def l2_distances(adversarial: torch.Tensor, inputs: torch.Tensor) -> np.ndarray:
    """Per-sample Euclidean norm of ``adversarial - inputs`` over all features (float64)."""
    delta = (adversarial.double() - inputs.double()).reshape(inputs.shape[0], -1)
    return delta.norm(dim=1).numpy()


@dataclass
class MinimalPerturbation:
    """Smallest successful L2 perturbation per correctly classified sample.

    ``norms`` holds one value per correctly classified sample (in the order of ``indices`` into
    the evaluated inputs), ``NaN`` where no attack succeeded; ``attack_norms[name]`` holds what
    each attack found on its own (``NaN`` where it failed).  Median and mean are taken over the
    successful samples only; failures are counted in ``n_failed``, never averaged in as zeros.
    """

    indices: np.ndarray
    norms: np.ndarray
    attack_norms: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def attack_successes(self) -> dict[str, int]:
        """Samples each attack fooled on its own."""
        return {name: int(np.isfinite(norms).sum()) for name, norms in self.attack_norms.items()}

    @property
    def n_correct(self) -> int:
        return int(len(self.norms))

    @property
    def n_success(self) -> int:
        return int(np.isfinite(self.norms).sum())

    @property
    def n_failed(self) -> int:
        return self.n_correct - self.n_success

    @property
    def median(self) -> float:
        found = self.norms[np.isfinite(self.norms)]
        return float(np.median(found)) if len(found) else float("nan")

    @property
    def mean(self) -> float:
        found = self.norms[np.isfinite(self.norms)]
        return float(found.mean()) if len(found) else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "min_l2_median": self.median,
            "min_l2_mean": self.mean,
            "min_l2_n_success": float(self.n_success),
            "min_l2_n_failed": float(self.n_failed),
        }


def minimal_l2_perturbation(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    attacks: tuple[str, ...] = MIN_NORM_ATTACKS,
    config: RobustnessConfig | None = None,
    *,
    n_classes: int | None = None,
    bar: tqdm | None = None,
) -> MinimalPerturbation:
    """Run each minimum-norm attack on the correctly classified samples; keep the smallest success.

    A result counts as a success only if the model misclassifies it when re-classified here, and
    its norm is measured here as ``||adv - x||_2`` (attacks return no norms, and FAB returns the
    clean input where it fails).  ``bar`` advances by one per attack.
    """
    config = config or RobustnessConfig()
    for name in attacks:
        check_attack_name(name, MIN_NORM_ATTACKS)
    correct = np.flatnonzero((predict(model, inputs) == labels.cpu()).numpy())
    x, y = inputs[correct], labels[correct].cpu()
    attack_norms = {}
    for name in attacks:
        with step(bar, name):
            if len(correct) == 0:
                attack_norms[name] = np.zeros(0)
                continue
            adversarial = run_attack(model, x, y, name, config=config, n_classes=n_classes)
            fooled = (predict(model, adversarial) != y).numpy()
            attack_norms[name] = np.where(fooled, l2_distances(adversarial, x), np.nan)
    found = np.stack([np.where(np.isnan(n), np.inf, n) for n in attack_norms.values()]) if attack_norms else None
    best = found.min(axis=0) if found is not None else np.full(len(correct), np.inf)
    best[np.isinf(best)] = np.nan
    return MinimalPerturbation(indices=correct, norms=best, attack_norms=attack_norms)
