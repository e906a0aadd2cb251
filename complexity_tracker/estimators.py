"""Entropy and total-correlation estimators for (N, d) binary matrices of gating states.

All values are in bits.

* ``kde``: the kernel (Kolchinsky-Tracey pairwise) estimate used by the paper's code,
  ``H = -(1/N) sum_i log2((1/N) sum_j exp(-||s_i - s_j||^2 / (2 w d)))``, self term
  included.  It lies in ``[0, log2 N]`` and measures cluster structure at Hamming scale
  about ``w * d`` (``w`` = ``kernel_width``); it is not the Shannon entropy of the gating patterns.
* ``plugin``: exact counting of distinct patterns (optionally Miller-Madow corrected).
  Accurate only when patterns repeat, i.e. for small layers.

:func:`total_correlation` estimates ``TC = KL(p(s) || prod_i p(s_i))`` with either method
(plug-in ``C - H``, or the paper's kernel density ratio against product-of-marginals samples).

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
                "Threshold pre-activations with z > 0 (the gate) first."
            )
    return PackedStates.from_binary(array)


def _check_kernel_width(kernel_width: float) -> float:
    if not (isinstance(kernel_width, (int, float)) and math.isfinite(kernel_width) and kernel_width > 0):
        raise EstimatorSettingError(
            f"kernel_width must be a finite number > 0 (kernel width as a fraction of d), got {kernel_width!r}"
        )
    return float(kernel_width)


def _gram_and_counts(
    packed: PackedStates,
    device: torch.device,
    other: PackedStates | None = None,
    column_bytes: int = 1024,
    row_block: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``G = S T^T`` (T = ``other``, default S itself) and the row popcounts of S and of T.

    All float32, exact for 0/1 data while d < 2^24; the squared distance of rows i, j is
    ``|s_i| + |t_j| - 2 G_ij``.  Columns are unpacked ``8 * column_bytes`` units at a time,
    so memory stays O(N M + (N + M) * column_bytes).  For T = S, G is symmetric: only blocks
    on or above the diagonal are multiplied (about half the flops), then mirrored.
    """
    symmetric = other is None
    other = packed if other is None else other
    n, m = packed.n_samples, other.n_samples
    gram = torch.zeros((n, m), dtype=torch.float32, device=device)
    counts = torch.zeros(n, dtype=torch.float32, device=device)
    other_counts = counts if symmetric else torch.zeros(m, dtype=torch.float32, device=device)
    blocks = [slice(start, min(start + row_block, n)) for start in range(0, n, row_block)]
    for start in range(0, packed.bits.shape[1], column_bytes):
        byte_columns = slice(start, start + column_bytes)
        columns = torch.from_numpy(packed.unpack(byte_columns)).to(device, torch.float32)
        counts += columns.sum(dim=1)
        other_columns = columns
        if not symmetric:
            other_columns = torch.from_numpy(other.unpack(byte_columns)).to(device, torch.float32)
            other_counts += other_columns.sum(dim=1)
        for rows in blocks:
            others = slice(rows.start if symmetric else 0, m)
            gram[rows, others].addmm_(columns[rows], other_columns[others].T)
    if symmetric:
        for rows in blocks[1:]:
            gram[rows, : rows.start] = gram[: rows.start, rows].T
    return gram, counts, other_counts


def _log_kernel_sums(
    gram: torch.Tensor,
    counts: torch.Tensor,
    other_counts: torch.Tensor,
    scale: float,
    *,
    row_chunk: int,
    leave_out_self: bool = False,
) -> torch.Tensor:
    """``log sum_j exp(-scale * ||s_i - t_j||^2)`` for every row i (nats, float64, shape (N,)).

    Rows are processed ``row_chunk`` at a time, so memory is O(row_chunk * M) beyond ``gram``.
    ``leave_out_self`` drops the j = i term (``gram`` must then be the symmetric S S^T).
    """
    counts64, other_counts64 = counts.to(torch.float64), other_counts.to(torch.float64)
    sums = []
    for start in range(0, gram.shape[0], row_chunk):
        rows = slice(start, start + row_chunk)
        exponent = gram[rows].to(torch.float64).mul_(2.0).sub_(counts64[rows, None]).sub_(other_counts64[None, :])
        exponent.mul_(scale)
        if leave_out_self:
            exponent[:, rows].fill_diagonal_(-math.inf)
        sums.append(torch.logsumexp(exponent, dim=1))
    return torch.cat(sums)


