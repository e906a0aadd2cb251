"""Small ``nn.Module`` helpers shared by capture, training and the robustness evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


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
