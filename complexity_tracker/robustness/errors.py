"""Errors raised on purpose by the robustness evaluation."""

from __future__ import annotations

from ..errors import ComplexityTrackerError


class RobustnessError(ComplexityTrackerError, ValueError):
    """Base class of the robustness evaluation's input errors."""


class InputRangeError(RobustnessError):
    """Inputs are not finite values in [0, 1] (torchattacks clamps adversarial inputs to [0, 1])."""


class UnknownAttackError(RobustnessError):
    """An attack name is not one of the supported attacks."""


class InvalidBudgetError(RobustnessError):
    """An attack budget (epsilon), step count or sample count is out of range."""


class IncompatibleModelsError(RobustnessError):
    """Models cannot be compared on the same inputs (class counts, input shapes, labels)."""


class ModelSourceError(RobustnessError):
    """A checkpoint file, MLflow run or Optuna study cannot provide a model."""
