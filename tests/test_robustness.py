"""Robustness evaluation with real torchattacks on tiny digits models trained in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import permutation_test, spearmanr
from sklearn.datasets import load_digits
from torch import nn

from complexity_tracker.robustness import (
    RobustnessConfig,
    TransferMatrix,
    compare_models,
    complexity_robustness_correlations,
    evaluate_robustness,
    minimal_l2_perturbation,
    run_attack,
    transfer_matrix,
)
from complexity_tracker.robustness.attacks import predict
from complexity_tracker.robustness.correlation import spearman
from complexity_tracker.robustness.plots import (
    plot_accuracy_vs_epsilon,
    plot_robustness_vs_complexity,
    plot_transfer_matrix,
)
from complexity_tracker.robustness.tables import report


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.data / 16.0, dtype=torch.float32), torch.tensor(data.target)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150, seed: int = 0) -> nn.Module:
    """Full-batch Adam for ``steps`` steps (well under a second for these sizes)."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.reset_parameters()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def mlp(width: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(64 if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def conv_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models attacked sample by sample (DeepFool) run fastest, and steadiest on shared cores, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    x, y = digits()
    return {"x_train": x[:1200], "y_train": y[:1200], "x_test": x[1200:1500], "y_test": y[1200:1500]}


@pytest.fixture(scope="module")
def flat_model(data) -> nn.Module:
    return train_classifier(mlp(32), data["x_train"], data["y_train"])


@pytest.fixture(scope="module")
def image_model(data) -> nn.Module:
    return train_classifier(conv_net(), data["x_train"].reshape(-1, 1, 8, 8), data["y_train"])


FAST = RobustnessConfig(pgd_steps=10, deepfool_steps=30, fab_steps=10, n_samples=120)


# AutoAttack at Linf 0.3 fools every sample with its first sub-attack (APGD-CE), which keeps
# the test fast: the 5000-query Square attack only runs on samples the others left standing.
@pytest.mark.parametrize("attack, eps", [("fgsm", 0.1), ("pgd_linf", 0.1), ("pgd_l2", 0.75), ("autoattack", 0.3)])
@pytest.mark.parametrize("kind", ["flat", "image"])
def test_budgeted_attacks_fool_within_budget(attack, eps, kind, data, flat_model, image_model):
    model = flat_model if kind == "flat" else image_model
    n = 30 if attack == "autoattack" else 100
    x = data["x_test"][:n] if kind == "flat" else data["x_test"][:n].reshape(-1, 1, 8, 8)
    y = data["y_test"][:n]
    adversarial = run_attack(model, x, y, attack, eps, FAST)
    assert adversarial.shape == x.shape
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    delta = (adversarial - x).reshape(len(x), -1)
    norms = delta.abs().amax(dim=1) if attack != "pgd_l2" else delta.norm(dim=1)
    assert norms.max() <= eps + 1e-5
    clean_correct = predict(model, x) == y
    fooled = clean_correct & (predict(model, adversarial) != y)
    assert fooled.float().sum() >= 0.3 * clean_correct.float().sum(), f"{attack} fooled only {int(fooled.sum())}"


@pytest.mark.parametrize("kind", ["flat", "image"])
def test_minimal_perturbation_counts_only_verified_successes(kind, data, flat_model, image_model):
    model = flat_model if kind == "flat" else image_model
    x = data["x_test"][:40] if kind == "flat" else data["x_test"][:40].reshape(-1, 1, 8, 8)
    y = data["y_test"][:40]
    result = minimal_l2_perturbation(model, x, y, config=FAST)
    correct = (predict(model, x) == y).numpy()
    np.testing.assert_array_equal(result.indices, np.flatnonzero(correct))
    assert result.n_success + result.n_failed == result.n_correct == int(correct.sum())
    assert result.n_success >= 0.9 * result.n_correct
    found = result.norms[np.isfinite(result.norms)]
    assert (found > 0).all() and (found <= 8.0).all()  # sqrt(64) bounds any L2 distance in [0, 1]^64
    assert result.median == pytest.approx(np.median(found)) and result.mean == pytest.approx(found.mean())
    # The norm per sample is the smallest any attack found; each attack's own norms are kept.
    np.testing.assert_allclose(result.norms, np.fmin(result.attack_norms["deepfool"], result.attack_norms["fab_l2"]))
    assert set(result.attack_successes) == {"deepfool", "fab_l2"}
    # Re-check DeepFool by hand: its norms are ||adv - x||_2 of re-classified, fooled examples.
    adversarial = run_attack(model, x[result.indices], y[result.indices], "deepfool", config=FAST)
    fooled = (predict(model, adversarial) != y[result.indices]).numpy()
    norms = (adversarial - x[result.indices]).reshape(len(adversarial), -1).norm(dim=1).numpy()
    np.testing.assert_allclose(result.attack_norms["deepfool"][fooled], norms[fooled], rtol=1e-5)
    assert np.isnan(result.attack_norms["deepfool"][~fooled]).all()


