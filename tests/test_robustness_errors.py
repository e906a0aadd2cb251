"""Bad input to the robustness evaluation gets a clear ComplexityTrackerError naming the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from complexity_tracker.errors import ComplexityTrackerError
from complexity_tracker.robustness import (
    IncompatibleModelsError,
    InputRangeError,
    InvalidBudgetError,
    RobustnessConfig,
    UnknownAttackError,
    compare_models,
    evaluate_robustness,
    run_attack,
    transfer_matrix,
)


def classifier(n_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, n_classes))


X = torch.rand(12, 16, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % 10


@pytest.mark.parametrize("error", [IncompatibleModelsError, InputRangeError, InvalidBudgetError, UnknownAttackError])
def test_errors_are_complexity_tracker_value_errors(error):
    assert issubclass(error, ComplexityTrackerError) and issubclass(error, ValueError)


def test_models_with_different_class_counts():
    with pytest.raises(IncompatibleModelsError, match=r"same classes.*ten: 10, five: 5"):
        transfer_matrix([classifier(10), classifier(5)], ["ten", "five"], X, Y)
    with pytest.raises(IncompatibleModelsError, match="class counts"):
        compare_models({"ten": classifier(10), "five": classifier(5)}, X, Y)


def test_autoattack_needs_four_classes():
    with pytest.raises(IncompatibleModelsError, match="autoattack needs at least 4 classes.*has 3: use pgd_linf"):
        run_attack(classifier(3), X, Y % 3, "autoattack", 0.1)


def test_labels_beyond_the_models_classes():
    with pytest.raises(IncompatibleModelsError, match=r"labels range over \[0, 9\] but the models have 5 classes"):
        evaluate_robustness(classifier(5), X, Y)


@pytest.mark.parametrize("inputs, message", [
    (X * 255, r"inputs must lie in \[0, 1\] \(got min .*, max .*\).*normalisation .* inside the model"),
    (X - 0.5, r"inputs must lie in \[0, 1\]"),
    (torch.where(X > 0.5, float("nan"), X), "NaN or inf"),
])
def test_inputs_outside_unit_interval(inputs, message):
    with pytest.raises(InputRangeError, match=message):
        evaluate_robustness(classifier(), inputs, Y)
    with pytest.raises(InputRangeError, match=message):
        run_attack(classifier(), inputs, Y, "pgd_linf", 0.1)


def test_unknown_attack_names():
    with pytest.raises(UnknownAttackError, match=r"unknown attack 'pgd'; choose from fgsm, pgd_linf, pgd_l2, autoattack"):
        RobustnessConfig(attacks=("pgd",))
    with pytest.raises(UnknownAttackError, match="unknown attack 'cw'; choose from deepfool, fab_l2"):
        RobustnessConfig(min_norm_attacks=("cw",))
    with pytest.raises(UnknownAttackError, match="unknown attack 'square'"):
        run_attack(classifier(), X, Y, "square", 0.1)


@pytest.mark.parametrize("changes, message", [
    ({"linf_eps": (0.1, 0.0)}, r"linf_eps must be a finite number > 0, got 0\.0"),
    ({"l2_eps": (-1.0,)}, r"l2_eps must be a finite number > 0, got -1\.0"),
    ({"linf_eps": (8,)}, r"linf_eps=8 exceeds 1.*8/255"),
    ({"transfer_eps": float("nan")}, "transfer_eps must be a finite number > 0"),
    ({"autoattack_eps": 0}, "autoattack_eps must be a finite number > 0"),
    ({"pgd_steps": 0}, "pgd_steps must be an integer >= 1"),
    ({"n_samples": 0}, r"n_samples must be an integer >= 1 or None"),
])
def test_invalid_budgets(changes, message):
    with pytest.raises(InvalidBudgetError, match=message):
        RobustnessConfig(**changes)


def test_non_positive_epsilon_in_a_direct_attack():
    with pytest.raises(InvalidBudgetError, match="epsilon must be a finite number > 0, got -0.1"):
        run_attack(classifier(), X, Y, "fgsm", -0.1)
    with pytest.raises(InvalidBudgetError, match="epsilon must be a finite number > 0, got None"):
        run_attack(classifier(), X, Y, "pgd_l2")


def test_labels_must_match_inputs():
    with pytest.raises(InputRangeError, match="one label per input"):
        evaluate_robustness(classifier(), X, Y[:5])
    with pytest.raises(InputRangeError, match="integer"):
        evaluate_robustness(classifier(), X, Y.float())


def test_evaluate_refuses_the_old_kernel_width_flag_naming_the_new_one(capsys):
    from complexity_tracker.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoints", "a.pt", "--kde-lam", "0.02"])
    assert exit_info.value.code == 2
    assert "--kde-lam was renamed --kernel-width: use --kernel-width 0.02" in capsys.readouterr().err


def test_unknown_grid_names_the_choices():
    with pytest.raises(InvalidBudgetError, match="unknown grid 'huge'; choose from quick, full"):
        RobustnessConfig.grid("huge")
    assert RobustnessConfig.grid("quick", n_samples=10).min_norm_attacks == ("fab_l2",)
    assert RobustnessConfig.grid("full") == RobustnessConfig()
