"""End to end: a real `complexity-tracker study run`, then `evaluate --study` on its trials."""

from __future__ import annotations

import optuna
from mlflow.tracking import MlflowClient

from complexity_tracker.cli.main import main
from test_robustness import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

STUDY = """
[study]
name = "robustness-e2e"
objective = "test_loss"
direction = "minimize"
n_trials = 3
sampler = { name = "grid" }

[run]
model = "mlp"
width = 16
depth = 2
dataset = "digits"
n_train = 400
n_test = 200
epochs = 2
lr = 0.1
loss_method = "marginal"
probe_per_class = 10

[search]
log10_lam = [-4.0, -3.0, -2.0]
"""


def test_evaluate_the_trials_of_a_study_run(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_text(STUDY)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["study", "run", str(config), "--storage", storage, "--tracking-uri", tracking, "--no-progress",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="robustness-e2e", storage=storage)
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert main(["evaluate", "--study", "robustness-e2e", "--storage", storage, "--tracking-uri", tracking,
                 "--top-k", "2", "--n-samples", "40", "--attacks", "pgd_linf", "--linf-eps", "0.1",
                 "--pgd-steps", "5", "--min-norm-attacks", "deepfool", "--probe-per-class", "10"]) == 0
    out = capsys.readouterr().out
    assert f"comparison on run {parent}" in out
    best = sorted(study.trials, key=lambda t: t.value)[:2]
    assert all(f"trial-{t.number}" in out for t in best)
    client = MlflowClient(tracking)
    for trial in study.trials:
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert ("robustness/clean_acc" in metrics) == (trial in best)
    assert "robustness/transfer_asymmetry" in client.get_run(parent).data.metrics