def test_failures_are_counted_not_averaged_as_zero(data):
    constant = nn.Sequential(nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 10))
    with torch.no_grad():
        for param in constant.parameters():
            param.zero_()
        constant[2].bias[3] = 1.0  # always predicts class 3, whatever the input
    x = data["x_test"][:20]
    y = torch.full((20,), 3)
    result = minimal_l2_perturbation(constant, x, y, config=FAST)
    assert result.n_correct == 20 and result.n_success == 0 and result.n_failed == 20
    assert math.isnan(result.median) and math.isnan(result.mean)
    assert result.attack_successes == {"deepfool": 0, "fab_l2": 0}


def test_evaluation_leaves_rng_mode_and_gradients_as_found(data, flat_model):
    flat_model.train()
    flat_model[1].eval()  # a mixed state must come back exactly
    requires = [p.requires_grad for p in flat_model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in flat_model.parameters()]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    config = FAST.replace(attacks=("pgd_linf", "autoattack"), linf_eps=(0.1,), autoattack_eps=0.3,
                          min_norm_attacks=("fab_l2",), n_samples=20)
    evaluate_robustness(flat_model, data["x_test"], data["y_test"], config)
    assert torch.equal(torch.get_rng_state(), state)
    assert flat_model.training and not flat_model[1].training and flat_model[0].training
    assert [p.requires_grad for p in flat_model.parameters()] == requires
    for before, param in zip(grads, flat_model.parameters()):
        assert (param.grad is None) if before is None else torch.equal(param.grad, before)
    flat_model.eval()


def test_seeded_evaluation_is_reproducible(data, flat_model):
    config = FAST.replace(attacks=("pgd_linf", "pgd_l2"), linf_eps=(0.05,), l2_eps=(0.5,), n_samples=60)
    first = evaluate_robustness(flat_model, data["x_test"], data["y_test"], config).measures()
    second = evaluate_robustness(flat_model, data["x_test"], data["y_test"], config).measures()
    assert first == second
    assert first["clean_acc"] >= first["robust_acc/pgd_linf/0.05"]


def test_robust_accuracy_falls_with_epsilon(data, flat_model):
    config = FAST.replace(attacks=("pgd_linf",), min_norm_attacks=(), linf_eps=(0.02, 0.1, 0.3))
    curve = evaluate_robustness(flat_model, data["x_test"], data["y_test"], config).robust_accuracy["pgd_linf"]
    assert curve[0.02] >= curve[0.1] >= curve[0.3]
    assert curve[0.3] < 0.05  # Linf 0.3 on 8x8 digits breaks an undefended MLP


def test_transfer_matrix_diagonal_is_white_box_rate(data, flat_model, image_model):
    flat_other = train_classifier(mlp(16, depth=1), data["x_train"], data["y_train"], seed=1)
    x, y = data["x_test"][:100], data["y_test"][:100]
    config = FAST.replace(transfer_eps=0.1)
    matrix = transfer_matrix([flat_other, flat_model], ["small", "medium"], x, y, config)
    assert matrix.rates.shape == (2, 2) and matrix.names == ["small", "medium"]
    for i, model in enumerate([flat_other, flat_model]):
        correct = predict(model, x) == y
        adversarial = run_attack(model, x, y, "pgd_linf", 0.1, config)
        white_box = (predict(model, adversarial[correct]) != y[correct]).float().mean()
        assert matrix.rates[i, i] == pytest.approx(float(white_box))
        assert matrix.counts[i, i] == int(correct.sum())
    both = (predict(flat_other, x) == y) & (predict(flat_model, x) == y)
    assert matrix.counts[0, 1] == matrix.counts[1, 0] == int(both.sum())
    assert 0 < matrix.rates[0, 1] < 1 and 0 < matrix.rates[1, 0] < 1


