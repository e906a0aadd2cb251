"""Entropy estimators for (N, d) binary matrices of gating states.

All values are in bits.

* ``kde``: the kernel (Kolchinsky-Tracey pairwise) estimate used by the paper's code,
  ``H = -(1/N) sum_i log2((1/N) sum_j exp(-||s_i - s_j||^2 / (2 w d)))``, self term
  included.  It lies in ``[0, log2 N]`` and measures cluster structure at Hamming scale
  about ``w * d`` (``w`` = ``kernel_width``); it is not the Shannon entropy of the gating patterns.
* ``plugin``: exact counting of distinct patterns (optionally Miller-Madow corrected).
  Accurate only when patterns repeat, i.e. for small layers.

Inputs may be numpy arrays or torch tensors (bool, uint8, int or float holding 0/1),
or :class:`~complexity_tracker.gating.PackedStates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .errors import ComplexityTrackerError
from .gating import PackedStates

#: Default kernel width for vector layers and for feature maps (as in the paper's code).
DEFAULT_KERNEL_WIDTH_VECTOR = 0.01
DEFAULT_KERNEL_WIDTH_CONV = 0.04

_LN2 = math.log(2.0)


class InvalidStatesError(ComplexityTrackerError, ValueError):
    """A state matrix is not an (N, d) 0/1 matrix with N, d >= 1."""


class EstimatorSettingError(ComplexityTrackerError, ValueError):
    """An estimator name or parameter is not accepted."""


def as_packed(states: np.ndarray | torch.Tensor | PackedStates) -> PackedStates:
    """Validate an (N, d) 0/1 matrix and pack it (one bit per unit)."""
    if isinstance(states, PackedStates):
        return states
    array = states.detach().cpu().numpy() if isinstance(states, torch.Tensor) else np.asarray(states)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidStatesError(
            f"states must be a 2-D (N samples, d units) matrix with N, d >= 1; got shape {array.shape}"
        )
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number):
            raise InvalidStatesError(f"states must be numeric or bool, got dtype {array.dtype}")
        if not np.isin(array, (0, 1)).all():
            bad = array[~np.isin(array, (0, 1))].ravel()[:3]
            raise InvalidStatesError(
                f"states must be binary (0/1 gating states); found values such as {bad.tolist()}. "
                "Threshold pre-activations with z >= 0 first."
            )
    return PackedStates.from_binary(array)


def _check_kernel_width(kernel_width: float) -> float:
    if not (isinstance(kernel_width, (int, float)) and math.isfinite(kernel_width) and kernel_width > 0):
        raise EstimatorSettingError(
            f"kernel_width must be a finite number > 0 (kernel width as a fraction of d), got {kernel_width!r}"
        )
    return float(kernel_width)


def _gram_and_counts(
    packed: PackedStates, device: torch.device, column_bytes: int = 1024, row_block: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """``G = S S^T`` and the row popcounts, both float32 (exact for 0/1 data while d < 2^24).

    Columns are unpacked ``8 * column_bytes`` units at a time, so memory stays
    O(N^2 + N * column_bytes).  G is symmetric: only blocks on or above the diagonal are
    multiplied (about half the flops of one (N, d) x (d, N) product), then mirrored.
    """
    n = packed.n_samples
    gram = torch.zeros((n, n), dtype=torch.float32, device=device)
    counts = torch.zeros(n, dtype=torch.float32, device=device)
    blocks = [slice(start, min(start + row_block, n)) for start in range(0, n, row_block)]
    for start in range(0, packed.bits.shape[1], column_bytes):
        columns = torch.from_numpy(packed.unpack(slice(start, start + column_bytes))).to(device, torch.float32)
        counts += columns.sum(dim=1)
        for rows in blocks:
            others = slice(rows.start, n)
            gram[rows, others].addmm_(columns[rows], columns[others].T)
    for rows in blocks[1:]:
        gram[rows, : rows.start] = gram[: rows.start, rows].T
    return gram, counts


def kde_entropy(
    states: np.ndarray | torch.Tensor | PackedStates,
    kernel_width: float = DEFAULT_KERNEL_WIDTH_VECTOR,
    *,
    row_chunk: int = 1024,
    device: str | torch.device | None = None,
) -> float:
    """Kernel estimate of the entropy of binary gating states, in bits.

    Args:
        states: (N, d) 0/1 matrix (numpy, torch, or packed).
        kernel_width: kernel width as a fraction of d (0.01 for vector layers, 0.04 for conv maps).
        row_chunk: rows per float64 log-sum-exp block; memory is O(N * row_chunk) beyond the
            (N, N) float32 Gram matrix.
        device: where to compute (default: the tensor's device, else CPU).

    Returns:
        The estimate in bits, in ``[0, log2 N]``.
    """
    kernel_width = _check_kernel_width(kernel_width)
    if device is None:
        device = states.device if isinstance(states, torch.Tensor) else torch.device("cpu")
    packed = as_packed(states)
    n, d = packed.n_samples, packed.d
    gram, counts = _gram_and_counts(packed, torch.device(device))
    scale = 1.0 / (2.0 * kernel_width * d)
    counts64 = counts.to(torch.float64)
    total = 0.0
    for start in range(0, n, row_chunk):
        rows = slice(start, start + row_chunk)
        exponent = gram[rows].to(torch.float64).mul_(2.0).sub_(counts64[rows, None]).sub_(counts64[None, :])
        # log-sum-exp whose maximum is known: the self term has distance 0, so every term is
        # <= 1 and each row sum is >= 1 (no overflow, no underflow to log(0)).
        total += exponent.mul_(scale).exp_().sum(dim=1).log_().sum().item()
    # H = -(1/N) sum_i [lse_i - log N], converted from nats to bits
    return max(0.0, (math.log(n) - total / n) / _LN2)


def kde_entropy_reference(states: np.ndarray, kernel_width: float = DEFAULT_KERNEL_WIDTH_VECTOR) -> float:
    """The same kernel estimate as :func:`kde_entropy`, one row at a time (slow, for validation).

    This is the paper code's formulation; it exists to check the vectorised version.
    """
    kernel_width = _check_kernel_width(kernel_width)
    s = as_packed(states).unpack().astype(np.float64)
    n, d = s.shape
    total = 0.0
    for i in range(n):
        distances = ((s - s[i]) ** 2).sum(axis=1)
        total += np.log(np.mean(np.exp(-distances / (2.0 * kernel_width * d))))
    return float(-total / n / _LN2)


def plugin_entropy(states: np.ndarray | torch.Tensor | PackedStates, *, miller_madow: bool = False) -> float:
    """Plug-in (maximum-likelihood) entropy of the empirical pattern distribution, in bits.

    Args:
        states: (N, d) 0/1 matrix.
        miller_madow: add the Miller-Madow bias correction ``(K - 1) / (2 N ln 2)`` bits,
            K = number of distinct patterns observed.

    Note: saturates at log2 N once every pattern is distinct.
    """
    packed = as_packed(states)
    _, counts = np.unique(packed.bits, axis=0, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    if miller_madow:
        entropy += (len(counts) - 1) / (2.0 * packed.n_samples * _LN2)
    return max(0.0, entropy)


def activation_rates(states: np.ndarray | torch.Tensor | PackedStates) -> np.ndarray:
    """Fraction of samples in which each unit's gate is open, shape (d,)."""
    packed = as_packed(states)
    ones = np.zeros(packed.bits.shape[1] * 8, dtype=np.int64)
    step = 4096
    for start in range(0, packed.bits.shape[1], step):
        block = packed.unpack(slice(start, start + step))
        ones[start * 8 : start * 8 + block.shape[1]] = block.sum(axis=0)
    return ones[: packed.d] / packed.n_samples


def binary_entropy_sum(rates: np.ndarray) -> float:
    """sum_i h(p_i) in bits for units open at rates ``p`` (h(0) = h(1) = 0)."""
    p = rates[(rates > 0) & (rates < 1)]
    return float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)).sum())


