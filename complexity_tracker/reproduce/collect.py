"""Read a finished study back: per trial its parameters, run config, MLflow run and per-epoch history."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ..config import RunConfig
from ..studies import StudyConfig
from ..studies.mlflow_runs import RUN_ID_ATTR

#: The tracker's per-epoch history artifact (every complexity value of every measured epoch).
HISTORY_ARTIFACT = "complexity/history.json"


@dataclass
class TrialRecord:
    """One COMPLETE trial: ``history`` rows hold ``epoch``, training metrics and, on measured
    epochs, every ``"<metric>/<layer>"`` complexity value (bits)."""

    number: int
    params: dict[str, Any]
    config: RunConfig
    run_id: str
    history: list[dict[str, float]]

    @property
    def final(self) -> dict[str, float]:
        """The last measured epoch's row."""
        return next(row for row in reversed(self.history) if "H/network" in row)

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of ``key`` over the epochs where it was logged."""
        rows = [row for row in self.history if key in row and math.isfinite(row[key])]
        return np.array([int(row["epoch"]) for row in rows]), np.array([row[key] for row in rows])

    def layers(self) -> list[str]:
        """Gating layer names (without ``network``), in logging order."""
        return [key[2:] for key in self.final if key.startswith("H/") and key != "H/network"]


def collect_trials(study: optuna.Study, config: StudyConfig, tracking_uri: str) -> list[TrialRecord]:
    """Every COMPLETE trial with an MLflow run, in trial order, its history read from the run."""
    client = MlflowClient(tracking_uri)
    records = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            history = json.loads(Path(client.download_artifacts(run_id, HISTORY_ARTIFACT, tmp)).read_text())
        records.append(TrialRecord(trial.number, dict(trial.params), config.run_config(trial.params), run_id, history))
    return sorted(records, key=lambda r: r.number)
