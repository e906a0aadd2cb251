"""The model zoo: MLPs, ResMLP, LeNet, CIFAR ResNets and two stochastic models.

Every model uses distinct ``nn.ReLU`` modules, each called once per forward pass, so that
:mod:`complexity_tracker.gating` sees one gating layer per ReLU.  Pooling is average pooling
(max pooling is not a two-state gate).  Inputs are expected in ``[0, 1]``; normalisation, where
used, happens inside the model (BatchNorm, or the paper models' :class:`InputNormalization`), so
attacks and probes work on ``[0, 1]`` pixels.

``config.depth`` and ``config.width`` mean, per model:

* ``mlp`` / ``dropout_mlp``: ``depth`` hidden Linear+ReLU layers of ``width`` units.
* ``mlp_mnist``: the paper's 784-1024-256-128-64-10 MLP as its official code builds it: no biases,
  Kaiming-normal weights, inputs mapped to ``[-1, 1]`` inside the model (d = 1,472 gating units on
  28x28 inputs).  Hidden widths are scaled by input size / 784 (at least 8 units) for other inputs;
  ``depth``/``width`` are ignored.
* ``resmlp``: the paper's ResMLP as its official code builds it: inputs normalised inside the model,
  ``depth`` blocks ``ReLU(x + W x)`` at ``width`` units, a linear classifier, no biases, PyTorch's
  default initialisation.  The residual stream starts at the flattened input when ``width`` equals
  the input size (the official ResMLP-10 is ``depth = 9``, ``width = 3072`` on CIFAR-10); other
  widths get a bias-free linear input layer, which the official code does not have.
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
#: Per-channel mean / std of the official code's CIFAR-10 loader (ImageNet's statistics).
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ZooModel(nn.Module):
    """Base class recording the input shape and class count a model was built for (used by checkpoints)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes

    def auxiliary_loss(self) -> torch.Tensor | None:
        """An extra training loss from the last forward pass (e.g. a VAE's KL term), or ``None``."""
        return None


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel: the official code's data normalisation, moved into the model.

    Images with 3 channels use the official CIFAR-10 loader's mean/std; every other input (MNIST's
    one channel, vectors) uses mean = std = 0.5 as the official MNIST loader does, which maps
    ``[0, 1]`` onto ``[-1, 1]`` (computed as ``2 x - 1``).  Inside the model, attacks, probes and
    datasets all stay in ``[0, 1]``.
    """

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        rgb = len(input_shape) == 3 and input_shape[0] == 3
        mean, std = (torch.tensor(RGB_MEAN), torch.tensor(RGB_STD)) if rgb else (torch.tensor([0.5]), torch.tensor([0.5]))
        channel_shape = (-1, 1, 1) if len(input_shape) == 3 else (-1,)
        self.register_buffer("scale", (1.0 / std).reshape(channel_shape), persistent=False)
        self.register_buffer("shift", (-mean / std).reshape(channel_shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _dense_stack(sizes: list[int], dropout: float = 0.0, bias: bool = True) -> list[nn.Module]:
    """Linear(+Dropout)+ReLU for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(fan_in, fan_out, bias=bias))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU())
    return layers


class MLP(ZooModel):
    """Flatten, hidden Linear(+Dropout before the gate)+ReLU layers, linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden: list[int], dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__(input_shape, n_classes)
        sizes = [math.prod(input_shape), *hidden]
        self.net = nn.Sequential(nn.Flatten(), *_dense_stack(sizes, dropout, bias),
                                 nn.Linear(sizes[-1], n_classes, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PaperMLP(MLP):
    """The paper's MNIST MLP: bias-free Linear+ReLU layers, Kaiming-normal weights, inputs to [-1, 1] inside.

    ``self.net`` is the network on normalised inputs; ``forward`` takes ``[0, 1]`` inputs.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden: list[int]) -> None:
        super().__init__(input_shape, n_classes, hidden, bias=False)
        self.normalize = InputNormalization(input_shape)
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class ResidualDenseBlock(nn.Module):
    """``ReLU(x + W x)`` with a bias-free ``W``, the paper's ResMLP block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.linear(x))


class ResMLP(ZooModel):
    """The paper's ResMLP: normalised flat input, ``depth`` residual blocks, bias-free linear classifier.

    The blocks run at the input size when ``width`` equals it (as in the official code); otherwise
    a bias-free Linear maps the input to ``width`` units first.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, depth: int, width: int) -> None:
        super().__init__(input_shape, n_classes)
        self.normalize = InputNormalization(input_shape)
        fan_in = math.prod(input_shape)
        input_layer = [] if width == fan_in else [nn.Linear(fan_in, width, bias=False)]
        self.stem = nn.Sequential(nn.Flatten(), *input_layer)
        self.blocks = nn.Sequential(*(ResidualDenseBlock(width) for _ in range(depth)))
        self.head = nn.Linear(width, n_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.normalize(x))))


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

    #: Random given its input in train mode: stochastic measurement runs it in train mode.
    samples_in_train_mode = True

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
        return PaperMLP(input_shape, n_classes, [max(8, round(h * scale)) for h in MLP_MNIST_HIDDEN])
    if name == "resmlp":
        return ResMLP(input_shape, n_classes, depth, width)
    if name == "lenet":
        return LeNet(input_shape, n_classes, width)
    if name in RESNET_BLOCKS:
        return CifarResNet(input_shape, n_classes, RESNET_BLOCKS[name], width)
    if name == "vae_mlp":
        return VAEClassifier(input_shape, n_classes, depth, width)
    raise ConfigError(f"unknown model {name!r}")  # RunConfig.validate() lists the accepted names