def _resolve_device(states: object, device: str | torch.device | None) -> torch.device:
    if device is None:
        return states.device if isinstance(states, torch.Tensor) else torch.device("cpu")
    return torch.device(device)


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
    device = _resolve_device(states, device)
    packed = as_packed(states)
    n, d = packed.n_samples, packed.d
    gram, counts, _ = _gram_and_counts(packed, device)
    log_sums = _log_kernel_sums(gram, counts, counts, 1.0 / (2.0 * kernel_width * d), row_chunk=row_chunk)
    # H = -(1/N) sum_i [lse_i - log N], converted from nats to bits
    return max(0.0, (math.log(n) - log_sums.sum().item() / n) / _LN2)


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


#: Kernel variance of the kde total correlation, as a fraction of the mean squared
#: probe-to-product distance (docs/estimators.md gives the measurements behind it).
DEFAULT_TC_BANDWIDTH = 0.02

TC_METHODS = ("plugin", "kde")


class TCMethodError(EstimatorSettingError):
    """A total-correlation method is unknown or cannot serve the given states."""


def _check_bandwidth(bandwidth: float) -> float:
    if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
        raise EstimatorSettingError(
            "bandwidth must be a finite number > 0 (kernel variance as a fraction of the mean squared "
            f"probe-to-product distance; default {DEFAULT_TC_BANDWIDTH}), got {bandwidth!r}"
        )
    return float(bandwidth)


