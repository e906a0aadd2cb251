"""Figures read at a glance: lambda = 0 apart from the log10 axis, TC in its own panel, importances
that include log10_lam, labelled colour bars (the structure is checked; PNGs go to test-output/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from complexity_tracker import plots
from complexity_tracker.studies.config import LAM_IS_ZERO, LOG10_LAM, load_study_config
from complexity_tracker.studies.report import param_importances

REPO = Path(__file__).resolve().parent.parent


def test_lambda_zero_is_a_labelled_point_outside_the_log_axis(test_output_dir):
    points = [(None, {"test_loss": 0.12}), (None, {"test_loss": 0.14}), (-5.0, {"test_loss": 0.13}),
              (-3.0, {"test_loss": 0.2}), (-1.0, {"test_loss": 0.9})]
    figure = plots.plot_lambda_sweep(points, {"test_loss": "test loss (nats)"})
    figure.savefig(test_output_dir / "lambda_sweep.png")
    logs, zero = figure.axes
    assert [t.get_text() for t in zero.get_xticklabels()] == ["λ = 0"]
    assert zero.collections[0].get_offsets()[:, 1].tolist() == [0.12, 0.14]
    assert sorted(logs.collections[0].get_offsets()[:, 0].tolist()) == [-5.0, -3.0, -1.0]
    assert logs.get_xlim()[1] < 0  # the log10 axis shows only the lambdas tried: no "0" tick on it
    assert logs.get_xlabel() == "log10 lambda" and zero.get_ylabel() == "test loss (nats)"
    assert len(plots.plot_lambda_sweep(points[2:], {"test_loss": "loss"}).axes) == 1  # no lambda = 0: one axis


def test_tc_has_its_own_panel(test_output_dir):
    rows = [{"epoch": e, "layer": "net.1", "H": 8 - 0.1 * e, "I_XSY": 3 - 0.1 * e, "TC": 50 + e, "d": 64, "N": 500}
            for e in range(5)]
    figure = plots.plot_layer_complexity(rows, "net.1")
    figure.savefig(test_output_dir / "layer_complexity.png")
    top, bottom = figure.axes
    assert [line.get_label() for line in top.lines] == ["H(S)", "I(X;S;Y)"]
    assert [line.get_label() for line in bottom.lines] == ["TC(S)"]
    assert top.get_ylabel() == bottom.get_ylabel() == "bits" and bottom.get_xlabel() == "epoch"


def test_heatmap_colour_bar_is_labelled():
    figure = plots.plot_heatmap(np.ones((2, 3)), [1, 2], [1, 2, 3], title="t", row_name="depth",
                                column_name="n", value_name="H(S) (bits)")
    assert figure.axes[-1].get_ylabel() == "H(S) (bits)"


def test_importances_include_log10_lam_with_lambda_zero_trials():
    config = load_study_config(REPO / "studies" / "quickstart.toml")
    study = optuna.create_study(direction="minimize")
    rng = np.random.default_rng(0)
    lam = FloatDistribution(-5.0, -1.0)
    switch, depth = CategoricalDistribution([False, True]), IntDistribution(2, 4)
    for number in range(24):
        zero = number % 4 == 0
        depth_value = 2 + number % 3
        params = {LAM_IS_ZERO: zero, "depth": depth_value}
        distributions = {LAM_IS_ZERO: switch, "depth": depth}
        log10_lam = -5.0 if zero else float(rng.uniform(-5, -1))
        if not zero:
            params[LOG10_LAM] = log10_lam
            distributions[LOG10_LAM] = lam
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=(log10_lam + 5) ** 2 + 0.01 * depth_value))
    importances = param_importances(study, study.trials, config)["test_loss"]
    assert LOG10_LAM in importances and LAM_IS_ZERO not in importances
    assert importances[LOG10_LAM] > 0.5 > importances["depth"]
