"""Study configs, storage URLs and the slot queue (no training: fast)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
import pytest

from complexity_tracker.errors import ComplexityTrackerError
from complexity_tracker.studies import budget
from complexity_tracker.studies.config import LAM_IS_ZERO, StudyConfigError, load_study_config, parse_study_config
from complexity_tracker.studies.factory import join_study, make_pruner, make_sampler, open_study
from complexity_tracker.studies.objective import suggest_params
from complexity_tracker.studies.storage import (
    DEFAULT_JOURNAL_URL,
    DEFAULT_SQLITE_URL,
    check_workers_supported,
    create_storage,
    redact_url,
    resolve_storage_url,
    storage_kind,
)

STUDIES = Path(__file__).resolve().parent.parent / "studies"
RUN = {"dataset": "digits", "epochs": 3, "loss_method": "marginal"}


def document(study: dict | None = None, search: dict | None = None, run: dict | None = None) -> dict:
    study = dict(study or {})
    if study.get("sampler") != "grid":
        study.setdefault("n_trials", 4)  # a grid's budget is its size
    return {
        "study": {"name": "s", **study},
        "run": run if run is not None else dict(RUN),
        "search": search if search is not None else {"depth": [1, 2]},
    }


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_study_config(path)
    assert config.study.n_trials >= 1
    assert config.base_run_config().epochs >= 1


def test_shipped_studies_cover_the_issue() -> None:
    lambda_depth = load_study_config(STUDIES / "lambda_depth.toml")
    assert lambda_depth.study.objectives == ("test_loss", "loss_gap")
    assert {p.name for p in lambda_depth.search} >= {"log10_lam", "depth"}
    ceiling = load_study_config(STUDIES / "ceiling.toml")
    assert ceiling.study.sampler == "grid" and ceiling.base_run_config().dataset == "synthetic"
    assert ceiling.study.n_trials == len(ceiling.grid()) == math.prod(len(p.choices) for p in ceiling.search)
    gap = load_study_config(STUDIES / "gap.toml")
    assert gap.searched("log10_lam") and not gap.searched("depth")
    assert any(cell["log10_lam"] is None for cell in gap.grid())  # lam = 0 is in the sweep


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study": {"n_trials": 0}}, "n_trials must be an integer >= 1"),
        ({"study": {"objective": "accuracy"}}, "objective 'accuracy' is not one of"),
        ({"study": {"objectives": ["test_loss", "loss_gap"], "directions": ["minimize"]}}, "directions has 1"),
        ({"study": {"direction": "up"}}, "direction 'up' is not one of"),
        ({"study": {"sampler": "cma"}}, "sampler 'cma' is not one of"),
        ({"study": {"objectives": ["test_loss", "loss_gap"], "pruner": "median"}}, "pruner works with one objective"),
        ({"study": {"objective": "H/network", "pruner": "median"}}, "pruner needs an objective measured every epoch"),
        ({"study": {"colour": "red"}}, "unknown field(s) ['colour']"),
        ({"search": {"lam": [0.1]}}, "search.lam: 'lam' cannot be searched"),
        ({"search": {"depth": [0, 2]}}, "search.depth: value 0 gives an invalid run"),
        ({"search": {"depth": {"low": 1.5, "high": 3}}}, "search.depth is an integer setting"),
        ({"search": {"lr": {"low": 0.1, "high": 0.01}}}, "search.lr: low=0.1 must be below high=0.01"),
        ({"search": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "log = true needs low > 0"),
        ({"search": {"depth": [1, 2], "width": {"choices": [8], "low": 1}}}, "either choices"),
        ({"search": {"depth": {"choices": [1], "include_zero": True}}}, "include_zero only applies to log10_lam"),
        ({"search": {"log10_lam": [-3.0]}, "run": {"dataset": "digits"}}, "log10_lam needs a complexity loss"),
        ({"search": {}}, "[search] is empty"),
        ({"run": {"epochs": 0}}, "[run]: epochs must be an integer >= 1"),
        ({"study": {"sampler": "grid", "n_trials": 3}}, "n_trials=3 but the grid has 2 cells"),
        ({"study": {"sampler": {"name": "tpe", "n_startup": 3}}}, "bad option"),
    ],
)
def test_bad_configs_name_the_field(change: dict, message: str) -> None:
    values = document(
        {**change.get("study", {})},
        change.get("search"),
        {**RUN, **change["run"]} if "run" in change and "dataset" not in change["run"] else change.get("run"),
    )
    with pytest.raises(StudyConfigError) as error:
        config = parse_study_config(values)
        make_sampler(config)  # sampler options are checked when the sampler is built
    assert message in str(error.value)
    assert isinstance(error.value, (ComplexityTrackerError, ValueError))


def test_unreadable_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StudyConfigError, match="does not exist"):
        load_study_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[study\nname = 1")
    with pytest.raises(StudyConfigError, match="not valid TOML"):
        load_study_config(broken)


def test_run_config_of_a_trial_switches_the_loss_off_at_lam_zero() -> None:
    config = parse_study_config(document(search={"log10_lam": {"low": -4.0, "high": -2.0, "include_zero": True}}))
    assert config.run_config({LAM_IS_ZERO: True}).lam == 0.0
    assert config.run_config({LAM_IS_ZERO: True}).loss_method == "none"
    run = config.run_config({LAM_IS_ZERO: False, "log10_lam": -3.0})
    assert run.lam == pytest.approx(1e-3) and run.loss_method == "marginal"


def test_grid_with_zero_lambda_and_n_trials_override() -> None:
    config = parse_study_config(document(
        {"sampler": "grid"}, {"log10_lam": {"choices": [-3.0, -2.0], "include_zero": True}, "seed": [0, 1]},
    ))
    cells = config.grid()
    assert config.study.n_trials == len(cells) == 6
    assert {(c["log10_lam"], c["seed"]) for c in cells} == {(lam, s) for lam in (None, -3.0, -2.0) for s in (0, 1)}
    with pytest.raises(StudyConfigError, match="grid .* has 6 cells"):
        config.with_n_trials(7)
    sampled = parse_study_config(document())
    assert sampled.with_n_trials(9).study.n_trials == 9


def test_zero_lambda_baselines_come_first_then_lam_is_pinned_positive() -> None:
    config = parse_study_config(document(
        {"n_trials": 12}, {"log10_lam": {"low": -4.0, "high": -2.0, "include_zero": True}, "depth": [1, 2, 3]},
    ))
    cells = budget.sampled_cells(config)
    assert cells[:3] == [{LAM_IS_ZERO: True, "depth": d} for d in (1, 2, 3)]
    assert cells[3:] == [{LAM_IS_ZERO: False}] * 9
    small = config.with_n_trials(4)
    assert budget.sampled_cells(small) == [{LAM_IS_ZERO: True}] + [{LAM_IS_ZERO: False}] * 3


def test_suggested_params_follow_the_space() -> None:
    config = parse_study_config(document(search={
        "log10_lam": {"low": -4.0, "high": -2.0, "include_zero": True},
        "width": {"low": 8, "high": 64, "log": True},
        "lr": {"low": 0.01, "high": 0.1},
        "optimizer": ["sgd", "adam"],
    }))
    study = optuna.create_study(sampler=make_sampler(config))
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial, config.search)
        assert 8 <= params["width"] <= 64 and isinstance(params["width"], int)
        assert params["optimizer"] in ("sgd", "adam")
        assert params[LAM_IS_ZERO] or -4.0 <= params["log10_lam"] <= -2.0
        config.run_config(params)  # every suggestion is a valid run
        study.tell(trial, 1.0)


def test_pruner_gets_epochs_as_hyperband_resource() -> None:
    config = parse_study_config(document({"pruner": "hyperband"}))
    assert isinstance(make_pruner(config), optuna.pruners.HyperbandPruner)
    assert make_pruner(config)._max_resource == RUN["epochs"]


def test_storage_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse_study_config(document()).study
    monkeypatch.delenv("COMPLEXITY_TRACKER_STORAGE", raising=False)
    assert resolve_storage_url(None, settings, workers=1) == DEFAULT_SQLITE_URL
    assert resolve_storage_url(None, settings, workers=2) == DEFAULT_JOURNAL_URL
    monkeypatch.setenv("COMPLEXITY_TRACKER_STORAGE", "postgresql://u@h/db")
    assert resolve_storage_url(None, settings, workers=1) == "postgresql://u@h/db"
    assert resolve_storage_url("sqlite:///x.db", settings, workers=1) == "sqlite:///x.db"
    assert [storage_kind(u) for u in ("journal:a.journal", "b.journal", "sqlite:///c.db", "postgresql://h/d")] == [
        "journal", "journal", "sqlite", "postgresql"]
    assert redact_url("postgresql://user:secret@host:5432/db") == "postgresql://user:***@host:5432/db"
    with pytest.raises(StudyConfigError, match="not safe for 2 worker processes"):
        check_workers_supported("sqlite:///x.db", 2)
    with pytest.raises(StudyConfigError, match="not a storage URL"):
        storage_kind("optuna.db")


def test_slots_are_enqueued_once_and_never_run_twice(tmp_path: Path) -> None:
    """Two 'workers' opening the same study: one enqueues, both take distinct grid cells from the queue."""
    config = parse_study_config(document({"sampler": "grid"}, {"depth": [1, 2], "width": [8, 16]}))
    url = f"journal:{tmp_path / 'q.journal'}"
    first, created_first = open_study(config, create_storage(url, config.study))
    second, created_second = open_study(config, create_storage(url, config.study))
    assert (created_first, created_second) == (True, False)
    assert budget.remaining(first) == (4, 0)
    taken = []
    for study in (first, second, first, second):
        trial = study.ask()
        assert not budget.is_surplus(study.get_trials()[trial.number], study.get_trials())
        taken.append((suggest_params(trial, config.search)["depth"], trial.params["width"]))
        study.tell(trial, 0.0)
    assert sorted(taken) == [(1, 8), (1, 16), (2, 8), (2, 16)]
    extra = first.ask()  # the queue is empty: a sampled trial is surplus
    assert budget.is_surplus(first.get_trials()[extra.number], first.get_trials())
    assert budget.remaining(first) == (0, 0)  # a surplus trial does not hold a slot


def test_reopening_with_fewer_trials_or_other_directions_fails(tmp_path: Path) -> None:
    config = parse_study_config(document())
    url = f"sqlite:///{tmp_path / 'o.db'}"
    open_study(config, create_storage(url, config.study))
    grown, _ = open_study(config.with_n_trials(6), create_storage(url, config.study))
    assert budget.n_slots(grown) == 6 and budget.remaining(grown) == (6, 0)
    with pytest.raises(StudyConfigError, match="n_trials can only grow"):
        open_study(config, create_storage(url, config.study))
    maximise = parse_study_config(document({"n_trials": 6, "direction": "maximize"}))
    with pytest.raises(StudyConfigError, match="exists with directions"):
        open_study(maximise, create_storage(url, config.study))


def test_a_helper_joins_only_a_study_the_launcher_has_created_and_grown(tmp_path: Path) -> None:
    config = parse_study_config(document())
    url = f"journal:{tmp_path / 'j.journal'}"
    with pytest.raises(StudyConfigError, match="did not appear"):
        join_study(config, create_storage(url, config.study), wait_s=0.3)  # nothing created yet
    assert join_study(config, create_storage(url, config.study), stop=lambda: True) is None  # told to stop
    open_study(config, create_storage(url, config.study))
    joined = join_study(config, create_storage(url, config.study), wait_s=0.3)
    assert joined is not None and budget.n_slots(joined) == config.study.n_trials
    grown = config.with_n_trials(config.study.n_trials + 2)
    with pytest.raises(StudyConfigError, match="did not appear"):
        join_study(grown, create_storage(url, config.study), wait_s=0.3)  # the launcher grows it, not a helper
    assert budget.n_slots(joined) == config.study.n_trials


def test_cli_reports_bad_configs_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from complexity_tracker.cli.main import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "b"\nn_trials = 2\n[run]\ndataset = "digits"\n[search]\ndepth = [1, "two"]\n')
    assert main(["study", "run", str(bad)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "search.depth: value 'two'" in error
    good = tmp_path / "good.toml"
    good.write_text('[study]\nname = "g"\nn_trials = 2\n[run]\ndataset = "digits"\n[search]\ndepth = [1, 2]\n')
    assert main(["study", "run", str(good), "--workers", "2", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "not safe for 2 worker processes" in capsys.readouterr().err
    assert main(["study", "status", str(good), "--storage", f"sqlite:///{tmp_path / 'y.db'}"]) == 2
    assert "no study named 'g'" in capsys.readouterr().err


def test_failed_slots_are_retried_with_fresh_attributes_until_max_retry_faults(tmp_path: Path) -> None:
    """Interruptions are always retried; faults (a lost tracking server, a dead worker) at most
    max_retry times, then the slot is given up; a diverged training settles its slot."""
    config = parse_study_config(document({"n_trials": 2, "max_retry": 1}))
    study, _ = open_study(config, create_storage(f"sqlite:///{tmp_path / 'r.db'}", config.study))

    def fail_next(**attrs: object) -> optuna.trial.FrozenTrial:
        trial = study.ask()
        for key, value in {"worker": "host:1", "mlflow_run_id": f"run-{trial.number}", **attrs}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return study.trials[trial.number]

    first = fail_next(interrupted=True)  # slot 0
    fail_next(diverged="loss is NaN")  # slot 1: settled, never retried
    assert [t.number for t in budget.requeue_unsettled(study, max_retry=1)] == [first.number]
    retry = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    assert retry.user_attrs == {budget.SLOT_ATTR: 0} and budget.retry_history(retry) == [first.number]
    assert retry.params == first.params
    second = fail_next(fault="tracking server down")  # the retry: fault 1 of 1 allowed
    assert budget.requeue_unsettled(study, max_retry=1) == [study.trials[second.number]]
    third = fail_next(fault="tracking server down")  # fault 2: no retry left
    assert budget.requeue_unsettled(study, max_retry=1) == []
    to_retry, given_up = budget.unsettled(study, max_retry=1)
    assert to_retry == [] and [t.number for t in given_up] == [third.number]
    assert budget.given_up_line(given_up[0]) == (
        f"slot 0 given up after 3 attempts (trials {first.number}, {second.number}, {third.number}); "
        "last failure: tracking server down"
    )
    assert budget.remaining(study) == (0, 0)


def test_a_corrupt_sqlite_storage_is_one_line_naming_the_cause(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from complexity_tracker.cli.main import main

    config = tmp_path / "c.toml"
    config.write_text('[study]\nname = "c"\nn_trials = 2\n[run]\ndataset = "digits"\n[search]\ndepth = [1, 2]\n')
    database = tmp_path / "optuna.db"
    database.write_bytes(b"not a database\n" * 100)
    assert main(["study", "status", str(config), "--storage", f"sqlite:///{database}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"complexity-tracker study: error: storage sqlite:///{database} is corrupt (file is not a database): "
        "restore it from a backup, or pass --storage with a new file for a new study"
    )


def test_a_later_retry_budget_replaces_the_one_written_before_but_not_the_users(monkeypatch) -> None:
    """A process (or its parent) that bounded the retries once must not pin that budget for later
    commands with another one, e.g. a subprocess started with COMPLEXITY_TRACKER_TRACKING_RETRY_S=6."""
    from complexity_tracker import tracking_store

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "COMPLEXITY_TRACKER_MLFLOW_RETRIES_SET", tracking_store.TRACKING_RETRY_ENV):
        monkeypatch.delenv(name, raising=False)
    assert 40 <= tracking_store.bound_tracking_retries("http://127.0.0.1:9") <= 60
    monkeypatch.setenv(tracking_store.TRACKING_RETRY_ENV, "6")
    assert tracking_store.bound_tracking_retries("http://127.0.0.1:9") <= 6
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the user's own setting is kept
    assert tracking_store.bound_tracking_retries("http://127.0.0.1:9") == 0.0
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
