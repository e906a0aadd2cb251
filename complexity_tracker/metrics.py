"""Transformation-complexity metrics of a network's gating states, per layer and whole network.

For a gating layer with states S (a unit is open when its pre-activation ``z > 0``, see
:mod:`complexity_tracker.gating`), all values in bits:

* ``H``     = H(S), entropy of the gating states over the probe inputs.
* ``I_XS``  = I(X;S) = H(S) - H(S|X).  Equal to H for a deterministic network; for a
  stochastic one (dropout, a sampling layer) H(S|X) is estimated from K repeated forward
  passes of each input, with only the stochastic modules in train mode.  That estimate is
  at most log2 K bits: records where it lies within :data:`CAP_MARGIN_BITS` of log2 K are
  flagged ``conditional_capped``.
* ``I_XSY`` = I(X;S;Y) = H(S) - sum_y p(y) H(S|Y=y)  (Y is a function of X).
* ``C``     = sum_i h(p_i), the binary entropies of the units' open rates (exact).
* ``TC``    = KL(p(s) || prod_i p(s_i)), total correlation (entanglement), estimated on its own by
  :func:`~complexity_tracker.estimators.total_correlation` (``tc_method`` ``"kde"`` or ``"plugin"``).
* ``additivity_gap`` = H + TC - C.  Zero for true Shannon quantities; for estimates it shows how
  far the H and TC estimators are from each other's scale (a diagnostic, not an identity).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import ComplexityTrackerError
from .estimators import (
    DEFAULT_TC_BANDWIDTH,
    TC_METHODS,
    EntropyEstimator,
    TCMethodError,
    activation_rates,
    binary_entropy_sum,
    make_estimator,
    total_correlation,
)
from .gating import PackedStates, capture_gating_states
from .nn_utils import find_stochastic_modules, forked_global_rng

NETWORK = "network"
#: Values in bits of every record, in ``to_dict()`` order.
METRIC_NAMES = ("H", "I_XS", "I_XSY", "C", "TC", "additivity_gap")
#: Stochastic forward passes per probe input (K) unless given.
DEFAULT_REPEATS = 10
#: A stochastic record's H(S|X) within this many bits of log2 K is flagged as capped.
CAP_MARGIN_BITS = 0.1


class InvalidProbeError(ComplexityTrackerError, ValueError):
    """The probe inputs/labels cannot support the requested measurement."""


class MeasurementSettingError(ComplexityTrackerError, ValueError):
    """A measurement option is out of range, renamed, or does not fit the model."""


class ConditionalEntropyCapWarning(UserWarning):
    """H(S|X) reached its ceiling log2 K: the number of stochastic passes, not the model, sets it."""


@dataclass(frozen=True)
class LayerComplexity:
    """Complexity of one gating layer (or of the whole network), all values in bits.

    ``conditional_capped`` is True for a stochastic measurement whose H(S|X) estimate lies within
    :data:`CAP_MARGIN_BITS` of log2 K (K passes per input): I(X;S) = H - H(S|X) is then set
    by K rather than by the model.
    """

    name: str
    H: float
    I_XS: float
    I_XSY: float
    C: float
    TC: float
    additivity_gap: float
    d: int
    N: int
    estimator: str
    estimator_params: dict[str, float | str | bool]
    conditional_capped: bool = False


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


class ProbeSizeError(InvalidProbeError):
    """``class_balanced_probe`` was asked for more samples of a class than the labels hold."""


def class_balanced_probe(labels: np.ndarray | torch.Tensor, per_class: int = 200, seed: int = 0) -> np.ndarray:
    """Indices of a seeded, class-balanced probe: ``per_class`` samples of every class (sorted).

    The same seed gives the same probe.

    Raises:
        ProbeSizeError: ``per_class`` exceeds the number of samples of some class (the
            probe would not be balanced); the message names the smallest class count.
    """
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ProbeSizeError(f"per_class must be an integer >= 1, got {per_class!r}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) == 0:
        raise ProbeSizeError("no labels to draw a probe from; pass the labels of a non-empty dataset")
    if per_class > counts.min():
        smallest = classes[counts.argmin()]
        raise ProbeSizeError(
            f"per_class={per_class} exceeds the {counts.min()} samples of the smallest class "
            f"(class {smallest}); pass per_class <= {counts.min()} or draw the probe from a larger set"
        )
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(chosen))


def check_probe(inputs: torch.Tensor, labels: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    """Validate probe inputs (N, ...) and labels (N,); return the labels as numpy (``None`` without labels).

    I(X;S;Y) needs at least two classes and at least two inputs of every class.

    Raises:
        InvalidProbeError: naming the problem and the fix.
    """
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
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InvalidProbeError(
            "the probe holds a single class, so I(X;S;Y) is undefined; sample it with class_balanced_probe()"
        )
    if counts.min() < 2:
        single = classes[counts < 2].tolist()
        raise InvalidProbeError(
            f"the probe of {len(y)} inputs is too small for its {len(classes)} classes: I(X;S;Y) needs at least "
            f"2 inputs of every class, and classes {single[:10]} have 1; draw it with "
            "class_balanced_probe(labels, per_class=2 or more)"
        )
    return y


def check_repeats(repeats: int) -> int:
    """Validate K, the stochastic forward passes per probe input."""
    if not isinstance(repeats, (int, np.integer)) or isinstance(repeats, bool) or repeats < 2:
        raise MeasurementSettingError(
            f"repeats={repeats!r}: H(S|X) needs at least 2 stochastic forward passes per input (its estimate is "
            f"at most log2 K bits); pass repeats >= 2 (default {DEFAULT_REPEATS})"
        )
    return int(repeats)


def check_tc_method(tc_method: str) -> str:
    """Validate the total-correlation estimator's name."""
    if tc_method not in TC_METHODS:
        raise TCMethodError(f"unknown tc_method {tc_method!r}; choose one of {', '.join(TC_METHODS)}")
    return tc_method


