"""Run the paper's studies (resuming finished trials), evaluate every claim, write and log the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from ..errors import ComplexityTrackerError
from ..studies import run_study
from ..studies.budget import finished
from ..studies.storage import study_tracking_uri
from ..studies.storage import redact_url
from ..tracking import git_commit
from . import claims
from .claims import ClaimResult
from .collect import TrialRecord, collect_trials
from .report import ReportContext, log_report, write_report
from .robust_eval import LambdaRobustness, evaluate_lambda_models
from .sizing import PAPER_STUDIES_DIR, STUDY_STEMS, Sizing, sized_study

#: Report file and figure folder inside the output folder.
REPORT_NAME = "reproduction.md"
FIGURE_DIR_NAME = "reproduction"
#: Studies whose trained models are attacked afterwards (their trials log the model).
MODEL_STUDIES = ("complexity_loss",)

#: claim -> (studies it reads, evaluator(records by study, robustness evaluation (lazy), figure folder))
CLAIMS: dict[str, tuple[tuple[str, ...], Callable[..., ClaimResult]]] = {
    "phenomenon1": (("phenomenon1_stacked",), lambda r, _, d: claims.phenomenon1(r["phenomenon1_stacked"], d)),
    "phenomenon2": (("phenomenon2_residual",), lambda r, _, d: claims.phenomenon2(r["phenomenon2_residual"], d)),
    "phenomenon3": (("phenomenon3_stochastic",), lambda r, _, d: claims.phenomenon3(r["phenomenon3_stochastic"], d)),
    "entanglement": (
        ("phenomenon1_stacked", "phenomenon2_residual", "phenomenon3_stochastic"),
        lambda r, _, d: claims.entanglement(
            [*r["phenomenon1_stacked"], *r["phenomenon2_residual"], *r["phenomenon3_stochastic"]], d),
    ),
    "ceiling": (("ceiling",), lambda r, _, d: claims.ceiling(r["ceiling"], d)),
    "complexity_loss": (("complexity_loss",), lambda r, _, d: claims.complexity_loss(r["complexity_loss"], d)),
    "adversarial_training": (("robustness",), lambda r, _, d: claims.adversarial_training(r["robustness"], d)),
    "lambda_perturbation": (("complexity_loss",), lambda _, attacked, d: claims.lambda_perturbation(attacked(), d)),
    "transferability": (("complexity_loss",), lambda _, attacked, d: claims.transferability(attacked(), d)),
}


class ReproductionIncompleteError(ComplexityTrackerError, RuntimeError):
    """A study did not finish (interrupted, or trials still running elsewhere): run the command again."""


@dataclass
class ReproduceSettings:
    """Where and how to run.

    Attributes:
        out_dir: receives ``reproduction.md``, the figures (``reproduction/*.png``) and, by default,
            the Optuna journal and the shrunk study configs (``.state/``).
        sizing: ``sizing.FULL``, ``QUICK`` or ``TINY``.
        storage_url: Optuna storage shared by the studies (``None``: a journal file in ``out_dir/.state``).
        tracking_uri: MLflow tracking URI (``None``: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        workers: worker processes per study.
        claims: the claims to evaluate (``None``: all, see :data:`CLAIMS`).
        studies_dir: folder of the paper study configs.
        progress: show progress bars.
        robustness_samples: test samples attacked per model.
    """

    out_dir: Path
    sizing: Sizing
    storage_url: str | None = None
    tracking_uri: str | None = None
    workers: int = 1
    claims: Sequence[str] | None = None
    studies_dir: Path = PAPER_STUDIES_DIR
    progress: bool = True
    robustness_samples: int = 200

    @property
    def state_dir(self) -> Path:
        return self.out_dir / ".state"

    def storage(self) -> str:
        return self.storage_url or f"journal:{self.state_dir / 'optuna.journal'}"


@dataclass
class ReproductionOutcome:
    results: list[ClaimResult]
    report_path: Path
    run_id: str
    wall_seconds: float
    studies: dict[str, dict[str, str]] = field(default_factory=dict)


def selected_claims(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(CLAIMS)
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        raise ComplexityTrackerError(f"unknown claim(s) {unknown}; choose from {', '.join(CLAIMS)}")
    return [n for n in CLAIMS if n in names]


def _study_minutes(study: optuna.Study) -> float:
    """Minutes from the first trial's start to the last trial's end (0 without finished trials)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return 0.0
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    return span.total_seconds() / 60


def _failed_trials(study: optuna.Study) -> list[str]:
    """One line per slot of ``study`` that ended FAIL (not retried): trial number, parameters and
    Optuna's fail reason."""
    return [
        f"{study.study_name}: trial {t.number} ({', '.join(f'{k}={v}' for k, v in t.params.items())}) failed"
        + (f": {t.system_attrs['fail_reason'].splitlines()[-1]}" if t.system_attrs.get("fail_reason") else "")
        for t in finished(study) if t.state == optuna.trial.TrialState.FAIL
    ]


def reproduce(settings: ReproduceSettings) -> ReproductionOutcome:
    """Run (or resume) the studies the selected claims need, evaluate the claims, write the report
    and log it on a ``reproduce`` MLflow run.

    Raises:
        ReproductionIncompleteError: a study was interrupted or still has trials running elsewhere.
    """
    started = time.perf_counter()
    names = selected_claims(settings.claims)
    stems = [s for s in STUDY_STEMS if any(s in CLAIMS[n][0] for n in names)]
    storage = settings.storage()
    if settings.storage_url is None:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, list[TrialRecord]] = {}
    studies: dict[str, dict[str, str]] = {}
    failures: list[str] = []
    study_minutes = 0.0
    tracking_uri = None
    for stem in stems:
        config, path = sized_study(stem, settings.sizing, settings.state_dir, settings.studies_dir)
        tracking_uri = study_tracking_uri(settings.tracking_uri, config.study)
        outcome = run_study(config, config_path=path, storage_url=storage, tracking_uri=tracking_uri,
                            workers=settings.workers, progress=settings.progress, log_model=stem in MODEL_STUDIES)
        if not outcome.complete:
            why = "was interrupted" if outcome.interrupted else "has trials still running elsewhere"
            raise ReproductionIncompleteError(
                f"study {config.study.name!r} {why}; run the same command again to resume it"
            )
        records[stem] = collect_trials(outcome.study, config, tracking_uri)
        failed = _failed_trials(outcome.study)
        failures += failed
        study_minutes += _study_minutes(outcome.study)
        studies[config.study.name] = {
            "config": f"studies/paper/{stem}.toml",
            "trials": str(len(records[stem])),
            "failed": str(len(failed)),
            "minutes (first start to last end)": f"{_study_minutes(outcome.study):.1f}",
            "mlflow parent run": outcome.parent_run_id,
        }
    attacked: list[LambdaRobustness] = []

    def robustness() -> LambdaRobustness:
        if not attacked:
            attacked.append(evaluate_lambda_models(records["complexity_loss"], tracking_uri,
                                                   n_samples=settings.robustness_samples))
        return attacked[0]

    figure_dir = settings.out_dir / FIGURE_DIR_NAME
    results = [CLAIMS[name][1](records, robustness, figure_dir) for name in names]
    wall = time.perf_counter() - started
    commit = git_commit()
    context = ReportContext(
        sizing=settings.sizing.name,
        wall_seconds=wall,
        studies=studies,
        settings={
            "studies training time": f"{study_minutes:.1f} min (first trial start to last trial end, summed over studies)",
            "workers per study": str(settings.workers),
            "Optuna storage": redact_url(storage),
            "MLflow tracking URI": redact_url(tracking_uri or ""),
            **({"git commit": commit} if commit else {}),
        },
        notes=[f"left out of the claims: {line}" for line in failures],
    )
    report_path = write_report(results, context, settings.out_dir / REPORT_NAME)
    run_id = log_report(MlflowClient(tracking_uri), results, context, report_path)
    return ReproductionOutcome(results, report_path, run_id, wall, studies)
