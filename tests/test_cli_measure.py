"""``complexity-tracker measure`` on real checkpoints."""

from __future__ import annotations

import json
import math

import pytest

from complexity_tracker.cli.main import main
from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.models import build_model
from complexity_tracker.training import save_checkpoint, seed_everything, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = RunConfig(model="mlp", depth=2, width=16, epochs=1, probe_per_class=20)
    seed_everything(config.seed)
    data = load_data(config)
    model = train(build_model(config, data.input_shape, data.n_classes), data, config, progress=False).model
    path = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    save_checkpoint(path, model, config)
    return str(path)


def test_measure_prints_a_table_per_layer_and_network(checkpoint, capsys):
    assert main(["measure", checkpoint, "--per-class", "30"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()[1:]
    assert header.split() == ["layer", "d", "N", "H", "I_XS", "I_XSY", "C", "TC"]
    assert [row.split()[0] for row in rows] == ["net.2", "net.4", "network"]
    assert all(row.split()[2] == "300" for row in rows)


def test_measure_json_matches_the_api_values(checkpoint, capsys):
    assert main(["measure", checkpoint, "--per-class", "30", "--estimator", "plugin", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert layers[-1]["name"] == "network"
    for record in layers:
        assert record["estimator"] == "plugin"
        assert math.isclose(record["H"] + record["TC"] - record["C"], record["additivity_gap"], abs_tol=1e-9)


def test_measure_reports_a_missing_checkpoint_cleanly(tmp_path, capsys):
    assert main(["measure", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