_RENAMED_OPTIONS = {"lam": "kernel_width", "kde_lam": "kernel_width"}


def _reject_unknown_options(options: dict[str, object]) -> None:
    for name in options:
        if name in _RENAMED_OPTIONS:
            raise MeasurementSettingError(
                f"measure_complexity({name}=...) was renamed: pass {_RENAMED_OPTIONS[name]}= instead "
                "(the kernel width of the kde estimator, as a fraction of d)"
            )
        raise TypeError(f"measure_complexity() got an unexpected keyword argument {name!r}")


def _conditional_entropy(estimator: EntropyEstimator, states: PackedStates, groups: np.ndarray) -> float:
    """sum_g p(g) H(S | G = g) over the groups given per row."""
    values, counts = np.unique(groups, return_counts=True)
    n = len(groups)
    return float(sum(c / n * estimator.entropy(states.take(groups == v)) for v, c in zip(values, counts)))


@dataclass(frozen=True)
class _Settings:
    estimator: EntropyEstimator
    tc_method: str
    gate: str
    repeats: int | None  # K in stochastic mode, None for a deterministic measurement
    seed: int

    def params(self, states: PackedStates) -> dict[str, float | str | bool]:
        tc = {"tc_method": self.tc_method, **({"tc_bandwidth": DEFAULT_TC_BANDWIDTH} if self.tc_method == "kde" else {})}
        return {**self.estimator.params(states), **tc, "gate": self.gate}


def _layer_complexity(
    name: str,
    states: PackedStates,
    settings: _Settings,
    labels: np.ndarray | None,
    input_ids: np.ndarray | None,
) -> tuple[LayerComplexity, np.ndarray]:
    estimator = settings.estimator
    h = estimator.entropy(states)
    h_given_x = _conditional_entropy(estimator, states, input_ids) if input_ids is not None else 0.0
    i_xsy = h - _conditional_entropy(estimator, states, labels) if labels is not None else float("nan")
    rates = activation_rates(states)
    c = binary_entropy_sum(rates)
    tc = total_correlation(states, method=settings.tc_method, seed=settings.seed)
    capped = settings.repeats is not None and h_given_x >= math.log2(settings.repeats) - CAP_MARGIN_BITS
    record = LayerComplexity(
        name=name,
        H=h,
        I_XS=h - h_given_x,
        I_XSY=i_xsy,
        C=c,
        TC=tc,
        additivity_gap=h + tc - c,
        d=states.d,
        N=states.n_samples,
        estimator=estimator.name,
        estimator_params=settings.params(states),
        conditional_capped=capped,
    )
    return record, rates.astype(np.float32)


