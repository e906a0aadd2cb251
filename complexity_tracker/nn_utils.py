"""Small ``nn.Module`` helpers shared by capture, training and the robustness evaluation."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .errors import ComplexityTrackerError

#: Modules that draw random numbers in train mode and are deterministic in eval mode.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)

#: Class or instance attribute by which any other module declares itself random in train mode
#: (e.g. a VAE's sampling layer): ``samples_in_train_mode = True``.
STOCHASTIC_MARKER = "samples_in_train_mode"


class UnknownModuleError(ComplexityTrackerError, ValueError):
    """A module path or pattern names no module of the model."""


@contextlib.contextmanager
def model_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Set train/eval mode for the block and restore every submodule's own mode afterwards."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for module, was_training in saved:
            module.training = was_training


@contextlib.contextmanager
def forked_global_rng() -> Iterator[None]:
    """Restore the global torch RNG states (CPU, and every initialised CUDA device) on exit."""
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda_devices):
        yield


def find_stochastic_modules(model: nn.Module, names: str | Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The modules that are random given their input in train mode, keyed by module path.

    These are the dropout modules (:data:`DROPOUT_TYPES`), modules marked with
    ``samples_in_train_mode = True`` (:data:`STOCHASTIC_MARKER`), and the modules whose paths match
    ``names`` (module paths or glob patterns such as ``"encoder.noise*"``).

    Raises:
        UnknownModuleError: a name or pattern in ``names`` matches no module.
    """
    patterns = [names] if isinstance(names, str) else list(names or ())
    found: dict[str, nn.Module] = {}
    for path, module in model.named_modules():
        named = any(fnmatch.fnmatchcase(path, p) for p in patterns)
        if named or isinstance(module, DROPOUT_TYPES) or getattr(module, STOCHASTIC_MARKER, False):
            found[path or "<root>"] = module
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(path, p) for path, _ in model.named_modules())]
    if unmatched:
        raise UnknownModuleError(
            f"stochastic_modules {unmatched} match no module of {type(model).__name__}; give module paths "
            "as listed by model.named_modules(), e.g. 'encoder.sampler' or a glob such as 'blocks.*.noise'"
        )
    return found


@contextlib.contextmanager
def stochastic_mode(model: nn.Module, stochastic: dict[str, nn.Module]) -> Iterator[None]:
    """Eval mode for the whole model except the ``stochastic`` modules themselves, which run in train mode.

    BatchNorm and every other module stay in eval mode (running statistics are used, not
    updated).  On exit every module's mode flag is restored, and so are the buffers of the
    modules switched to train mode, in case one of them updates buffers there.
    """
    saved_buffers = [
        (buffer, buffer.clone()) for module in stochastic.values() for buffer in module.buffers(recurse=False)
    ]
    with model_mode(model, False):
        try:
            for module in stochastic.values():
                module.training = True
            yield
        finally:
            with torch.no_grad():
                for buffer, value in saved_buffers:
                    buffer.copy_(value)


class FourDimInput(nn.Module):
    """Presents a model taking inputs of shape (N, *sample_shape) as one taking (N, 1, 1, D).

    torchattacks needs 4-D (N, C, H, W) inputs; flat (N, D) data is attacked through this view.
    """

    def __init__(self, model: nn.Module, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.sample_shape = tuple(sample_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], *self.sample_shape))
