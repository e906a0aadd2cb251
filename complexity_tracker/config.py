"""Configuration of one training run (model, data, optimisation, complexity loss, measurement)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
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
#: Total-correlation estimators (complexity_tracker.estimators.TC_METHODS, named here without importing torch).
TC_METHOD_NAMES = ("kde", "plugin")


#: Old setting names that now fail with a message naming the new one.
RENAMED_FIELDS = {"kde_lam": "kernel_width"}


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
    loss_every: int = 10  # the official code adds the complexity loss every 10 iterations
    loss_beta: float = 100.0
    ebm_steps: int = 5
    ebm_tau: float = 1e-3
    # adversarial training (PGD-Linf through torchattacks)
    adversarial_training: bool = False
    adv_eps: float = 0.1
    # complexity measurement
    probe_per_class: int = 100  # fits digits' default training split (its smallest class holds 116)
    estimator: str = "kde"
    kernel_width: float | None = None
    tc_method: str = "kde"
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
        _check_field_types(self)
        choices = {
            "model": MODELS,
            "dataset": DATASETS,
            "loss_method": LOSS_METHODS,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "estimator": ESTIMATOR_NAMES,
            "tc_method": TC_METHOD_NAMES,
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
        if self.kernel_width is not None and not self.kernel_width > 0:
            raise ConfigError(f"kernel_width must be > 0 or None (automatic), got {self.kernel_width!r}")
        if self.lam > 0 and self.loss_method == "none":
            raise ConfigError(
                f"lam={self.lam} but loss_method='none': choose loss_method ebm, kde or marginal, or set lam=0"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a mapping; ``log10_lam`` may replace ``lam`` (``None``/-inf means 0)."""
        values = dict(values)
        if "log10_lam" in values:
            log10_lam = values.pop("log10_lam")
            values["lam"] = 0.0 if log10_lam is None or log10_lam == -math.inf else 10.0 ** float(log10_lam)
        for old, new in RENAMED_FIELDS.items():
            if old in values:
                raise ConfigError(f"run setting {old!r} was renamed {new!r}; write {new} = {values[old]!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown run setting(s) {unknown}; known settings: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> RunConfig:
        """Rebuild a config saved by this or an earlier version (checkpoints, a run's ``config.json``):
        settings saved under an old name are read under their new name."""
        values = {RENAMED_FIELDS.get(name, name): value for name, value in values.items()}
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a table", type(None): "null"}


def _check_field_types(config: RunConfig) -> None:
    """Raise :class:`ConfigError` for a field whose value does not have the field's declared type
    (an integer is accepted for a float field; true/false is not a number)."""
    hints = typing.get_type_hints(RunConfig)
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        allowed = _allowed_types(hints[item.name])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            words = " or ".join(_TYPE_WORDS[t] for t in allowed if not (t is int and float in allowed))
            raise ConfigError(f"{item.name} must be {words}, got {value!r} ({type(value).__name__}); correct its value")


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    origin = typing.get_origin(hint) or hint
    return (float, int) if origin is float else (origin,)
