"""The reproduction report: Markdown with one section per claim, and its MLflow parent run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..tracking import get_or_create_experiment, mlflow_key
from . import criteria
from .claims import ClaimResult

#: MLflow experiment and run name prefix of the reproduction's parent run.
EXPERIMENT = "reproduce"
#: Numeric form of each verdict for MLflow metrics (``verdict/<claim>``).
VERDICT_SCORE = {criteria.REPRODUCED: 1.0, criteria.PARTLY: 0.5, criteria.NOT_REPRODUCED: 0.0}
VERDICT_MARK = {criteria.REPRODUCED: "✅", criteria.PARTLY: "🟡", criteria.NOT_REPRODUCED: "❌"}


@dataclass
class ReportContext:
    """How the reproduction ran: sizing, wall time (seconds), studies (name -> details), settings."""

    sizing: str
    wall_seconds: float
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table over the union of the rows' keys (in first-seen order); ``|`` is escaped."""
    if not rows:
        return "_(no rows)_"
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:.3g}"
        return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(results: Sequence[ClaimResult], context: ReportContext, figure_base: Path) -> str:
    """The report text; figure links are relative to ``figure_base`` (the report's folder)."""
    minutes = context.wall_seconds / 60
    lines = [
        "# Reproduction of the paper's claims",
        "",
        "Ren et al., *Towards Theoretical Analysis of Transformation Complexity of ReLU DNNs* (ICML 2022), "
        "reproduced with `complexity-tracker reproduce` on the embedded 8x8 digits and synthetic sparse parities, "
        "sized for 2 CPU cores. Complexity values are in bits (kernel estimate of the paper, probe of "
        "class-balanced training samples).",
        "",
        f"- sizing: **{context.sizing}**; wall time of this invocation: **{minutes:.1f} min** "
        "(studies resume by name, so a resumed run reuses finished trials)",
        *[f"- {key}: {value}" for key, value in context.settings.items()],
        *[f"- {note}" for note in context.notes],
        "",
        "Run it with `complexity-tracker reproduce [--quick] [--out DIR] [--tracking-uri URI] [--storage URL] "
        "[--workers N] [--only CLAIM]`: it runs the studies of `studies/paper/` (each also runs alone: "
        "`complexity-tracker study run studies/paper/<name>.toml --workers 2`), resumes them by name when "
        "interrupted, writes `DIR/reproduction.md` with figures under `DIR/reproduction/`, and logs the report on "
        "a run of the MLflow experiment `reproduce`.",
        "",
        "## Summary",
        "",
        markdown_table([
            {"claim": r.title, "verdict": f"{VERDICT_MARK[r.verdict]} {r.verdict}", "reason": r.reason}
            for r in results
        ]),
        "",
        "Verdicts come from explicit criteria computed from the measurements (stated under each claim and in "
        "`complexity_tracker/reproduce/criteria.py`), not from hand-picked labels.",
        "",
    ]
    if context.studies:
        lines += ["## Studies", "", markdown_table([{"study": name, **details}
                                                     for name, details in context.studies.items()]), ""]
    for result in results:
        lines += [
            f"## {result.title}",
            "",
            f"**Paper.** {result.paper_statement}",
            "",
            result.paper_numbers,
            "",
            "**Our measurements.**",
            "",
            markdown_table(result.our_measurements),
            "",
            *[f"![{result.name}]({_relative(path, figure_base)})" for path in result.figures],
            "",
            f"**Verdict: {result.verdict}.** {result.reason}.",
            "",
            f"*Criterion.* {result.criterion}",
            "",
        ]
    return "\n".join(lines)


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def write_report(results: Sequence[ClaimResult], context: ReportContext, path: Path) -> Path:
    """Write the Markdown report to ``path`` (figures linked relative to its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(results, context, path.parent), encoding="utf-8")
    return path


def log_report(
    client: MlflowClient,
    results: Sequence[ClaimResult],
    context: ReportContext,
    report_path: Path,
    *,
    experiment: str = EXPERIMENT,
) -> str:
    """Create a FINISHED ``reproduce`` run holding the report, the figures (at the paths the report
    links), one ``verdict/<claim>`` metric per claim (1 reproduced, 0.5 partly, 0 not) and the
    numbers behind each verdict; returns its run id."""
    experiment_id = get_or_create_experiment(client, experiment)
    run = client.create_run(experiment_id, run_name=f"reproduce-{context.sizing}",
                            tags={"complexity_tracker.role": "reproduce"})
    run_id = run.info.run_id
    params = {"sizing": context.sizing, **context.settings}
    params.update({f"study.{name}": str(details.get("mlflow parent run", "")) for name, details in context.studies.items()})
    metrics = [Metric("wall_minutes", context.wall_seconds / 60, 0, 0)]
    for result in results:
        metrics.append(Metric(f"verdict/{result.name}", VERDICT_SCORE[result.verdict], 0, 0))
        metrics += [Metric(f"{result.name}/{key}", float(value), 0, 0)
                    for key, value in result.numbers.items() if math.isfinite(value)]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(mlflow_key(key), str(value)[:500]) for key, value in params.items()],
        tags=[RunTag(f"verdict.{r.name}", r.verdict) for r in results],
    )
    client.log_artifact(run_id, str(report_path))
    for figure in dict.fromkeys(path for r in results for path in r.figures):
        client.log_artifact(run_id, str(figure), artifact_path=_relative(Path(figure).parent, report_path.parent))
    client.set_terminated(run_id, "FINISHED")
    return run_id