def measure_complexity(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | np.ndarray | None = None,
    *,
    layers: str | Sequence[str] | None = None,
    estimator: str | EntropyEstimator = "kde",
    kernel_width: float | None = None,
    tc_method: str = "kde",
    stochastic: bool = False,
    repeats: int = DEFAULT_REPEATS,
    stochastic_modules: str | Sequence[str] | None = None,
    seed: int = 0,
    include_network: bool = True,
    batch_size: int = 500,
    allow_unsupported: bool = False,
    open_at_zero: bool = False,
    **renamed: object,
) -> ComplexityReport:
    """Measure H, I(X;S), I(X;S;Y), C, TC and H + TC - C (bits) per gating layer and for the whole network.

    Args:
        model: a piecewise-linear network with ``nn.ReLU``-family modules.
        inputs: probe inputs (N, ...), typically from :func:`class_balanced_probe`.
        labels: probe labels (N,); needed for I(X;S;Y) (NaN without them), at least 2 per class.
        layers: module paths or glob patterns to measure; ``None`` for all gating layers.
        estimator: ``"kde"`` (the paper's kernel estimate), ``"plugin"`` (exact counting, for
            small layers), or an :class:`EntropyEstimator` instance.
        kernel_width: kernel width of ``"kde"`` as a fraction of d; ``None`` means 0.01 for
            vector layers and 0.04 for feature maps (and for the network when any layer is a map).
        tc_method: total-correlation estimator (see
            :func:`~complexity_tracker.estimators.total_correlation`): ``"kde"``, the paper's kernel
            density ratio against samples of the product of the units' marginals, or
            ``"plugin"``, C - H_plugin, exact for layers whose patterns repeat (refused for
            layers whose patterns are all distinct).
        stochastic: estimate H(S|X) from ``repeats`` forward passes of each input, with only the
            stochastic modules in train mode (dropout, modules marked ``samples_in_train_mode``,
            and ``stochastic_modules``); BatchNorm and the rest stay in eval mode.  H(S) and the
            other values are then estimated over all N * K samples.
        repeats: K, forward passes per input in stochastic mode (>= 2); H(S|X) is at most log2 K
            bits, and records that reach it are flagged ``conditional_capped`` (with a warning).
        stochastic_modules: module paths or glob patterns of further modules that are random in
            train mode (e.g. a custom noise layer).
        seed: seeds the global torch RNG for the stochastic passes (the caller's RNG state is
            restored afterwards, so measuring does not shift training) and the kde TC's product
            samples: a measurement is reproducible.
        include_network: also measure all selected layers concatenated (record ``"network"``).
        batch_size: samples per forward pass.
        allow_unsupported: ignore ReLU6/Hardtanh/max pooling instead of raising.
        open_at_zero: count a unit as open when ``z >= 0`` (the paper's written rule) rather than
            ``z > 0`` (the official code's, the default).

    The model is left as found: parameters, buffers, every module's train/eval flag, hooks, gradients.

    Raises:
        InvalidProbeError: a probe that cannot support the measurement.
        MeasurementSettingError: ``repeats < 2``, ``stochastic`` on a model without stochastic
            modules, or a renamed option (``lam`` -> ``kernel_width``).
        TCMethodError: an unknown ``tc_method``, or ``"plugin"`` on a layer whose patterns never repeat.
    """
    _reject_unknown_options(renamed)
    y = check_probe(inputs, labels)
    if kernel_width is not None and estimator != "kde":
        raise MeasurementSettingError(
            f"kernel_width applies to estimator='kde' only, not to {getattr(estimator, 'name', estimator)!r}; "
            "drop it, or set it on your estimator instance"
        )
    if isinstance(estimator, str):
        estimator = make_estimator(estimator, **({"kernel_width": kernel_width} if estimator == "kde" else {}))
    check_tc_method(tc_method)
    if stochastic:
        repeats = check_repeats(repeats)
        if not find_stochastic_modules(model, stochastic_modules):
            raise MeasurementSettingError(
                f"stochastic=True, but {type(model).__name__} has no module that is random in train mode "
                "(dropout, or a module with samples_in_train_mode = True); name yours with "
                "stochastic_modules=['path.to.module'], or measure with stochastic=False"
            )
    passes = repeats if stochastic else 1
    with forked_global_rng():
        torch.manual_seed(seed)
        captures = [
            capture_gating_states(
                model, inputs, layers, batch_size=batch_size, stochastic=stochastic,
                stochastic_modules=stochastic_modules, allow_unsupported=allow_unsupported, open_at_zero=open_at_zero,
            )
            for _ in range(passes)
        ]
    settings = _Settings(estimator, tc_method, "z >= 0" if open_at_zero else "z > 0", repeats if stochastic else None, seed)
    n = inputs.shape[0]
    input_ids = np.tile(np.arange(n), passes) if stochastic else None
    labels_all = np.tile(y, passes) if y is not None else None
    layer_states = {
        name: PackedStates(np.concatenate([c[name].bits for c in captures]), states.d, states.is_conv)
        for name, states in captures[0].items()
    }
    records, rates = [], {}
    for name, states in layer_states.items():
        record, rates[name] = _layer_complexity(name, states, settings, labels_all, input_ids)
        records.append(record)
    network = None
    if include_network:
        network, _ = _layer_complexity(
            NETWORK, PackedStates.concatenate(list(layer_states.values())), settings, labels_all, input_ids
        )
    report = ComplexityReport(layers=records, network=network, stochastic=stochastic, activation_rates=rates)
    capped = [r.name for r in report.records if r.conditional_capped]
    if capped:
        warnings.warn(
            f"H(S|X) reached its ceiling log2 K = {math.log2(passes):.2f} bits (K = repeats = {passes}) in "
            f"{', '.join(capped)}: the K passes of an input gave K patterns that the estimator tells apart, so "
            "I(X;S) there is set by K, not by the model; compare such values only at equal K",
            ConditionalEntropyCapWarning,
            stacklevel=2,
        )
    return report
