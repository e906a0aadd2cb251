"""Transferability of adversarial examples between models ordered by complexity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .attacks import check_inputs, n_classes_of, predict, run_attack
from .config import RobustnessConfig
from .errors import IncompatibleModelsError
from .progress import step


@dataclass
class TransferMatrix:
    """``rates[i, j]``: fraction of the examples crafted on model i that fool model j, over the
    samples both i and j classify correctly (``counts[i, j]`` of them); the diagonal is the
    white-box success rate.  Models are in the given order (simplest first when ordered by complexity),
    so the upper triangle (i < j) is simple -> complex and the lower triangle complex -> simple.
    """

    names: list[str]
    rates: np.ndarray
    counts: np.ndarray
    attack: str
    eps: float

    def _triangle_mean(self, upper: bool) -> float:
        n = len(self.names)
        mask = np.triu(np.ones((n, n), dtype=bool), k=1)
        values = self.rates[mask if upper else mask.T]
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else float("nan")

    @property
    def simple_to_complex(self) -> float:
        """Mean transfer rate above the diagonal (source simpler than target)."""
        return self._triangle_mean(upper=True)

    @property
    def complex_to_simple(self) -> float:
        """Mean transfer rate below the diagonal (source more complex than target)."""
        return self._triangle_mean(upper=False)

    @property
    def asymmetry(self) -> float:
        """simple_to_complex - complex_to_simple (> 0: examples of simple models transfer better)."""
        return self.simple_to_complex - self.complex_to_simple

    def summary(self) -> dict[str, float]:
        return {
            "transfer_simple_to_complex": self.simple_to_complex,
            "transfer_complex_to_simple": self.complex_to_simple,
            "transfer_asymmetry": self.asymmetry,
        }

    def outgoing(self, index: int) -> float:
        """Mean rate at which model ``index``'s examples fool the other models."""
        others = [j for j in range(len(self.names)) if j != index]
        values = self.rates[index, others]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def incoming(self, index: int) -> float:
        """Mean rate at which the other models' examples fool model ``index``."""
        others = [i for i in range(len(self.names)) if i != index]
        values = self.rates[others, index]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "names": self.names,
            "rates": self.rates.tolist(),
            "counts": self.counts.tolist(),
            "attack": self.attack,
            "eps": self.eps,
            **self.summary(),
        }


def check_same_classes(models: Sequence[nn.Module], names: Sequence[str], inputs: torch.Tensor) -> int:
    """The common class count of ``models``; raise :class:`IncompatibleModelsError` if they differ."""
    counts = {name: n_classes_of(model, inputs) for name, model in zip(names, models)}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise IncompatibleModelsError(
            f"models must predict the same classes to be compared on the same inputs; class counts: {listed}"
        )
    return next(iter(counts.values()))


def transfer_matrix(
    models: Sequence[nn.Module],
    names: Sequence[str],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: RobustnessConfig | None = None,
    *,
    bar: tqdm | None = None,
) -> TransferMatrix:
    """Craft ``config.transfer_attack`` examples (budget ``config.transfer_eps``) on every model and
    classify them with every model.  Pass the models ordered by complexity, simplest first.
    ``bar`` advances by one per source model.
    """
    config = config or RobustnessConfig()
    if len(models) != len(names) or not models:
        raise IncompatibleModelsError(f"give one name per model and at least one model; got {len(models)} models, "
                                      f"{len(names)} names")
    labels = labels.cpu()
    check_inputs(inputs, labels)
    n_classes = check_same_classes(models, names, inputs)
    check_inputs(inputs, labels, n_classes)
    correct = [(predict(model, inputs) == labels).numpy() for model in models]
    n = len(models)
    rates, counts = np.full((n, n), np.nan), np.zeros((n, n), dtype=int)
    for i, source in enumerate(models):
        with step(bar, f"{config.transfer_attack} examples of {names[i]}"):
            adversarial = run_attack(source, inputs, labels, config.transfer_attack, config.transfer_eps, config,
                                     n_classes=n_classes)
            for j, target in enumerate(models):
                both = correct[i] & correct[j]
                counts[i, j] = int(both.sum())
                if counts[i, j]:
                    fooled = (predict(target, adversarial[both]) != labels[both]).numpy()
                    rates[i, j] = float(fooled.mean())
    return TransferMatrix(names=list(names), rates=rates, counts=counts, attack=config.transfer_attack,
                          eps=config.transfer_eps)

