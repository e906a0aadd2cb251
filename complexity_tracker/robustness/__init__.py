"""Adversarial robustness and transferability across complexity levels (torchattacks 3.3.0).

Inputs must lie in [0, 1] (normalisation belongs inside the model); budgets are in input units.
Minimal perturbations are L2 norms in input units; complexity values are in bits.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "ALL_ATTACKS": ".config",
    "BUDGETED_ATTACKS": ".config",
    "ComparisonResult": ".comparison",
    "Correlation": ".correlation",
    "EvaluatedModel": ".comparison",
    "FourDimInput": ".attacks",
    "IncompatibleModelsError": ".errors",
    "InputRangeError": ".errors",
    "InvalidBudgetError": ".errors",
    "MIN_NORM_ATTACKS": ".config",
    "MinimalPerturbation": ".perturbation",
    "ModelSourceError": ".errors",
    "RobustnessConfig": ".config",
    "RobustnessError": ".errors",
    "RobustnessReport": ".evaluate",
    "TransferMatrix": ".transfer",
    "UnknownAttackError": ".errors",
    "attack_mode": ".attacks",
    "check_inputs": ".attacks",
    "compare_models": ".comparison",
    "complexity_robustness_correlations": ".correlation",
    "evaluate_robustness": ".evaluate",
    "minimal_l2_perturbation": ".perturbation",
    "predict": ".attacks",
    "run_attack": ".attacks",
    "transfer_matrix": ".transfer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
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

if TYPE_CHECKING:
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
