"""Find the gating modules of a network and capture their gating states.

A gating unit is one element of a ReLU-family module's input (its pre-activation
``z``).  Its gate is open when ``z > 0``, i.e. when the ReLU's output is positive: the
official code's rule.  The paper writes ``z >= 0``; the two differ only for units whose
pre-activation is exactly 0, which in practice are units zeroed by a preceding dropout
(closed under the strict rule, as they pass nothing on) or by an earlier ReLU.
``open_at_zero=True`` selects the paper's written rule.  For a conv feature map the
gating vector of one sample is every channel at every position (C x H x W units).

Stochastic capture (for H(S|X)) switches only the modules that are random in train mode
to train mode (:func:`~complexity_tracker.nn_utils.find_stochastic_modules`: dropout,
modules marked ``samples_in_train_mode = True``, modules named by the caller); BatchNorm and
everything else run in eval mode, and the model is left bit-identical.

Module hooks see only ``nn.Module`` activations: ``torch.nn.functional.relu``
called inside ``forward`` is invisible, so such models must use ``nn.ReLU``.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import ComplexityTrackerError
from .nn_utils import find_stochastic_modules, model_mode, stochastic_mode

#: Modules whose gate is ``pre-activation > 0`` (the ReLU output is positive).
SUPPORTED_GATING_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, nn.PReLU)

#: Piecewise-linear modules with more than two linear pieces (or data-dependent
#: routing) that this package does not model as gates.
UNSUPPORTED_PIECEWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU6,
    nn.Hardtanh,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


class NoGatingLayersError(ComplexityTrackerError):
    """The model has no (selected) gating module."""


class UnsupportedGatingModuleError(ComplexityTrackerError):
    """The model holds a piecewise-linear module that is not a two-state gate."""


def find_gating_modules(
    model: nn.Module,
    layers: str | Sequence[str] | None = None,
    *,
    allow_unsupported: bool = False,
) -> dict[str, nn.Module]:
    """Return the gating modules of ``model`` keyed by module path, in registration order.

    Args:
        model: any ``nn.Module``.
        layers: module paths or glob patterns (``"blocks.*.relu"``) selecting a subset;
            ``None`` selects every gating module.
        allow_unsupported: when ``False`` (default), a model holding ``nn.ReLU6``,
            ``nn.Hardtanh`` or max pooling raises, since their states are not binary.
            When ``True`` those modules are ignored and only ReLU-family gates are used.

    Raises:
        NoGatingLayersError: no supported gating module, or ``layers`` matches none.
        UnsupportedGatingModuleError: see ``allow_unsupported``.
    """
    found: dict[str, nn.Module] = {}
    unsupported: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, SUPPORTED_GATING_TYPES):
            found[name or "<root>"] = module
        elif isinstance(module, UNSUPPORTED_PIECEWISE_TYPES):
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported and not allow_unsupported:
        raise UnsupportedGatingModuleError(
            f"{type(model).__name__} contains piecewise-linear modules with more than two "
            f"linear pieces, which are not measured as gates: {', '.join(unsupported)}. "
            "Replace them with nn.ReLU / average pooling, or pass allow_unsupported=True "
            "to measure only the ReLU-family gates."
        )
    if not found:
        raise NoGatingLayersError(
            f"{type(model).__name__} has no supported gating module "
            f"({', '.join(t.__name__ for t in SUPPORTED_GATING_TYPES)}). Module hooks cannot see "
            "torch.nn.functional.relu calls: use nn.ReLU modules in the model instead."
        )
    if layers is None:
        return found
    patterns = [layers] if isinstance(layers, str) else list(layers)
    selected = {n: m for n, m in found.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in found)]
    if unmatched or not selected:
        raise NoGatingLayersError(
            f"layer selection {unmatched or patterns} matches no gating module; "
            f"available layers: {', '.join(found)}"
        )
    return selected


@dataclass(frozen=True)
class PackedStates:
    """Gating states of one layer for N samples, one bit per unit.

    Attributes:
        bits: ``(N, ceil(d / 8))`` uint8, big-endian bit order (``np.packbits``).
        d: number of gating units.
        is_conv: whether the layer is a feature map (more than one spatial position).
    """

    bits: np.ndarray
    d: int
    is_conv: bool

    @property
    def n_samples(self) -> int:
        return int(self.bits.shape[0])

    def unpack(self, columns: slice | None = None) -> np.ndarray:
        """Return the ``(N, d)`` 0/1 uint8 matrix, or the given byte columns of it."""
        if columns is None:
            return np.unpackbits(self.bits, axis=1, count=self.d)
        return np.unpackbits(self.bits[:, columns], axis=1)

    def take(self, rows: np.ndarray) -> PackedStates:
        """States of a subset of samples."""
        return PackedStates(self.bits[rows], self.d, self.is_conv)

    @staticmethod
    def concatenate(parts: Sequence[PackedStates]) -> PackedStates:
        """Join layers unit-wise (the gating vector of the whole network)."""
        dense = np.concatenate([p.unpack() for p in parts], axis=1)
        return PackedStates.from_binary(dense, is_conv=any(p.is_conv for p in parts))

    @staticmethod
    def from_binary(states: np.ndarray, *, is_conv: bool = False) -> PackedStates:
        """Pack an ``(N, d)`` 0/1 matrix."""
        return PackedStates(np.packbits(states.astype(bool), axis=1), int(states.shape[1]), is_conv)


def _layer_names(module_names: dict[int, str], module_ids: list[int]) -> list[str]:
    """Name each recorded call: the module path, plus ``:k`` when the module ran several times."""
    total = Counter(module_ids)
    seen: dict[int, int] = {}
    names = []
    for module_id in module_ids:
        k = seen.get(module_id, 0)
        seen[module_id] = k + 1
        base = module_names[module_id]
        names.append(base if total[module_id] == 1 else f"{base}:{k}")
    return names


class PreactivationRecorder(contextlib.AbstractContextManager):
    """Record the input (pre-activation) of every selected gating-module call.

    Use as a context manager around forward passes; the hooks are removed on exit, also
    when the body raises.  ``records()`` returns ``(layer_name, tensor)`` in call order for
    the passes since the last ``clear()``.  A module called k > 1 times per pass yields
    layers ``name:0 .. name:k-1``.

    Args:
        model: the network.
        layers: module paths or glob patterns; ``None`` for all gating modules.
        differentiable: keep the autograd graph of the pre-activations (for complexity
            losses).  Otherwise the recorder stores the detached binary gates ``z > 0``
            and raises on NaN/inf pre-activations.
        allow_unsupported: see :func:`find_gating_modules`.
        open_at_zero: record the gate as ``z >= 0`` (the paper's written rule) instead of
            ``z > 0`` (the official code's, the default).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str] | None = None,
        *,
        differentiable: bool = False,
        allow_unsupported: bool = False,
        open_at_zero: bool = False,
    ) -> None:
        self.modules = find_gating_modules(model, layers, allow_unsupported=allow_unsupported)
        self.differentiable = differentiable
        self.open_at_zero = open_at_zero
        self._module_names = {id(m): n for n, m in self.modules.items()}
        self._calls: list[tuple[int, torch.Tensor]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # A pre-hook, because an in-place ReLU overwrites its input before a forward hook runs.
        z = args[0]
        if self.differentiable:
            self._calls.append((id(module), z.clone()))
            return
        z = z.detach()
        if not torch.isfinite(z).all():
            raise NonFiniteActivationError(
                f"layer {self._module_names[id(module)]!r} received NaN or inf pre-activations; "
                "check the inputs (scaled to a finite range?) and the model's weights"
            )
        self._calls.append((id(module), z >= 0 if self.open_at_zero else z > 0))

    def __enter__(self) -> PreactivationRecorder:
        self._handles = [m.register_forward_pre_hook(self._hook) for m in self.modules.values()]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def records(self) -> list[tuple[str, torch.Tensor]]:
        """``(layer_name, pre-activation or gate tensor)`` for every call since ``clear()``."""
        names = _layer_names(self._module_names, [module_id for module_id, _ in self._calls])
        return [(name, tensor) for name, (_, tensor) in zip(names, self._calls)]

    def clear(self) -> None:
        self._calls.clear()


class NonFiniteActivationError(ComplexityTrackerError, ValueError):
    """A gating module received NaN or inf pre-activations."""


def capture_gating_states(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: str | Sequence[str] | None = None,
    *,
    batch_size: int = 500,
    stochastic: bool = False,
    stochastic_modules: str | Sequence[str] | None = None,
    allow_unsupported: bool = False,
    open_at_zero: bool = False,
) -> dict[str, PackedStates]:
    """Run ``inputs`` through ``model`` and return each gating layer's states (gate ``z > 0``), packed.

    Args:
        model: the network; its parameters, buffers, train/eval flags, hooks and gradients
            are left as found.
        inputs: probe inputs, first dimension N.
        layers: module paths or glob patterns; ``None`` for all gating modules.
        batch_size: samples per forward pass.
        stochastic: run the stochastic modules (dropout, marked sampling layers and
            ``stochastic_modules``) in train mode, so that the states are random given the
            input (used for H(S|X)); every other module, BatchNorm included, in eval mode.
            Otherwise the whole model runs in eval mode.  Draws from the global torch RNG.
        stochastic_modules: module paths or glob patterns of further modules to run in train
            mode when ``stochastic`` (see :func:`~complexity_tracker.nn_utils.find_stochastic_modules`).
        allow_unsupported: see :func:`find_gating_modules`.
        open_at_zero: see :class:`PreactivationRecorder`.

    Returns:
        Layer name -> :class:`PackedStates` with N rows, in forward-call order.
    """
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have shape (N, ...) with N >= 1, got {tuple(inputs.shape)}")
    device = next((p.device for p in model.parameters()), inputs.device)
    chunks: dict[str, list[np.ndarray]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    mode = (
        stochastic_mode(model, find_stochastic_modules(model, stochastic_modules))
        if stochastic
        else model_mode(model, False)
    )
    recorder = PreactivationRecorder(model, layers, allow_unsupported=allow_unsupported, open_at_zero=open_at_zero)
    with recorder, mode, torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            recorder.clear()
            model(inputs[start : start + batch_size].to(device))
            for name, gate in recorder.records():
                shapes[name] = tuple(gate.shape[1:])
                flat = gate.reshape(gate.shape[0], -1).cpu().numpy()
                chunks.setdefault(name, []).append(np.packbits(flat, axis=1))
    return {
        name: PackedStates(np.concatenate(parts), int(np.prod(shapes[name])), len(shapes[name]) > 1)
        for name, parts in chunks.items()
    }
