"""Spearman rank correlation between complexity (bits) and robustness measures across models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho between one complexity value and one robustness measure over ``n`` models.

    ``rho`` and ``p_value`` are NaN when fewer than 3 models have both values or either is constant.
    """

    complexity: str
    measure: str
    rho: float
    p_value: float
    n: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """(rho, two-sided p-value, n) over the pairs where both values are finite."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    n = int(both.sum())
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan"), n
    result = spearmanr(a, b)
    return float(result.statistic), float(result.pvalue), n


def complexity_robustness_correlations(
    complexities: Sequence[Mapping[str, float]], measures: Sequence[Mapping[str, float]]
) -> list[Correlation]:
    """One :class:`Correlation` per (complexity key, robustness measure) across models.

    ``complexities[k]`` and ``measures[k]`` belong to model k; keys missing for a model (e.g. a
    layer a shallower network lacks) leave that model out of the pair's ``n``.
    """
    complexity_keys = sorted({key for values in complexities for key in values})
    measure_keys = list(dict.fromkeys(key for values in measures for key in values))
    correlations = []
    for complexity_key in complexity_keys:
        x = [values.get(complexity_key, np.nan) for values in complexities]
        for measure_key in measure_keys:
            rho, p_value, n = spearman(x, [values.get(measure_key, np.nan) for values in measures])
            correlations.append(Correlation(complexity_key, measure_key, rho, p_value, n))
    return correlations