def marginal_entropy_sum(states: np.ndarray | torch.Tensor | PackedStates) -> float:
    """C = sum over units of the binary entropy h(p_i) of each gate's open rate, in bits."""
    return binary_entropy_sum(activation_rates(states))


class EntropyEstimator(Protocol):
    """Maps packed gating states to an entropy in bits, and describes itself."""

    name: str

    def entropy(self, states: PackedStates) -> float: ...

    def params(self, states: PackedStates | None = None) -> dict[str, float | str | bool]:
        """The estimator's parameters; given ``states``, as resolved for them."""
        ...


@dataclass(frozen=True)
class KDEEstimator:
    """The paper's kernel estimate; ``kernel_width=None`` picks 0.01 for vectors, 0.04 when any layer is a map.

    ``kernel_width`` is resolved per state matrix (by its ``is_conv``) unless given explicitly.
    """

    kernel_width: float | None = None
    name: str = field(default="kde", init=False)

    def __post_init__(self) -> None:
        if self.kernel_width is not None:
            _check_kernel_width(self.kernel_width)

    def kernel_width_for(self, states: PackedStates) -> float:
        if self.kernel_width is not None:
            return self.kernel_width
        return DEFAULT_KERNEL_WIDTH_CONV if states.is_conv else DEFAULT_KERNEL_WIDTH_VECTOR

    def entropy(self, states: PackedStates) -> float:
        return kde_entropy(states, self.kernel_width_for(states))

    def params(self, states: PackedStates | None = None) -> dict[str, float | str | bool]:
        if states is not None:
            return {"kernel_width": self.kernel_width_for(states)}
        return {"kernel_width": self.kernel_width if self.kernel_width is not None else "auto(0.01 vector, 0.04 conv)"}


@dataclass(frozen=True)
class PluginEstimator:
    """Exact pattern counting; ``miller_madow`` adds the bias correction."""

    miller_madow: bool = False
    name: str = field(default="plugin", init=False)

    def entropy(self, states: PackedStates) -> float:
        return plugin_entropy(states, miller_madow=self.miller_madow)

    def params(self, states: PackedStates | None = None) -> dict[str, float | str | bool]:
        return {"miller_madow": self.miller_madow}


ESTIMATORS = {"kde": KDEEstimator, "plugin": PluginEstimator}

#: Parameter spellings that were renamed, with their new names.
_RENAMED_PARAMS = {"lam": "kernel_width", "kde_lam": "kernel_width"}


def make_estimator(name: str, **params: float | bool | None) -> EntropyEstimator:
    """Build an estimator by name (``"kde"`` or ``"plugin"``) with its parameters."""
    if name not in ESTIMATORS:
        raise EstimatorSettingError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    renamed = sorted(params.keys() & _RENAMED_PARAMS.keys())
    if renamed:
        raise EstimatorSettingError(
            f"estimator parameter {renamed[0]!r} was renamed: pass {_RENAMED_PARAMS[renamed[0]]}= instead "
            "(the kernel width, as a fraction of d)"
        )
    try:
        return ESTIMATORS[name](**params)
    except TypeError as exc:
        raise EstimatorSettingError(f"bad parameters {params} for estimator {name!r}: {exc}") from None
