"""Adversarial robustness and transferability across complexity levels (torchattacks 3.3.0).

Inputs must lie in [0, 1] (normalisation belongs inside the model); budgets are in input units.
Minimal perturbations are L2 norms in input units; complexity values are in bits.
"""

from .attacks import FourDimInput, attack_mode, check_inputs, predict, run_attack
from .comparison import ComparisonResult, EvaluatedModel, compare_models
from .config import ALL_ATTACKS, BUDGETED_ATTACKS, MIN_NORM_ATTACKS, RobustnessConfig
from .correlation import Correlation, complexity_robustness_correlations
from .errors import (
    IncompatibleModelsError,
    InputRangeError,
    InvalidBudgetError,
    ModelSourceError,
    RobustnessError,
    UnknownAttackError,
)
from .evaluate import RobustnessReport, evaluate_robustness
from .perturbation import MinimalPerturbation, minimal_l2_perturbation
from .transfer import TransferMatrix, transfer_matrix

__all__ = [
    "ALL_ATTACKS",
    "BUDGETED_ATTACKS",
    "MIN_NORM_ATTACKS",
    "ComparisonResult",
    "Correlation",
    "EvaluatedModel",
    "FourDimInput",
    "IncompatibleModelsError",
    "InputRangeError",
    "InvalidBudgetError",
    "MinimalPerturbation",
    "ModelSourceError",
    "RobustnessConfig",
    "RobustnessError",
    "RobustnessReport",
    "TransferMatrix",
    "UnknownAttackError",
    "attack_mode",
    "check_inputs",
    "compare_models",
    "complexity_robustness_correlations",
    "evaluate_robustness",
    "minimal_l2_perturbation",
    "predict",
    "run_attack",
    "transfer_matrix",
]
