"""Configuration of one training run (model, data, optimisation, complexity loss, measurement)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ComplexityTrackerError


class ConfigError(ComplexityTrackerError, ValueError):
    """A configuration value is missing, unknown or out of range."""


MODELS = ("mlp", "mlp_mnist", "resmlp", "lenet", "resnet20", "resnet32", "resnet44", "dropout_mlp", "vae_mlp")
DATASETS = ("digits", "mnist5k", "synthetic", "mnist", "fashion_mnist", "cifar10")
#: (n_train, n_test) when a config leaves them unset; mnist5k's default uses all its images.
DEFAULT_SIZES = {"mnist5k": (4000, 1000)}
GENERIC_SIZES = (2000, 1000)
MNIST5K_IMAGES = 5000
LOSS_METHODS = ("none", "ebm", "kde", "marginal")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine", "step")
ESTIMATOR_NAMES = ("kde", "plugin")


@dataclass
class RunConfig:
    """Everything that defines one training run; every field is logged as an MLflow param.

    Complexity values are in bits; ``lam`` is the complexity-loss weight (linear).
    """

    # model
    model: str = "mlp"
    depth: int = 4
    width: int = 128
    dropout: float = 0.2
    # data
    dataset: str = "digits"
    data_dir: str | None = None
    task_order: int = 2
    synthetic_dim: int = 16
    n_train: int | None = None  # None: the dataset's default (DEFAULT_SIZES, else 2000 / 1000)
    n_test: int | None = None
    data_seed: int = 0
    # optimisation
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    deterministic: bool = True
    device: str = "auto"
    # complexity loss: L = L_task + lam * sum_l H(S_l)
    loss_method: str = "none"
    lam: float = 0.0
    loss_layers: list[str] | None = None
    loss_every: int = 1
    loss_beta: float = 100.0
    ebm_steps: int = 5
    ebm_tau: float = 1e-3
    # adversarial training (PGD-Linf through torchattacks)
    adversarial_training: bool = False
    adv_eps: float = 0.1
    # complexity measurement
    probe_per_class: int = 100  # fits digits' default training split (its smallest class holds 116)
    estimator: str = "kde"
    kde_lam: float | None = None
    measure_every: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        default_train, default_test = DEFAULT_SIZES.get(self.dataset, GENERIC_SIZES)
        if self.n_train is None:
            self.n_train = default_train
        if self.n_test is None:
            self.n_test = default_test
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field and the accepted values."""
        choices = {
            "model": MODELS,
            "dataset": DATASETS,
            "loss_method": LOSS_METHODS,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "estimator": ESTIMATOR_NAMES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("depth", "width", "epochs", "batch_size", "probe_per_class", "measure_every", "loss_every",
                     "task_order", "n_train", "n_test", "synthetic_dim", "ebm_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"lam must be a finite number >= 0 (the complexity-loss weight), got {self.lam!r}")
        if not (isinstance(self.data_seed, int) and self.data_seed >= 0):
            raise ConfigError(f"data_seed must be an integer >= 0, got {self.data_seed!r}")
        for name in ("loss_beta", "ebm_tau"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout must be in [0, 1) (drop probability of dropout_mlp), got {self.dropout!r}")
        if self.dataset == "mnist5k" and self.n_train + self.n_test > MNIST5K_IMAGES:
            raise ConfigError(
                f"mnist5k holds {MNIST5K_IMAGES} images but n_train + n_test = {self.n_train} + {self.n_test} = "
                f"{self.n_train + self.n_test}: lower n_train / n_test to a sum of at most {MNIST5K_IMAGES} "
                "(default 4000 / 1000), or use dataset='mnist' with the full MNIST files in data_dir"
            )
        if self.dataset == "synthetic" and self.task_order > self.synthetic_dim:
            raise ConfigError(
                f"task_order={self.task_order} exceeds synthetic_dim={self.synthetic_dim}: "
                "the parity needs that many distinct input coordinates"
            )
        if not (self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.kde_lam is not None and not self.kde_lam > 0:
            raise ConfigError(f"kde_lam must be > 0 or None (automatic), got {self.kde_lam!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a mapping; ``log10_lam`` may replace ``lam`` (``None``/-inf means 0)."""
        values = dict(values)
        if "log10_lam" in values:
            log10_lam = values.pop("log10_lam")
            values["lam"] = 0.0 if log10_lam is None or log10_lam == -math.inf else 10.0 ** float(log10_lam)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown run setting(s) {unknown}; known settings: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)
