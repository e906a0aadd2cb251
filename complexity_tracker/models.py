"""The model zoo: MLPs, ResMLP, LeNet, CIFAR ResNets and two stochastic models.

Every model uses distinct ``nn.ReLU`` modules, each called once per forward pass, so that
:mod:`complexity_tracker.gating` sees one gating layer per ReLU.  Pooling is average pooling
(max pooling is not a two-state gate).  Inputs are expected in ``[0, 1]``; normalisation, where
used, is BatchNorm inside the model.

``config.depth`` and ``config.width`` mean, per model:

* ``mlp`` / ``dropout_mlp``: ``depth`` hidden Linear+ReLU layers of ``width`` units.
* ``mlp_mnist``: the paper's 784-1024-256-128-64-10 MLP, hidden widths scaled by input size / 784
  (at least 8 units); ``depth``/``width`` are ignored.
* ``resmlp``: a linear stem to ``width`` units, then ``depth`` blocks ``ReLU(x + W x)``.
* ``lenet``: conv(``width``) - avgpool - conv(``round(width * 16 / 6)``) - avgpool - 120 - 84;
  ``width = 6`` is the classic LeNet-5.
* ``resnet20/32/44``: CIFAR ResNets (3 stages of 3/5/7 basic blocks) with ``width``,
  ``2 width``, ``4 width`` channels; ``width = 16`` is He et al.'s network.
* ``vae_mlp``: encoder ReLU layer of ``width`` units to a Gaussian latent of ``max(2, width // 4)``
  dimensions (sampled in train mode, its mean in eval mode), then ``depth`` Linear+ReLU layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ConfigError, RunConfig

RESNET_BLOCKS = {"resnet20": 3, "resnet32": 5, "resnet44": 7}
MLP_MNIST_HIDDEN = (1024, 256, 128, 64)


class ZooModel(nn.Module):
    """Base class recording the input shape and class count a model was built for (used by checkpoints)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes

    def auxiliary_loss(self) -> torch.Tensor | None:
        """An extra training loss from the last forward pass (e.g. a VAE's KL term), or ``None``."""
        return None


def _dense_stack(sizes: list[int], dropout: float = 0.0) -> list[nn.Module]:
    """Linear(+Dropout)+ReLU for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(fan_in, fan_out))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU())
    return layers


class MLP(ZooModel):
    """Flatten, hidden Linear(+Dropout before the gate)+ReLU layers, linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden: list[int], dropout: float = 0.0) -> None:
        super().__init__(input_shape, n_classes)
        sizes = [math.prod(input_shape), *hidden]
        self.net = nn.Sequential(nn.Flatten(), *_dense_stack(sizes, dropout), nn.Linear(sizes[-1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualDenseBlock(nn.Module):
    """``ReLU(x + W x)``, the paper's ResMLP block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.linear(x))


class ResMLP(ZooModel):
    """Linear stem to ``width`` units, ``depth`` residual blocks, linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, depth: int, width: int) -> None:
        super().__init__(input_shape, n_classes)
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))
        self.blocks = nn.Sequential(*(ResidualDenseBlock(width) for _ in range(depth)))
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class LeNet(ZooModel):
    """LeNet-5 with average pooling and 'same' padding (works on 8x8, 28x28 and 32x32 inputs)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, width: int) -> None:
        super().__init__(input_shape, n_classes)
        channels, height, width_px = _image_shape(input_shape, "lenet")
        wide = max(1, round(width * 16 / 6))
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(width, wide, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        )
        flat = wide * (height // 4) * (width_px // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU; two distinct ReLU modules."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(ZooModel):
    """He et al.'s CIFAR ResNet (6n+2 layers) with base width ``width`` and 1x1-conv shortcuts."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, blocks_per_stage: int, width: int) -> None:
        super().__init__(input_shape, n_classes)
        channels, _, _ = _image_shape(input_shape, "resnet")
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, in_channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class GaussianSampler(nn.Module):
    """Reparameterised sample ``mu + exp(logvar / 2) * eps`` in train mode, ``mu`` in eval mode.

    Keeps the KL divergence to N(0, I) of the last train-mode call in ``self.kl`` (nats, batch mean).
    """

    def __init__(self) -> None:
        super().__init__()
        self.kl: torch.Tensor | None = None

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.kl = None
            return mu
        logvar = logvar.clamp(-10.0, 10.0)
        self.kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


class VAEClassifier(ZooModel):
    """Encoder (Linear+ReLU, then mu/logvar), Gaussian sampling, ``depth`` Linear+ReLU layers, classifier.

    In train mode the gates after the sampler are random given X, so I(X;S) < H(S) there.
    ``auxiliary_loss()`` returns ``kl_weight * KL(q(z|x) || N(0, I))`` of the last train-mode pass,
    which keeps the latent noisy (a variational information bottleneck).
    """

    #: Gating states are random given the input in train mode (read by the tracker).
    stochastic = True

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, depth: int, width: int,
                 kl_weight: float = 1e-3) -> None:
        super().__init__(input_shape, n_classes)
        latent = max(2, width // 4)
        self.kl_weight = kl_weight
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU())
        self.to_mu = nn.Linear(width, latent)
        self.to_logvar = nn.Linear(width, latent)
        self.sampler = GaussianSampler()
        self.decoder = nn.Sequential(*_dense_stack([latent] + [width] * depth), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(x)
        return self.decoder(self.sampler(self.to_mu(hidden), self.to_logvar(hidden)))

    def auxiliary_loss(self) -> torch.Tensor | None:
        return None if self.sampler.kl is None else self.kl_weight * self.sampler.kl


def _image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"{model} needs image inputs (C, H, W), got input shape {tuple(input_shape)}; "
            "use an MLP for vector data (dataset='synthetic')"
        )
    return input_shape[0], input_shape[1], input_shape[2]


def build_model(config: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build ``config.model`` for inputs of shape ``input_shape`` (one sample) and ``n_classes`` classes.

    See the module docstring for what ``depth`` and ``width`` mean per model.
    """
    input_shape = tuple(int(s) for s in input_shape)
    name, depth, width = config.model, config.depth, config.width
    if name == "mlp":
        return MLP(input_shape, n_classes, [width] * depth)
    if name == "dropout_mlp":
        return MLP(input_shape, n_classes, [width] * depth, dropout=config.dropout)
    if name == "mlp_mnist":
        scale = math.prod(input_shape) / 784
        return MLP(input_shape, n_classes, [max(8, round(h * scale)) for h in MLP_MNIST_HIDDEN])
    if name == "resmlp":
        return ResMLP(input_shape, n_classes, depth, width)
    if name == "lenet":
        return LeNet(input_shape, n_classes, width)
    if name in RESNET_BLOCKS:
        return CifarResNet(input_shape, n_classes, RESNET_BLOCKS[name], width)
    if name == "vae_mlp":
        return VAEClassifier(input_shape, n_classes, depth, width)
    raise ConfigError(f"unknown model {name!r}")  # RunConfig.validate() lists the accepted names
