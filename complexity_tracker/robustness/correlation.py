"""Spearman rank correlation between complexity (bits) and robustness measures across models."""

from __future__ import annotations

import functools
import math
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata, spearmanr


#: Up to this many models the p-value is exact: the rank correlation of every permutation (9! = 362,880).
EXACT_MAX_N = 9


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho between one complexity value and one robustness measure over ``n`` models.

    ``p_value`` is two-sided; ``exact`` says whether it was computed from all ``n!`` permutations
    (``n <= EXACT_MAX_N``) or from scipy's t approximation.  ``rho`` and ``p_value`` are NaN when
    fewer than 3 models have both values or either is constant.
    """

    complexity: str
    measure: str
    rho: float
    p_value: float
    n: int
    exact: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@functools.lru_cache(maxsize=EXACT_MAX_N + 1)
def _permutations(n: int) -> np.ndarray:
    """Every permutation of ``range(n)`` as rows of an ``(n!, n)`` index array."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


@functools.lru_cache(maxsize=4096)
def _null_rhos(x_ranks: tuple[float, ...], y_ranks: tuple[float, ...]) -> np.ndarray:
    """Spearman's rho of ``x_ranks`` against every ordering of ``y_ranks`` (depends on the two multisets only)."""
    x = np.asarray(x_ranks) - np.mean(x_ranks)
    y = np.asarray(y_ranks) - np.mean(y_ranks)
    return (y[_permutations(len(x))] @ x) / np.sqrt((x**2).sum() * (y**2).sum())


def exact_spearman_p(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(rho, two-sided exact p): the fraction of the ``n!`` pairings whose |rho| reaches the observed one."""
    x_ranks, y_ranks = rankdata(x), rankdata(y)
    rho = float(spearmanr(x, y).statistic)
    null = _null_rhos(tuple(sorted(x_ranks)), tuple(sorted(y_ranks)))
    return rho, float(np.mean(np.abs(null) >= abs(rho) - 1e-12))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """(rho, two-sided p-value, n) over the pairs where both values are finite; the p-value is
    exact for ``n <= EXACT_MAX_N`` (:func:`exact_spearman_p`), scipy's t approximation above."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    n = int(both.sum())
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan"), n
    if n <= EXACT_MAX_N:
        return (*exact_spearman_p(a, b), n)
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
            correlations.append(Correlation(complexity_key, measure_key, rho, p_value, n,
                                            exact=math.isfinite(p_value) and n <= EXACT_MAX_N))
    return correlations
