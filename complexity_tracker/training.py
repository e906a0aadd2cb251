"""The training loop: task loss, optional complexity loss and PGD adversarial training, epoch callbacks.

Typical use::

    seed_everything(config.seed, config.deterministic)
    data = load_data(config)
    model = build_model(config, data.input_shape, data.n_classes)
    result = train(model, data, config, callbacks=[my_callback])

Callbacks receive an :class:`EpochResult` at epoch 0 (before any update) and after every epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchattacks
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .config import RunConfig
from .data import DataSplits, DatasetError
from .errors import ComplexityTrackerError
from .loss import ComplexityLoss, build_complexity_loss
from .models import ZooModel, build_model
from .nn_utils import FourDimInput, model_mode

#: PGD settings for adversarial training (Madry et al.): 10 steps of size 2.5 * eps / 10.
PGD_STEPS = 10
PGD_STEP_FRACTION = 0.25
EVAL_BATCH_SIZE = 4096
CHECKPOINT_FORMAT = 1


class TrainingDivergedError(ComplexityTrackerError, FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, value: float, part: str) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: the {part} is {value}. "
            "Lower lr (or lam for the complexity loss), or check the inputs for NaN/inf."
        )


class CheckpointError(ComplexityTrackerError, ValueError):
    """A checkpoint cannot be written or read."""


class DeviceError(ComplexityTrackerError, ValueError):
    """The requested device does not exist on this machine."""


@dataclass
class EpochResult:
    """What an epoch callback sees: the epoch (0 = before training), the model, and its metrics.

    ``metrics`` holds ``train_loss``, ``test_loss`` (mean cross-entropy, nats), ``train_acc``,
    ``test_acc`` (fractions), ``loss_gap = test_loss - train_loss``, ``lr`` (used during the epoch), and, when a complexity
    loss is on, ``complexity_loss`` (mean penalty in bits over the epoch's penalised steps, NaN
    when ``loss_every`` skipped them all; at epoch 0 on the first training batch, in eval mode).
    """

    epoch: int
    model: nn.Module
    metrics: dict[str, float]


EpochCallback = Callable[[EpochResult], None]


@dataclass
class TrainResult:
    """The trained model and one metrics dict per epoch (0..epochs), each with an ``epoch`` key."""

    model: nn.Module
    history: list[dict[str, float]]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; other names (``"cpu"``, ``"cuda:1"``) are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device={name!r} is not a torch device name; use 'auto', 'cpu' or 'cuda[:k]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name!r} but CUDA is not available here; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); ``deterministic`` also selects deterministic kernels.

    Deterministic mode sets ``torch.use_deterministic_algorithms(True, warn_only=True)`` and the
    cuBLAS workspace variable, so the same seed gives the same weights on the same machine.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int = EVAL_BATCH_SIZE) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of ``model`` in eval mode; the model's modes are restored."""
    device = _model_device(model)
    total_loss, correct = 0.0, 0
    with model_mode(model, False):
        for start in range(0, len(labels), batch_size):
            x = inputs[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
    return total_loss / len(labels), correct / len(labels)


class PGDTraining:
    """Replaces each training batch by PGD-Linf adversarial examples (torchattacks), model in eval mode.

    Image batches (N, C, H, W) are attacked as they are; vector batches (N, D) are shown to
    torchattacks as (N, 1, 1, D) images.
    """

    def __init__(self, model: nn.Module, eps: float) -> None:
        self.model = model
        self.eps = eps

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        attacked = self.model if x.ndim == 4 else FourDimInput(self.model, tuple(x.shape[1:]))
        attack = torchattacks.PGD(attacked, eps=self.eps, alpha=PGD_STEP_FRACTION * self.eps, steps=PGD_STEPS,
                                  random_start=True)
        with model_mode(self.model, False):
            return attack(x.reshape(x.shape[0], 1, 1, -1) if x.ndim != 4 else x, y).reshape(x.shape)


def _metrics(model: nn.Module, data: DataSplits, lr: float, complexity: float | None) -> dict[str, float]:
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    metrics = {
        "train_loss": train_loss,
        "test_loss": test_loss,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "loss_gap": test_loss - train_loss,
        "lr": lr,
    }
    if complexity is not None:
        metrics["complexity_loss"] = complexity
    return metrics


def _make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _make_schedule(optimizer: torch.optim.Optimizer, config: RunConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per epoch: cosine to 0 over ``epochs``, or x0.1 every third of the epochs."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    return None


def _initial_complexity(model: nn.Module, penalty: ComplexityLoss, data: DataSplits, batch_size: int) -> float:
    """The penalty (bits) on the first training batch, in eval mode, without updating any state."""
    device = _model_device(model)
    with torch.no_grad(), model_mode(model, False), penalty.recording() as recorder:
        model(data.x_train[:batch_size].to(device))
        return penalty(recorder.records(), update=False).item()


def _divergence(epoch: int, step: int, task_loss: torch.Tensor, complexity: torch.Tensor | None,
                total: torch.Tensor, method: str) -> TrainingDivergedError:
    """Name the first non-finite part of the loss."""
    if not torch.isfinite(task_loss):
        return TrainingDivergedError(epoch, step, task_loss.item(), "task loss")
    if complexity is not None and not torch.isfinite(complexity):
        return TrainingDivergedError(epoch, step, complexity.item(), f"{method} complexity loss")
    return TrainingDivergedError(epoch, step, total.item(), "total loss")


def train(
    model: nn.Module,
    data: DataSplits,
    config: RunConfig,
    callbacks: Iterable[EpochCallback] = (),
    progress: bool = True,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.x_train`` for ``config.epochs`` epochs.

    The loss is cross-entropy, plus the model's ``auxiliary_loss()`` if any (the VAE's KL term),
    plus ``config.lam`` times the complexity penalty of ``config.loss_method`` (bits, computed every
    ``config.loss_every`` steps; skipped entirely when ``lam == 0``).  With
    ``config.adversarial_training`` every batch is replaced by PGD examples of radius ``adv_eps``.

    ``stop`` is asked before every step; when it answers True the training raises
    ``KeyboardInterrupt``, as a Ctrl-C would, between two steps (a study worker's clean stop).

    Torch's RNG is reseeded with ``config.seed`` here (dropout, sampling, PGD starts); batch order
    comes from a generator seeded with ``config.seed``.  Seed before ``build_model`` for
    reproducible initial weights.

    Raises:
        DatasetError: NaN/inf inputs.
        TrainingDivergedError: a NaN/inf loss, naming the epoch and step.
        NoGatingLayersError: ``config.loss_layers`` matches no gating module.
    """
    callbacks = list(callbacks)
    for name in ("x_train", "x_test"):
        if not torch.isfinite(getattr(data, name)).all():
            raise DatasetError(f"data.{name} holds NaN or inf values; clean or impute the inputs before training")
    device = resolve_device(config.device)
    model.to(device)
    seed_everything(config.seed, config.deterministic)
    penalty = build_complexity_loss(model, config)
    optimizer = _make_optimizer(model, config)
    schedule = _make_schedule(optimizer, config)
    adversary = PGDTraining(model, config.adv_eps) if config.adversarial_training else None
    order = torch.Generator().manual_seed(config.seed)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    n, batch_size = len(y_train), config.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    history: list[dict[str, float]] = []

    def finish_epoch(epoch: int, lr: float, complexity: float | None) -> None:
        metrics = _metrics(model, data, lr, complexity)
        for name in ("train_loss", "test_loss"):
            if not math.isfinite(metrics[name]):
                raise TrainingDivergedError(epoch, steps_per_epoch if epoch else 0, metrics[name], f"evaluated {name}")
        history.append({"epoch": epoch, **metrics})
        for callback in callbacks:
            callback(EpochResult(epoch, model, metrics))

    finish_epoch(0, config.lr, _initial_complexity(model, penalty, data, batch_size) if penalty else None)
    global_step = 0
    with tqdm(total=config.epochs * steps_per_epoch, desc="train", unit="step", disable=not progress) as bar:
        for epoch in range(1, config.epochs + 1):
            model.train()
            permutation = torch.randperm(n, generator=order).to(device)
            penalty_sum, penalty_count = torch.zeros((), device=device), 0
            for step in range(1, steps_per_epoch + 1):
                if stop is not None and stop():
                    raise KeyboardInterrupt(f"stop requested at epoch {epoch}, step {step}")
                index = permutation[(step - 1) * batch_size : step * batch_size]
                x, y = x_train[index], y_train[index]
                if adversary is not None:
                    x = adversary(x, y)
                global_step += 1
                penalise = penalty is not None and global_step % config.loss_every == 0
                with penalty.recording() if penalise else contextlib.nullcontext() as recorder:
                    logits = model(x)
                task_loss = F.cross_entropy(logits, y)
                loss = task_loss
                auxiliary = model.auxiliary_loss() if isinstance(model, ZooModel) else None
                if auxiliary is not None:
                    loss = loss + auxiliary
                complexity = penalty(recorder.records()) if penalise else None
                if complexity is not None:
                    loss = loss + config.lam * complexity
                    penalty_sum += complexity.detach()
                    penalty_count += 1
                if not torch.isfinite(loss):  # one device sync per step; the parts are told apart only on failure
                    raise _divergence(epoch, step, task_loss, complexity, loss, config.loss_method)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
            epoch_lr = optimizer.param_groups[0]["lr"]
            if schedule is not None:
                schedule.step()
            if penalty is not None:
                penalty.end_epoch()
            epoch_penalty = penalty_sum.item() / penalty_count if penalty_count else math.nan
            finish_epoch(epoch, epoch_lr, epoch_penalty if penalty else None)
            bar.set_postfix(epoch=epoch, test_acc=f"{history[-1]['test_acc']:.3f}",
                            gap=f"{history[-1]['loss_gap']:.3f}")
    return TrainResult(model=model, history=history)


def save_checkpoint(path: str | Path, model: nn.Module, config: RunConfig) -> None:
    """Write the model's weights and its run config (as a plain dict) for :func:`load_checkpoint`."""
    if not isinstance(model, ZooModel):
        raise CheckpointError(
            f"save_checkpoint needs a model from build_model (got {type(model).__name__}); "
            "for your own models use torch.save(model.state_dict(), path)"
        )
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "input_shape": list(model.input_shape),
            "n_classes": model.n_classes,
            "state_dict": model.state_dict(),
        },
        Path(path),
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild the model saved by :func:`save_checkpoint` (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for foreign files
        raise CheckpointError(f"{path} is not a complexity_tracker checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        plain = isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values())
        raise CheckpointError(
            f"{path} is {'a plain state_dict' if plain else 'not a complexity_tracker checkpoint'}: a checkpoint "
            f"holds the weights with the run config that rebuilds the model (format {CHECKPOINT_FORMAT}). Write one "
            "with `complexity-tracker train --save PATH` or complexity_tracker.training.save_checkpoint(path, model, "
            "config), or measure your own model in Python with measure_complexity(model, inputs, labels)"
        )
    config = RunConfig.from_saved(payload["config"])
    model = build_model(config, tuple(payload["input_shape"]), payload["n_classes"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: its weights do not fit the {_architecture(config)} its config describes "
            f"({_first_mismatch(model.state_dict(), payload['state_dict'])}); the checkpoint was edited or written "
            "by another version: write it again with `complexity-tracker train --save PATH`"
        ) from exc
    return model, config


def _architecture(config: RunConfig) -> str:
    return f"{config.model} of depth {config.depth}, width {config.width}"


def _first_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """The first parameter whose name or shape differs between two state_dicts, in words."""
    for name, tensor in expected.items():
        if name not in found:
            return f"missing {name}"
        if tuple(found[name].shape) != tuple(tensor.shape):
            return f"{name} has shape {tuple(found[name].shape)} where the model has {tuple(tensor.shape)}"
    extra = next(iter(found.keys() - expected.keys()), None)
    return f"unexpected {extra}" if extra else "mismatching weights"
