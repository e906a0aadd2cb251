"""Robustness of one classifier: clean accuracy, robust accuracy per attack and epsilon, minimal L2 perturbation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .attacks import check_inputs, n_classes_of, predict, run_attack
from .config import RobustnessConfig
from .perturbation import MinimalPerturbation, minimal_l2_perturbation
from .progress import step


@dataclass
class RobustnessReport:
    """Robustness of one model on ``n_samples`` inputs (accuracies are fractions in [0, 1]).

    ``robust_accuracy[attack][eps]`` is the fraction of all evaluated samples still classified
    correctly after the attack (samples misclassified clean count as wrong).
    """

    clean_accuracy: float
    robust_accuracy: dict[str, dict[float, float]]
    minimal_perturbation: MinimalPerturbation | None
    n_samples: int

    def measures(self) -> dict[str, float]:
        """Flat ``{measure: value}``: ``clean_acc``, ``robust_acc/<attack>/<eps>``, the mean over each
        attack's grid ``robust_acc_mean/<attack>``, and ``min_l2_median``/``min_l2_mean`` (L2, input units)."""
        values = {"clean_acc": self.clean_accuracy}
        for attack, curve in self.robust_accuracy.items():
            values.update({f"robust_acc/{attack}/{eps:g}": acc for eps, acc in curve.items()})
            values[f"robust_acc_mean/{attack}"] = float(np.mean(list(curve.values())))
        if self.minimal_perturbation is not None:
            values.update(self.minimal_perturbation.summary())
        return values


def attack_runs(config: RobustnessConfig) -> int:
    """How many attack runs :func:`evaluate_robustness` makes: one per budgeted attack and epsilon,
    one per minimum-norm attack."""
    return sum(len(config.eps_grid(attack)) for attack in config.attacks) + len(config.min_norm_attacks)


def select_samples(
    inputs: torch.Tensor, labels: torch.Tensor, n_samples: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``n_samples`` (all when ``None`` or larger); the global RNG is untouched."""
    if n_samples is None or n_samples >= inputs.shape[0]:
        return inputs, labels
    order = torch.randperm(inputs.shape[0], generator=torch.Generator().manual_seed(seed))[:n_samples]
    order = order.sort().values
    return inputs[order], labels[order]


def evaluate_robustness(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: RobustnessConfig | None = None,
    *,
    bar: tqdm | None = None,
) -> RobustnessReport:
    """Clean accuracy, robust accuracy of every budgeted attack over its epsilon grid, and the
    minimal L2 perturbation from ``config.min_norm_attacks``.

    ``inputs`` must lie in [0, 1]; ``config.n_samples`` of them are drawn with ``config.seed``.
    The model's mode, its parameters' gradients and the global RNG state are left as found.
    ``bar`` advances by one per attack run (:func:`attack_runs` of them).
    """
    config = config or RobustnessConfig()
    check_inputs(inputs, labels)
    x, y = select_samples(inputs, labels.cpu(), config.n_samples, config.seed)
    n_classes = n_classes_of(model, x)
    check_inputs(x, y, n_classes)
    clean = float((predict(model, x) == y).float().mean())
    robust: dict[str, dict[float, float]] = {}
    for attack in config.attacks:
        robust[attack] = {}
        for eps in config.eps_grid(attack):
            with step(bar, f"{attack} eps={eps:g}"):
                adversarial = run_attack(model, x, y, attack, eps, config, n_classes=n_classes)
            robust[attack][eps] = float((predict(model, adversarial) == y).float().mean())
    minimal = (
        minimal_l2_perturbation(model, x, y, config.min_norm_attacks, config, n_classes=n_classes, bar=bar)
        if config.min_norm_attacks
        else None
    )
    return RobustnessReport(clean_accuracy=clean, robust_accuracy=robust, minimal_perturbation=minimal,
                            n_samples=int(x.shape[0]))
