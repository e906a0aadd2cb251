"""Running torchattacks attacks correctly: [0, 1] inputs, 4-D tensors, eval mode, seeded, RNG-neutral.

torchattacks 3.3.0 expects (N, C, H, W) inputs in [0, 1]; models taking other shapes (flat
(N, D) vectors) are wrapped in :class:`FourDimInput`, which receives (N, 1, 1, D) tensors and
reshapes them back.  :func:`attack_mode` puts the model in eval mode, freezes its parameters
(DeepFool/FAB call ``backward`` and would otherwise fill ``param.grad``) and forks the global
torch RNG (APGD, FAB and Square call ``torch.manual_seed``); everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torchattacks
from torch import nn

from ..nn_utils import FourDimInput, model_mode
from .config import BUDGETED_ATTACKS, RobustnessConfig, check_attack_name, check_epsilon
from .errors import IncompatibleModelsError, InputRangeError


#: APGD-T's targeted DLR loss reads the 4 largest logits.
AUTOATTACK_MIN_CLASSES = 4


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (torchattacks needs at least one parameter)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise IncompatibleModelsError(
            f"{type(model).__name__} has no parameters; torchattacks needs a model with parameters"
        ) from None


def check_inputs(inputs: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> None:
    """Raise unless ``inputs`` are finite values in [0, 1] with one integer label in [0, n_classes) each."""
    if not isinstance(inputs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("inputs and labels must be torch tensors")
    if inputs.ndim < 2 or inputs.shape[0] < 1:
        raise InputRangeError(f"inputs must be shaped (N, ...) with N >= 1, got {tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise InputRangeError("inputs contain NaN or inf values")
    low, high = float(inputs.min()), float(inputs.max())
    if low < 0 or high > 1:
        raise InputRangeError(
            f"inputs must lie in [0, 1] (got min {low:.4g}, max {high:.4g}); attacks clamp to [0, 1], so "
            "scale the data to [0, 1] and put any normalisation (mean/std) inside the model"
        )
    if labels.ndim != 1 or labels.shape[0] != inputs.shape[0] or labels.dtype.is_floating_point:
        raise InputRangeError(
            f"labels must be a 1-D integer tensor with one label per input; got dtype {labels.dtype}, "
            f"shape {tuple(labels.shape)} for {inputs.shape[0]} inputs"
        )
    if n_classes is not None and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise IncompatibleModelsError(
            f"labels range over [{int(labels.min())}, {int(labels.max())}] but the models have {n_classes} classes"
        )


def n_classes_of(model: nn.Module, inputs: torch.Tensor) -> int:
    """The number of logits ``model`` returns for one input (evaluated without changing its mode)."""
    with torch.no_grad(), model_mode(model, False):
        logits = model(inputs[:1].to(model_device(model)))
    if logits.ndim != 2:
        raise IncompatibleModelsError(f"the model must return logits shaped (N, classes), got {tuple(logits.shape)}")
    return int(logits.shape[1])


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters and a forked global RNG (CPU and CUDA) for the duration.

    Every module's ``training`` flag, every parameter's ``requires_grad`` and the caller's
    RNG states are restored on exit, also when an attack raises.
    """
    requires_grad = {param: param.requires_grad for param in model.parameters()}
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda_devices), model_mode(model, False):
        for param in requires_grad:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param, flag in requires_grad.items():
                param.requires_grad_(flag)


def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels (on the CPU) for ``inputs`` in eval mode, without gradients."""
    device = model_device(model)
    with torch.no_grad(), model_mode(model, False):
        return torch.cat(
            [model(chunk.to(device)).argmax(dim=1).cpu() for chunk in inputs.split(batch_size)]
        )


def build_attack(
    name: str, model: nn.Module, eps: float | None, config: RobustnessConfig, n_classes: int, n_features: int
) -> torchattacks.attack.Attack:
    """A torchattacks attack object for ``model`` (already 4-D compatible).

    ``eps`` is the budget of budgeted attacks and ignored by minimum-norm ones.  FAB-L2 is given
    eps = sqrt(D), the largest L2 distance inside [0, 1]^D, so that any success it finds counts.
    """
    check_attack_name(name)
    if name in BUDGETED_ATTACKS:
        eps = check_epsilon(eps, BUDGETED_ATTACKS[name])
    if name == "autoattack" and n_classes < AUTOATTACK_MIN_CLASSES:
        raise IncompatibleModelsError(
            f"autoattack needs at least {AUTOATTACK_MIN_CLASSES} classes (its targeted DLR loss uses the 4 largest "
            f"logits); the model has {n_classes}: use pgd_linf instead"
        )
    seed = config.seed
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd_linf":
        return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / config.pgd_steps, steps=config.pgd_steps)
    if name == "pgd_l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=2.5 * eps / config.pgd_steps, steps=config.pgd_steps)
    if name == "autoattack":
        return torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version=config.autoattack_version, n_classes=n_classes, seed=seed
        )
    if name == "deepfool":
        return torchattacks.DeepFool(model, steps=config.deepfool_steps, overshoot=config.deepfool_overshoot)
    return torchattacks.FAB(
        model, norm="L2", eps=math.sqrt(n_features), steps=config.fab_steps, n_restarts=1, seed=seed,
        multi_targeted=False, n_classes=n_classes,
    )


def run_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    name: str,
    eps: float | None = None,
    config: RobustnessConfig | None = None,
    *,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Adversarial examples of ``inputs`` against ``model`` (same shape as ``inputs``, on the CPU).

    Args:
        model: a classifier returning logits; left in the mode it was in, gradients untouched.
        inputs: (N, ...) values in [0, 1]; flat vectors are attacked as (N, 1, 1, D) images.
        labels: (N,) true labels.
        name: one of :data:`~complexity_tracker.robustness.config.ALL_ATTACKS`.
        eps: budget (input units) of budgeted attacks; unused by ``deepfool``/``fab_l2``.
        config: steps, seed and batch size (defaults of :class:`RobustnessConfig`).
        n_classes: number of classes (read from the model's output when omitted).

    DeepFool and FAB return their last iterate (FAB: the clean input) where they fail, so
    re-classify the result before counting a success.  Samples an attack turned into NaN/inf
    are returned clean (a failure).
    """
    config = config or RobustnessConfig()
    check_attack_name(name)
    check_inputs(inputs, labels, n_classes)
    n_classes = n_classes or n_classes_of(model, inputs)
    device = model_device(model)
    sample_shape = tuple(inputs.shape[1:])
    attacked = model if inputs.ndim == 4 else FourDimInput(model, sample_shape)
    n_features = math.prod(sample_shape)
    attack = build_attack(name, attacked, eps, config, n_classes, n_features)
    adversarial = []
    with attack_mode(model):
        for batch, batch_labels in zip(inputs.split(config.batch_size), labels.split(config.batch_size)):
            torch.manual_seed(config.seed)
            batch4d = batch if batch.ndim == 4 else batch.reshape(batch.shape[0], 1, 1, n_features)
            adv = attack(batch4d.to(device), batch_labels.to(device)).detach().reshape(batch.shape).cpu()
            adversarial.append(_clean_where_not_finite(adv, batch))
    return torch.cat(adversarial)


def _clean_where_not_finite(adversarial: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """A sample with NaN/inf values is a failed attack: DeepFool divides by a zero gradient norm
    where the logits do not depend on the input.  Such samples are replaced by the clean input."""
    finite = torch.isfinite(adversarial).reshape(adversarial.shape[0], -1).all(dim=1)
    return torch.where(finite.reshape(-1, *[1] * (inputs.ndim - 1)), adversarial, inputs.cpu())
