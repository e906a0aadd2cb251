"""Transformation-complexity metrics of a network's gating states, per layer and whole network.

For a gating layer with states S (all values in bits):

* ``H``     = H(S), entropy of the gating states over the probe inputs.
* ``I_XS``  = I(X;S) = H(S) - H(S|X).  Equal to H for a deterministic network; for a
  stochastic one (dropout left on, a sampling layer) H(S|X) is estimated from K repeated
  forward passes of each input.
* ``I_XSY`` = I(X;S;Y) = H(S) - sum_y p(y) H(S|Y=y)  (Y is a function of X).
* ``C``     = sum_i h(p_i), the binary entropies of the units' open rates.
* ``TC``    = C - H, total correlation (entanglement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import ComplexityTrackerError
from .estimators import EntropyEstimator, activation_rates, binary_entropy_sum, make_estimator
from .gating import PackedStates, capture_gating_states

NETWORK = "network"
METRIC_NAMES = ("H", "I_XS", "I_XSY", "C", "TC")


class InvalidProbeError(ComplexityTrackerError, ValueError):
    """The probe inputs/labels cannot support the requested measurement."""


@dataclass(frozen=True)
class LayerComplexity:
    """Complexity of one gating layer (or of the whole network), all values in bits."""

    name: str
    H: float
    I_XS: float
    I_XSY: float
    C: float
    TC: float
    d: int
    N: int
    estimator: str
    estimator_params: dict[str, float | str | bool]


@dataclass
class ComplexityReport:
    """One record per gating layer plus one for the whole network (all layers concatenated)."""

    layers: list[LayerComplexity]
    network: LayerComplexity | None
    stochastic: bool
    activation_rates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def records(self) -> list[LayerComplexity]:
        return self.layers + ([self.network] if self.network is not None else [])

    def __getitem__(self, name: str) -> LayerComplexity:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(f"no layer {name!r}; layers: {[r.name for r in self.records]}")

    def to_dict(self) -> dict[str, float]:
        """Flat ``{"H/<layer>": bits, ...}`` mapping, network values under ``<metric>/network``."""
        return {f"{metric}/{r.name}": float(getattr(r, metric)) for r in self.records for metric in METRIC_NAMES}

    def to_records(self) -> list[dict]:
        """One plain dict per layer (for JSON/CSV artifacts)."""
        return [asdict(r) for r in self.records]


def class_balanced_probe(labels: np.ndarray | torch.Tensor, per_class: int = 200, seed: int = 0) -> np.ndarray:
    """Indices of a seeded, class-balanced probe: ``per_class`` samples of every class (sorted).

    Classes with fewer samples contribute all of them.  The same seed gives the same probe.
    """
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(y == c), size=min(per_class, int((y == c).sum())), replace=False)
        for c in np.unique(y)
    ]
    return np.sort(np.concatenate(chosen))


def _check_probe(inputs: torch.Tensor, labels: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim < 2 or inputs.shape[0] < 2:
        raise InvalidProbeError(f"the probe needs at least 2 inputs of shape (N, ...); got {tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise InvalidProbeError("probe inputs contain NaN or inf values")
    if labels is None:
        return None
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or len(y) != inputs.shape[0]:
        raise InvalidProbeError(
            f"labels must be 1-D with one label per input: {len(inputs)} inputs but labels of shape {y.shape}"
        )
    if len(np.unique(y)) < 2:
        raise InvalidProbeError(
            "the probe holds a single class, so I(X;S;Y) is undefined; sample it with class_balanced_probe()"
        )
    return y


def _conditional_entropy(estimator: EntropyEstimator, states: PackedStates, groups: np.ndarray) -> float:
    """sum_g p(g) H(S | G = g) over the groups given per row."""
    values, counts = np.unique(groups, return_counts=True)
    n = len(groups)
    return float(sum(c / n * estimator.entropy(states.take(groups == v)) for v, c in zip(values, counts)))


def _layer_complexity(
    name: str,
    states: PackedStates,
    estimator: EntropyEstimator,
    labels: np.ndarray | None,
    input_ids: np.ndarray | None,
) -> tuple[LayerComplexity, np.ndarray]:
    h = estimator.entropy(states)
    h_given_x = _conditional_entropy(estimator, states, input_ids) if input_ids is not None else 0.0
    i_xsy = h - _conditional_entropy(estimator, states, labels) if labels is not None else float("nan")
    rates = activation_rates(states)
    c = binary_entropy_sum(rates)
    record = LayerComplexity(
        name=name,
        H=h,
        I_XS=h - h_given_x,
        I_XSY=i_xsy,
        C=c,
        TC=c - h,
        d=states.d,
        N=states.n_samples,
        estimator=estimator.name,
        estimator_params=dict(estimator.params(states)),
    )
    return record, rates.astype(np.float32)


def measure_complexity(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | np.ndarray | None = None,
    *,
    layers: str | Sequence[str] | None = None,
    estimator: str | EntropyEstimator = "kde",
    lam: float | None = None,
    stochastic: bool = False,
    repeats: int = 10,
    include_network: bool = True,
    batch_size: int = 500,
    allow_unsupported: bool = False,
) -> ComplexityReport:
    """Measure H, I(X;S), I(X;S;Y), C and TC (bits) for each gating layer and the whole network.

    Args:
        model: a piecewise-linear network with ``nn.ReLU``-family modules.
        inputs: probe inputs (N, ...), typically from :func:`class_balanced_probe`.
        labels: probe labels (N,); needed for I(X;S;Y) (NaN without them).
        layers: module paths or glob patterns to measure; ``None`` for all gating layers.
        estimator: ``"kde"`` (the paper's kernel estimate), ``"plugin"`` (exact counting, for
            small layers), or an :class:`EntropyEstimator` instance.
        lam: kernel width for ``"kde"``; ``None`` means 0.01 for vector layers and 0.04 for
            feature maps (and for the network when any layer is a map).
        stochastic: keep dropout/sampling active and estimate H(S|X) from ``repeats`` forward
            passes of each input; H(S) is then estimated over all N * repeats samples.
        repeats: K, forward passes per input in stochastic mode.
        include_network: also measure all selected layers concatenated (record ``"network"``).
        batch_size: samples per forward pass.
        allow_unsupported: ignore ReLU6/Hardtanh/max pooling instead of raising.

    The model's mode, hooks and gradients are left as found.
    """
    y = _check_probe(inputs, labels)
    if isinstance(estimator, str):
        estimator = make_estimator(estimator, **({"kernel_width": lam} if estimator == "kde" else {}))
    if stochastic and repeats < 2:
        raise ValueError(f"stochastic measurement needs repeats >= 2 forward passes per input, got {repeats}")
    passes = repeats if stochastic else 1
    captures = [
        capture_gating_states(
            model, inputs, layers, batch_size=batch_size, stochastic=stochastic, allow_unsupported=allow_unsupported
        )
        for _ in range(passes)
    ]
    n = inputs.shape[0]
    input_ids = np.tile(np.arange(n), passes) if stochastic else None
    labels_all = np.tile(y, passes) if y is not None else None
    layer_states = {
        name: PackedStates(np.concatenate([c[name].bits for c in captures]), states.d, states.is_conv)
        for name, states in captures[0].items()
    }
    records, rates = [], {}
    for name, states in layer_states.items():
        record, rates[name] = _layer_complexity(name, states, estimator, labels_all, input_ids)
        records.append(record)
    network = None
    if include_network:
        network, _ = _layer_complexity(
            NETWORK, PackedStates.concatenate(list(layer_states.values())), estimator, labels_all, input_ids
        )
    return ComplexityReport(layers=records, network=network, stochastic=stochastic, activation_rates=rates)
