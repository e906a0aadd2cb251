"""Log per-layer transformation complexity to MLflow while a network trains.

:class:`ComplexityTracker` measures the complexity of a model's gating layers on a fixed probe
set and logs it, with the training metrics, as MLflow metrics whose step is the epoch:

* ``H/<layer>``, ``I_XSY/<layer>``, ``TC/<layer>`` and ``additivity_gap/<layer>`` (H + TC - C)
  (bits) for every gating layer and for ``network`` (all layers concatenated); for stochastic
  models also ``I_XS/<layer>`` and ``conditional_capped/<layer>`` (1 when H(S|X) reached its
  ceiling log2 K, see :class:`~complexity_tracker.metrics.LayerComplexity`);
* the training metrics it is given (``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``,
  ``loss_gap``, ...) under their own names.

Each epoch costs one ``log_batch`` request, however many layers the model has.  Dense data
(per-unit activation rates), every measured value (JSON/CSV), per-layer plots and the model go
into the run's artifacts when the run ends.

Use it as a context manager around any training loop::

    with ComplexityTracker.from_dataset(x_test, y_test, per_class=200) as tracker:
        for epoch in range(epochs + 1):
            ...  # train one epoch (skip at epoch 0)
            tracker.log_epoch(epoch, model, {"train_loss": ..., "test_loss": ...})

or as an ``EpochCallback`` of :func:`complexity_tracker.training.train` (``tracker(result)``)
inside ``with tracker:`` / between :meth:`ComplexityTracker.start` and :meth:`ComplexityTracker.end`.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from torch import nn

from . import __version__
from .errors import ComplexityTrackerError
from .estimators import EntropyEstimator, make_estimator
from .metrics import (
    DEFAULT_REPEATS,
    METRIC_NAMES,
    ComplexityReport,
    check_probe,
    check_repeats,
    check_tc_method,
    class_balanced_probe,
    measure_complexity,
)
from .nn_utils import find_stochastic_modules
from .plots import plot_layer_complexity
from .tracking_store import (
    DEFAULT_EXPERIMENT,
    check_tracking_server,
    resolve_tracking_uri,
    single_attempt,
    tracking_server_answers,
)

if TYPE_CHECKING:
    from .training import EpochResult

#: Complexity values logged as metrics (``I_XS`` and ``conditional_capped`` are added for
#: stochastic models); the rest (``C``, ``d``, ``N``) is in the ``complexity/complexity.csv`` artifact.
LOGGED_COMPLEXITY = ("H", "I_XSY", "TC", "additivity_gap")
#: MLflow accepts at most 1000 metrics per ``log_batch`` call.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
#: Run artifact holding the model's weights as a plain state_dict (tensors only, no code).
STATE_DICT_ARTIFACT = "weights/state_dict.pt"
VERSION_TAG = "complexity_tracker.version"
GIT_COMMIT_TAG = "complexity_tracker.git_commit"

_BAD_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-. /:]")


class TrackerSettingError(ComplexityTrackerError, ValueError):
    """A tracker argument is out of range or inconsistent with the probe."""


class TrackerStateError(ComplexityTrackerError, RuntimeError):
    """A tracker method was called before the run started or after it ended."""


def metric_key(metric: str, layer: str) -> str:
    """MLflow key of one complexity value, ``"<metric>/<layer>"``, with characters MLflow rejects replaced."""
    return mlflow_key(f"{metric}/{layer}")


def mlflow_key(name: str) -> str:
    """``name`` with the characters MLflow rejects in metric and param keys replaced by ``_``."""
    return _BAD_KEY_CHARACTERS.sub("_", name)


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out at ``path`` (default: this package's source), or ``None`` outside git."""
    directory = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}`` strings, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def is_stochastic(model: nn.Module) -> bool:
    """Whether the model's gating states are random for a fixed input in train mode.

    True when it holds a module that is random in train mode (dropout, or a sampling layer marked
    ``samples_in_train_mode = True``; see :func:`~complexity_tracker.nn_utils.find_stochastic_modules`),
    the modules stochastic measurement switches on.
    """
    return bool(find_stochastic_modules(model))


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created when missing (safe when several workers race to create it)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        # another worker created it in the meantime
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class ComplexityTracker:
    """Measure per-layer complexity (bits) on a fixed probe every k epochs and log it to one MLflow run.

    Args:
        probe_inputs: probe inputs (N, ...), fixed for the whole run.
        probe_labels: their labels (N,), used for I(X;S;Y).
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.
        experiment_name: MLflow experiment (created when missing).
        run_name: display name of the run.
        parent_run_id: nest the run under this run (e.g. a study's parent run).
        tags: extra run tags.
        config: the run's configuration (a mapping or an object with ``to_dict()``, e.g.
            :class:`~complexity_tracker.config.RunConfig`): logged as params and as ``config.json``.
        layers: gating layers to measure (module paths or glob patterns); ``None`` for all.
        estimator: ``"kde"`` or ``"plugin"``, or an estimator instance.
        kernel_width: kernel width of ``"kde"``; ``None`` for the paper's automatic choice.
        tc_method: total-correlation estimator, ``"kde"`` or ``"plugin"`` (see
            :func:`~complexity_tracker.metrics.measure_complexity`).
        stochastic: measure I(X;S) with dropout/sampling on; ``None`` detects it from the model
            (see :func:`is_stochastic`) at the first measurement.
        repeats: K, stochastic forward passes per probe input (>= 2).
        measure_every: measure complexity at epochs divisible by k (and at ``last_epoch``);
            training metrics are logged every epoch.
        last_epoch: the final epoch, always measured.
        killed_exceptions: exceptions that end the run KILLED rather than FAILED (context manager).
        finished_exceptions: exceptions that end the run FINISHED, as a training stopped early on
            purpose (e.g. ``optuna.TrialPruned``); the exception is still raised.
        server_timeout_s: how long to wait for an ``http(s)`` tracking server at start.

    Attributes:
        run_id: the MLflow run id (after :meth:`start`).
        experiment_id: the id of its MLflow experiment (after :meth:`start`).
        history: one dict per logged epoch: ``epoch``, the training metrics and every complexity
            value (``"<metric>/<layer>"``, all of H, I_XS, I_XSY, C, TC, additivity_gap).
        reports: ``{epoch: ComplexityReport}`` of the measured epochs.
    """

    def __init__(
        self,
        probe_inputs: torch.Tensor,
        probe_labels: torch.Tensor | np.ndarray,
        *,
        tracking_uri: str | None = None,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | Any | None = None,
        layers: str | Sequence[str] | None = None,
        estimator: str | EntropyEstimator = "kde",
        kernel_width: float | None = None,
        tc_method: str = "kde",
        stochastic: bool | None = None,
        repeats: int = DEFAULT_REPEATS,
        measure_every: int = 1,
        last_epoch: int | None = None,
        killed_exceptions: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
        finished_exceptions: tuple[type[BaseException], ...] = (),
        server_timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(measure_every, int) or measure_every < 1:
            raise TrackerSettingError(f"measure_every must be an integer >= 1, got {measure_every!r}")
        check_repeats(repeats)
        check_tc_method(tc_method)
        self.probe_inputs = probe_inputs
        self.probe_labels = torch.as_tensor(probe_labels)
        if self.probe_labels.ndim != 1 or len(self.probe_labels) != len(probe_inputs):
            raise TrackerSettingError(
                f"probe_labels must hold one label per probe input: {len(probe_inputs)} inputs, "
                f"labels of shape {tuple(self.probe_labels.shape)}"
            )
        check_probe(probe_inputs, self.probe_labels)
        if isinstance(estimator, str):
            estimator = make_estimator(estimator, **({"kernel_width": kernel_width} if estimator == "kde" else {}))
        self.estimator = estimator
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        self.layers = layers
        self.tc_method = tc_method
        self.stochastic = stochastic
        self.repeats = repeats
        self.measure_every = measure_every
        self.last_epoch = last_epoch
        self.killed_exceptions = killed_exceptions
        self.finished_exceptions = finished_exceptions
        self.server_timeout_s = server_timeout_s
        self.probe_params: dict[str, Any] = {"probe_size": len(probe_inputs)}
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.history: list[dict[str, float]] = []
        self.reports: dict[int, ComplexityReport] = {}
        self.measure_seconds: dict[int, float] = {}
        self._client: MlflowClient | None = None
        self._ended = False

    @classmethod
    def from_dataset(
        cls,
        inputs: torch.Tensor,
        labels: torch.Tensor | np.ndarray,
        *,
        per_class: int = 200,
        seed: int = 0,
        **kwargs: Any,
    ) -> ComplexityTracker:
        """Track on a seeded class-balanced probe of ``per_class`` samples per class of ``inputs``."""
        index = torch.as_tensor(class_balanced_probe(labels, per_class=per_class, seed=seed))
        tracker = cls(inputs[index], torch.as_tensor(labels)[index], **kwargs)
        tracker.probe_params.update(probe_per_class=per_class, probe_seed=seed)
        return tracker

    # ------------------------------------------------------------------ run lifecycle
    def start(self) -> ComplexityTracker:
        """Check the tracking server, start the MLflow run and log params and tags.

        The run becomes MLflow's active run in this thread (``mlflow.log_*`` calls go to it),
        nested under ``parent_run_id`` or under a run already active in this thread.
        """
        if self.run_id is not None:
            raise TrackerStateError(f"the tracker already started run {self.run_id}; use one tracker per run")
        check_tracking_server(self.tracking_uri, self.server_timeout_s)
        mlflow.set_tracking_uri(self.tracking_uri)
        self._client = MlflowClient(self.tracking_uri)
        self.experiment_id = get_or_create_experiment(self._client, self.experiment_name)
        tags = {VERSION_TAG: __version__, **self.tags}
        commit = git_commit()
        if commit:
            tags[GIT_COMMIT_TAG] = commit
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=self.run_name,
            parent_run_id=self.parent_run_id,
            nested=True,
            tags=tags,
        )
        self.run_id = run.info.run_id
        try:
            params = {**flatten_params(self.config), **flatten_params(self._tracker_params())}
            items = [Param(k, v) for k, v in params.items()]
            for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
                self._client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
            if self.config:
                self._client.log_dict(self.run_id, self.config, "config.json")
        except BaseException:
            self._terminate(RunStatus.to_string(RunStatus.FAILED))
            raise
        return self

    def _tracker_params(self) -> dict[str, Any]:
        return {
            "tracker": {
                "estimator": self.estimator.name,
                **{f"estimator_{k}": v for k, v in self.estimator.params().items()},
                **self.probe_params,
                "measure_every": self.measure_every,
                "layers": self.layers if self.layers is not None else "all",
                "tc_method": self.tc_method,
                "stochastic": "auto" if self.stochastic is None else self.stochastic,
                "repeats": self.repeats,
            }
        }

    def end(self, status: str = "FINISHED") -> None:
        """Log the artifacts (values JSON/CSV, activation rates, plots) and end the run with ``status``.

        When the artifacts cannot be written, a FINISHED run ends FAILED and the error is raised;
        for FAILED/KILLED runs a warning is given instead, so the original error stays visible.
        Ctrl-C while the artifacts are written ends the run KILLED (otherwise MLflow's exit hook
        would later end the still-active run FINISHED).
        """
        self._require_running()
        try:
            self.log_artifacts()
        except Exception:
            if status == RunStatus.to_string(RunStatus.FINISHED):
                self._terminate(RunStatus.to_string(RunStatus.FAILED))
                raise
            warnings.warn(f"could not write the artifacts of {status} run {self.run_id}", stacklevel=2)
        except BaseException:
            self._terminate(RunStatus.to_string(RunStatus.KILLED))
            raise
        self._terminate(status)

    def _terminate(self, status: str) -> None:
        self._ended = True
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status)
        else:
            self._client.set_terminated(self.run_id, status)

    def _end_after_outage(self, status: str) -> None:
        """End the run with one request and no artifacts: the tracking server does not answer, and
        every request would wait out MLflow's whole retry budget.  When that request fails too the
        run stays RUNNING on the server (a study ends it when the trial is retried)."""
        with single_attempt(), contextlib.suppress(Exception):
            self._terminate(status)

    def __enter__(self) -> ComplexityTracker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None or issubclass(exc_type, self.finished_exceptions):
            self.end("FINISHED")
            return
        status = "KILLED" if issubclass(exc_type, self.killed_exceptions) else "FAILED"
        if not tracking_server_answers(self.tracking_uri):
            self._end_after_outage(status)
            return
        try:
            self.end(status)
        except Exception as end_error:  # the training error matters more; report both
            warnings.warn(f"run {self.run_id} could not be ended {status}: {end_error}", stacklevel=2)

    def _require_running(self) -> None:
        if self.run_id is None:
            raise TrackerStateError(
                "the tracker has no run yet: use `with ComplexityTracker(...) as tracker:` or call tracker.start()"
            )
        if self._ended:
            raise TrackerStateError(f"run {self.run_id} has already ended; create a new tracker for a new run")

    # ------------------------------------------------------------------ per epoch
    def __call__(self, result: EpochResult) -> None:
        """``EpochCallback`` form of :meth:`log_epoch`."""
        self.log_epoch(result.epoch, result.model, result.metrics)

    def should_measure(self, epoch: int) -> bool:
        return epoch % self.measure_every == 0 or epoch == self.last_epoch

    def log_epoch(self, epoch: int, model: nn.Module, metrics: Mapping[str, float] | None = None) -> ComplexityReport | None:
        """Log ``metrics`` and (on measured epochs) the model's complexity with step = ``epoch``.

        One ``log_batch`` request per call.  Returns the complexity report, or ``None`` on epochs
        that are not measured.
        """
        self._require_running()
        row: dict[str, float] = {"epoch": epoch}
        logged = {mlflow_key(k): float(v) for k, v in (metrics or {}).items()}
        row.update(logged)
        report = None
        if self.should_measure(epoch):
            started = time.perf_counter()
            report = self.measure(model)
            self.measure_seconds[epoch] = time.perf_counter() - started
            self.reports[epoch] = report
            row.update(report.to_dict())
            logged.update(self._complexity_metrics(report))
        self.history.append(row)
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, value, timestamp, epoch) for key, value in logged.items()]
        for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=batch[start : start + MAX_METRICS_PER_BATCH])
        return report

    def measure(self, model: nn.Module) -> ComplexityReport:
        """Complexity of ``model`` on the probe (bits), without logging."""
        if self.stochastic is None:
            self.stochastic = is_stochastic(model)
        return measure_complexity(
            model,
            self.probe_inputs,
            self.probe_labels,
            layers=self.layers,
            estimator=self.estimator,
            tc_method=self.tc_method,
            stochastic=self.stochastic,
            repeats=self.repeats,
        )

    def _complexity_metrics(self, report: ComplexityReport) -> dict[str, float]:
        names = LOGGED_COMPLEXITY + (("I_XS", "conditional_capped") if report.stochastic else ())
        return {metric_key(name, r.name): float(getattr(r, name)) for r in report.records for name in names}

    # ------------------------------------------------------------------ artifacts
    def complexity_rows(self) -> list[dict[str, Any]]:
        """Every measured value: one row per (epoch, layer) with METRIC_NAMES (bits), d, N, conditional_capped."""
        return [
            {"epoch": epoch, "layer": r.name, **{m: getattr(r, m) for m in METRIC_NAMES}, "d": r.d, "N": r.N,
             "conditional_capped": r.conditional_capped}
            for epoch, report in self.reports.items()
            for r in report.records
        ]

    def log_artifacts(self) -> None:
        """Write ``complexity/`` (JSON, CSV, activation rates) and ``plots/`` into the run."""
        self._require_running()
        rows = self.complexity_rows()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "complexity").mkdir()
            (out / "complexity" / "history.json").write_text(json.dumps(self.history, indent=1, default=float))
            (out / "complexity" / "complexity.csv").write_text(_to_csv(rows))
            if self.reports:
                np.savez_compressed(
                    out / "complexity" / "activation_rates.npz",
                    **{
                        f"{layer}@epoch{epoch}": rates
                        for epoch, report in self.reports.items()
                        for layer, rates in report.activation_rates.items()
                    },
                )
                (out / "plots").mkdir()
                for layer in dict.fromkeys(row["layer"] for row in rows):
                    figure = plot_layer_complexity(rows, layer, stochastic=bool(self.stochastic))
                    figure.savefig(out / "plots" / f"complexity_{_file_name(layer)}.png", dpi=100)
            self._client.log_artifacts(self.run_id, str(out))

    def log_model(self, model: nn.Module, name: str = "model") -> str:
        """Log a CPU copy of ``model`` in eval mode with ``mlflow.pytorch``; returns its model URI.

        The format is ``torch.export``'s pt2 (loading it runs no pickled code).  Needs no network:
        the pip requirements are given explicitly instead of inferred.  The weights also go into
        the run as a plain state_dict (:meth:`log_state_dict`), from which models are rebuilt.
        """
        self._require_running()
        self.log_state_dict(model)
        info = mlflow.pytorch.log_model(
            copy.deepcopy(model).cpu().eval(),
            name=name,
            input_example=self.probe_inputs[:2].cpu().numpy(),
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        return info.model_uri

    def log_state_dict(self, model: nn.Module) -> None:
        """Log the model's weights as :data:`STATE_DICT_ARTIFACT`: tensors only, so that
        ``torch.load(..., weights_only=True)`` reads them back and the run's ``config.json`` rebuilds the model."""
        self._require_running()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(STATE_DICT_ARTIFACT).name
            torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, path)
            self._client.log_artifact(self.run_id, str(path), str(Path(STATE_DICT_ARTIFACT).parent))


def _file_name(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer)


def _to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["epoch", "layer", *METRIC_NAMES, "d", "N", "conditional_capped"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
