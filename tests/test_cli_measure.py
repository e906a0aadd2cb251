"""``complexity-tracker measure`` on real checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

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
    assert header.split() == ["layer", "d", "N", "H", "I_XS", "I_XSY", "C", "TC", "additivity_gap"]
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


def test_train_save_writes_a_checkpoint_that_measure_reads(in_tmp_cwd, capsys):
    path = in_tmp_cwd / "trained.pt"
    assert main(["train", "--depth", "2", "--width", "16", "--epochs", "1", "--probe-per-class", "20",
                 "--quiet", "--no-log-model", "--save", str(path)]) == 0
    trained = capsys.readouterr().out
    assert f"checkpoint: {path}" in trained
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["depth"] == 2 and payload["config"]["width"] == 16
    assert main(["measure", str(path), "--per-class", "20", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [record["name"] for record in layers] == ["net.2", "net.4", "network"]
    assert [record["d"] for record in layers] == [16, 16, 32]


def test_a_checkpoint_whose_weights_do_not_fit_its_architecture_is_one_line(checkpoint, tmp_path, capsys):
    payload = torch.load(checkpoint, weights_only=True)
    payload["config"]["width"] = 32
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    assert main(["measure", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "do not fit the mlp of depth 2, width 32" in err
    assert "net.1.weight has shape (16, 64) where the model has (32, 64)" in err


def test_a_plain_state_dict_gets_told_how_to_write_a_checkpoint(checkpoint, tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save(torch.load(checkpoint, weights_only=True)["state_dict"], path)
    assert main(["measure", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is a plain state_dict" in err and "complexity-tracker train --save PATH" in err
    assert "save_checkpoint(path, model, config)" in err


def test_the_kernel_width_flag_reaches_the_estimator_and_the_old_name_is_refused(checkpoint, capsys):
    assert main(["measure", checkpoint, "--per-class", "20", "--kernel-width", "0.05", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert all(record["estimator_params"]["kernel_width"] == 0.05 for record in layers)
    with pytest.raises(SystemExit) as exit_info:
        main(["measure", checkpoint, "--lam", "0.05"])
    assert exit_info.value.code == 2
    assert "--lam was renamed --kernel-width: use --kernel-width 0.05" in capsys.readouterr().err


def test_the_tc_method_flag_chooses_the_total_correlation_estimator(checkpoint, capsys):
    """With plug-in H and plug-in TC the additivity gap H + TC - C closes; with kde TC it need not."""
    args = ["measure", checkpoint, "--per-class", "5", "--estimator", "plugin", "--layers", "net.4", "--json"]
    assert main([*args, "--tc-method", "plugin"]) == 0
    plugin = json.loads(capsys.readouterr().out)["layers"]
    assert main([*args, "--tc-method", "kde"]) == 0
    kde = json.loads(capsys.readouterr().out)["layers"]
    assert [r["estimator_params"]["tc_method"] for r in plugin + kde] == ["plugin"] * len(plugin) + ["kde"] * len(kde)
    assert all(abs(r["additivity_gap"]) < 1e-9 for r in plugin)
    assert any(abs(r["additivity_gap"]) > 1e-3 for r in kde)


def test_the_tc_method_names_of_the_config_are_the_estimators():
    from complexity_tracker.config import TC_METHOD_NAMES
    from complexity_tracker.estimators import TC_METHODS

    assert sorted(TC_METHOD_NAMES) == sorted(TC_METHODS)
    with pytest.raises(Exception, match="tc_method"):
        RunConfig(tc_method="ksg")
