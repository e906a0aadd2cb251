"""Verdict criteria: explicit, documented tests that turn measured curves and numbers into
"reproduced" / "partly" / "not reproduced".  Pure functions of the data (bits, epochs, rates).

Thresholds (documented in the report next to each verdict):

* a change of complexity counts when it is at least :data:`MIN_CHANGE_BITS` bits;
* a claim about runs is *reproduced* when, in every group (model), at least
  :data:`REPRODUCED_FRACTION` of the runs show it; *partly* when at least :data:`PARTLY_FRACTION` of
  all runs, or all runs of some group, show it;
* a claimed correlation is *reproduced* when Spearman's rho has the claimed sign, ``|rho| >=``
  :data:`STRONG_RHO`, ``p <`` :data:`ALPHA` and at least :data:`MIN_CORRELATION_POINTS` points;
  *partly* when only the sign matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..robustness.correlation import spearman

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED)

MIN_CHANGE_BITS = 0.2
REPRODUCED_FRACTION = 2 / 3
PARTLY_FRACTION = 1 / 3
STRONG_RHO = 0.5
ALPHA = 0.05
#: Fewest points for a correlation to count as "reproduced" (scipy's p-value is meaningless below).
MIN_CORRELATION_POINTS = 5
#: A curve "shrinks" when its Spearman correlation with the epoch is at most this.
SHRINK_RHO = -0.5
#: Saturation: over the second half of training the curve moves at most this share of its total rise.
SATURATION_SHARE = 0.25


@dataclass(frozen=True)
class CurveShape:
    """Summary of a complexity curve over epochs (bits)."""

    start: float
    end: float
    minimum: float
    argmin_epoch: int
    half: float

    @property
    def drop(self) -> float:
        """How far the curve falls below its start."""
        return self.start - self.minimum

    @property
    def rise_from_minimum(self) -> float:
        return self.end - self.minimum


def curve_shape(epochs: Sequence[int], values: Sequence[float]) -> CurveShape:
    """Start, end, minimum (and where), and the value at the middle epoch of a curve."""
    e, v = np.asarray(epochs), np.asarray(values, dtype=float)
    if len(v) < 2 or len(e) != len(v):
        raise ValueError(f"a curve needs at least 2 (epoch, value) points of equal count, got {len(e)} and {len(v)}")
    middle = int(np.argmin(np.abs(e - (e[0] + e[-1]) / 2)))
    lowest = int(np.argmin(v))
    return CurveShape(float(v[0]), float(v[-1]), float(v[lowest]), int(e[lowest]), float(v[middle]))


def falls_then_rises(epochs: Sequence[int], values: Sequence[float], tol: float = MIN_CHANGE_BITS) -> bool:
    """Phenomenon 1: the curve falls by >= ``tol`` below its start and then rises by >= ``tol``
    from that minimum by the end (so the minimum is strictly inside the training)."""
    shape = curve_shape(epochs, values)
    return shape.drop >= tol and shape.rise_from_minimum >= tol


def rises_then_saturates(epochs: Sequence[int], values: Sequence[float], tol: float = MIN_CHANGE_BITS) -> bool:
    """Phenomenon 2: the curve ends >= ``tol`` above its start, never falls more than ``tol`` below
    its start, and over the second half of training moves at most ``max(tol, SATURATION_SHARE x rise)``."""
    shape = curve_shape(epochs, values)
    rise = shape.end - shape.start
    late_change = abs(shape.end - shape.half)
    return rise >= tol and shape.drop <= tol and late_change <= max(tol, SATURATION_SHARE * rise)


def shrinks(epochs: Sequence[int], values: Sequence[float], tol: float = MIN_CHANGE_BITS) -> bool:
    """Phenomenon 3: the curve ends >= ``tol`` below its start and falls over training
    (Spearman rho of value against epoch <= :data:`SHRINK_RHO`)."""
    shape = curve_shape(epochs, values)
    rho, _, _ = spearman(list(epochs), list(values))
    return shape.start - shape.end >= tol and bool(np.isfinite(rho)) and rho <= SHRINK_RHO


def has_decrease(values: Sequence[float], tol: float = MIN_CHANGE_BITS) -> bool:
    """Whether a sequence (e.g. complexity over depth) drops by more than ``tol`` at some step,
    i.e. is *not* monotonically increasing beyond noise.  NaN entries (cells left out) are skipped."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) >= 2 and (np.diff(v) < -tol).any())


def fraction_verdict(hits: Mapping[str, Sequence[bool]]) -> str:
    """Verdict of a claim tested run by run: ``hits[group]`` says, per run of the group, whether it
    shows the claimed behaviour (see the module docstring for the fractions)."""
    groups = {g: list(h) for g, h in hits.items() if len(h)}
    if not groups:
        return NOT_REPRODUCED
    fractions = {g: float(np.mean(h)) for g, h in groups.items()}
    overall = float(np.mean([x for h in groups.values() for x in h]))
    if all(f >= REPRODUCED_FRACTION for f in fractions.values()):
        return REPRODUCED
    if overall >= PARTLY_FRACTION or any(f == 1.0 for f in fractions.values()):
        return PARTLY
    return NOT_REPRODUCED


def share_verdict(share: float, reproduced_at: float, partly_at: float) -> str:
    """Verdict from the share of comparisons agreeing with the claim."""
    if np.isfinite(share) and share >= reproduced_at:
        return REPRODUCED
    if np.isfinite(share) and share >= partly_at:
        return PARTLY
    return NOT_REPRODUCED


def correlation_verdict(rho: float, p_value: float, n: int, expected_sign: int) -> str:
    """Verdict of a claimed correlation of sign ``expected_sign`` (+1 or -1) measured on ``n`` points."""
    if not np.isfinite(rho) or rho * expected_sign <= 0:
        return NOT_REPRODUCED
    if abs(rho) >= STRONG_RHO and p_value < ALPHA and n >= MIN_CORRELATION_POINTS:
        return REPRODUCED
    return PARTLY


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim made of parts: reproduced if all parts are, not reproduced if none
    is even partly, partly otherwise."""
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if all(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return PARTLY