def test_transfer_asymmetry_uses_triangles():
    rates = np.array([[0.9, 0.6, 0.5], [0.2, 0.8, 0.4], [0.1, 0.3, 0.7]])
    matrix = TransferMatrix(["a", "b", "c"], rates, np.ones((3, 3), dtype=int), "pgd_linf", 0.1)
    assert matrix.simple_to_complex == pytest.approx(0.5)
    assert matrix.complex_to_simple == pytest.approx(0.2)
    assert matrix.asymmetry == pytest.approx(0.3)
    assert matrix.outgoing(0) == pytest.approx(0.55) and matrix.incoming(0) == pytest.approx(0.15)


@pytest.mark.parametrize("n", [4, 6, 8])
def test_small_n_p_values_are_exact_permutation_p_values(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = np.round(x + rng.normal(size=n), 1)
    y[1] = y[0]  # a tie
    rho, p_value, count = spearman(x, y)
    reference = permutation_test((y,), lambda yy: spearmanr(x, yy).statistic, permutation_type="pairings",
                                 n_resamples=np.inf)
    assert count == n and rho == pytest.approx(reference.statistic)
    assert p_value == pytest.approx(reference.pvalue)
    # a perfect rank correlation of 4 models: 2 of the 24 orderings are as extreme, never p = 0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40])[1] == pytest.approx(2 / 24)


def test_spearman_reports_rho_p_and_n():
    rho, p_value, n = spearman([1, 2, 3, 4], [1, 3, 2, 4])
    assert rho == pytest.approx(0.8) and n == 4 and 0 < p_value < 1
    assert spearman([1, 2, float("nan"), 4, 5], [5, 4, 3, 2, 1])[::2] == (-1.0, 4)
    constant = spearman([1, 2, 3], [1, 1, 1])
    assert math.isnan(constant[0]) and math.isnan(constant[1]) and constant[2] == 3
    correlations = complexity_robustness_correlations(
        [{"H/network": 1.0, "H/l1": 1.0}, {"H/network": 2.0}, {"H/network": 3.0, "H/l1": 2.0}],
        [{"clean_acc": 0.5}, {"clean_acc": 0.6}, {"clean_acc": 0.7}],
    )
    by_key = {(c.complexity, c.measure): c for c in correlations}
    assert by_key["H/network", "clean_acc"].rho == pytest.approx(1.0) and by_key["H/network", "clean_acc"].n == 3
    assert by_key["H/l1", "clean_acc"].n == 2 and math.isnan(by_key["H/l1", "clean_acc"].rho)


def test_compare_models_orders_by_complexity_and_reports(data, flat_model):
    models = {
        "wide": train_classifier(mlp(96), data["x_train"], data["y_train"], seed=2),
        "narrow": train_classifier(mlp(6), data["x_train"], data["y_train"], seed=3),
        "medium": flat_model,
    }
    config = FAST.replace(attacks=("fgsm", "pgd_linf"), linf_eps=(0.05, 0.1), min_norm_attacks=("deepfool",),
                          n_samples=50)
    state = torch.get_rng_state()
    result = compare_models(models, data["x_test"], data["y_test"], config, probe_per_class=10)
    assert torch.equal(torch.get_rng_state(), state)
    values = [m.complexity["H/network"] for m in result.models]
    assert values == sorted(values)
    assert result.transfer is not None and result.transfer.names == [m.name for m in result.models]
    measures = result.models[0].measures()
    assert {"clean_acc", "min_l2_median", "transfer_out", "transfer_in", "robust_acc/fgsm/0.05"} <= set(measures)
    network = [c for c in result.correlations if c.complexity == "H/network" and c.measure == "min_l2_median"]
    assert len(network) == 1 and network[0].n == 3
    layer_keys = {c.complexity for c in result.correlations}
    assert {"H/1", "H/3", "I_XSY/network"} <= layer_keys  # per ReLU module path and network
    text = report(result)
    for name in models:
        assert name in text
    assert "spearman rho" in text and "asymmetry" in text
    scatter = plot_robustness_vs_complexity(result)
    panels = [ax for ax in scatter.axes if ax.get_visible()]
    assert all(ax.get_xlabel() == "H/network (bits)" and "(" in ax.get_ylabel() for ax in panels)
    assert not any(ax.texts for ax in panels)  # models are named in one legend, not next to points
    assert [t.get_text().split(" (")[0] for t in scatter.legends[0].get_texts()] == [m.name for m in result.models]
    curves = plot_accuracy_vs_epsilon(result)
    assert curves.axes[-1].get_ylabel() == "H/network (bits)"  # the colour bar
    assert curves.axes[0].get_xlabel() == "epsilon (Linf, input units)"
    assert plot_transfer_matrix(result).axes[-1].get_ylabel() == "fooling rate (fraction)"