def _product_samples(rates: np.ndarray, n_samples: int, seed: int = 0, column_bytes: int = 1024) -> PackedStates:
    """``n_samples`` packed draws from the product of Bernoulli(``rates``) units (seeded).

    Drawn ``8 * column_bytes`` units at a time, so memory stays O(n_samples * column_bytes).
    """
    rng = np.random.default_rng(seed)
    d = len(rates)
    bits = np.empty((n_samples, (d + 7) // 8), dtype=np.uint8)
    for start in range(0, bits.shape[1], column_bytes):
        units = slice(8 * start, min(8 * (start + column_bytes), d))
        block_rates = rates[units].astype(np.float32)
        draws = rng.random((n_samples, len(block_rates)), dtype=np.float32) < block_rates
        bits[:, start : start + column_bytes] = np.packbits(draws, axis=1)
    return PackedStates(bits, d, False)


def _plugin_total_correlation(packed: PackedStates) -> float:
    n_patterns = len(np.unique(packed.bits, axis=0))
    if n_patterns == packed.n_samples:
        raise TCMethodError(
            f"plug-in total correlation cannot serve these states: all N={packed.n_samples} gating patterns "
            f"(d={packed.d}) are distinct, so counting reads H = log2 N and TC = C - log2 N is meaningless; "
            "use method='kde'"
        )
    return max(0.0, marginal_entropy_sum(packed) - plugin_entropy(packed))


def _kde_total_correlation(
    packed: PackedStates, bandwidth: float, n_product_samples: int, seed: int, device: torch.device, row_chunk: int
) -> float:
    product = _product_samples(activation_rates(packed), n_product_samples, seed)
    gram, counts, _ = _gram_and_counts(packed, device)
    cross, _, product_counts = _gram_and_counts(packed, device, product)
    n, m = packed.n_samples, product.n_samples
    mean_distance = (  # Dbar: the mean over (i, m) of |s_i| + |f_m| - 2 s_i . f_m
        counts.sum(dtype=torch.float64).item() / n
        + product_counts.sum(dtype=torch.float64).item() / m
        - 2.0 * cross.sum(dtype=torch.float64).item() / (n * m)
    )
    if mean_distance <= 0.0:
        return 0.0  # every unit is constant: p(s) is one pattern and equals the product of its marginals
    scale = 1.0 / (2.0 * bandwidth * mean_distance)
    log_p = _log_kernel_sums(gram, counts, counts, scale, row_chunk=row_chunk, leave_out_self=True) - math.log(n - 1)
    log_q = _log_kernel_sums(cross, counts, product_counts, scale, row_chunk=row_chunk) - math.log(m)
    return (log_p - log_q).mean().item() / _LN2


def total_correlation(
    states: np.ndarray | torch.Tensor | PackedStates,
    method: str = "kde",
    *,
    bandwidth: float = DEFAULT_TC_BANDWIDTH,
    n_product_samples: int | None = None,
    seed: int = 0,
    row_chunk: int = 1024,
    device: str | torch.device | None = None,
) -> float:
    """Total correlation ``TC = KL(p(s) || prod_i p(s_i))`` of binary gating states, in bits.

    * ``"plugin"``: ``C - H_plugin`` with exact counting, the TC of the empirical pattern
      distribution.  Exact where patterns repeat (small layers); refused when all N patterns
      are distinct (:class:`TCMethodError`), where it would read ``C - log2 N``.
    * ``"kde"``: the paper's kernel density ratio, the mean over the probe of
      ``log2 p_hat(s_i) / q_hat(s_i)``.  ``q_hat`` is a Gaussian-kernel density over
      ``n_product_samples`` (default N) seeded draws from the product of the units' open
      rates; ``p_hat`` is the kernel density over the other N - 1 probe samples (leave-one-out).
      Both use one kernel ``exp(-||a - b||^2 / (2 sigma^2))`` with
      ``sigma^2 = bandwidth * Dbar``, ``Dbar`` the mean squared (Hamming) distance between probe
      and product samples, the reference scale of the paper's code.

    Why this construction (measurements in docs/estimators.md):

    * One kernel for both densities: on 0/1 vectors the Gaussian kernel is a product of
      per-unit kernels, so with equal widths the normalising constants cancel and
      ``p_hat / q_hat`` estimates the ratio of p and q both passed through the same bit-flip
      channel; by data processing that KL is at most TC and tends to TC as sigma shrinks.
    * Leave-one-out ``p_hat``: for independent units the other probe samples and the product
      samples are draws from the same distribution, so the estimate is 0 up to noise at any d
      and width.  With the self term, wide independent layers read tens of bits.
    * ``bandwidth = 0.02``: the paper code's width (``bandwidth = 1``) reads about 0 for every
      layer; 0.02 is the widest tried that reads the small closed forms within ~1 bit, and for
      fair units (``Dbar = d / 2``) it is the Hamming scale of the entropy kernel at
      kernel_width 0.01.  Narrower widths raise the variance.  Tying sigma to ``Dbar`` makes
      the value invariant to how sparse the layer's gates are.

    The kde value is a finite-sample estimate: it can be slightly negative (noise around 0),
    it cannot resolve patterns whose product probability is far below 1 / n_product_samples
    (raise ``n_product_samples`` for small layers with large TC), and on wide layers, where the
    true TC can reach hundreds of bits, it measures how much closer the probe's neighbours are
    than product samples at the kernel's scale: compare it at equal N, d and bandwidth.

    Args:
        states: (N, d) 0/1 matrix (numpy, torch, or packed), N >= 2.
        method: ``"kde"`` (default, as in measure_complexity) or ``"plugin"``.
        bandwidth: kde kernel variance as a fraction of ``Dbar``.
        n_product_samples: M, draws from the product of marginals (kde; default N).
        seed: seed of those draws; the estimate is deterministic given it.
        row_chunk: rows per float64 log-sum-exp block (kde).
        device: where to compute the kde distances (default: the tensor's device, else CPU).

    Raises:
        TCMethodError: unknown method, or plug-in on states whose patterns never repeat.
        EstimatorSettingError: a bad bandwidth or n_product_samples.
    """
    if method not in TC_METHODS:
        raise TCMethodError(f"unknown total-correlation method {method!r}; choose one of {list(TC_METHODS)}")
    packed = as_packed(states)
    if packed.n_samples < 2:
        raise InvalidStatesError(
            f"total correlation needs at least 2 samples, got N={packed.n_samples}; measure a larger probe"
        )
    if method == "plugin":
        return _plugin_total_correlation(packed)
    bandwidth = _check_bandwidth(bandwidth)
    m = packed.n_samples if n_product_samples is None else n_product_samples
    if not (isinstance(m, int) and m >= 1):
        raise EstimatorSettingError(f"n_product_samples must be an integer >= 1 (or None for N), got {m!r}")
    return _kde_total_correlation(packed, bandwidth, m, seed, _resolve_device(states, device), row_chunk)


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
