"""``complexity-tracker reproduce``: run the paper's studies and write the verdict report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..studies.workers import cores
from ..tracking_store import check_tracking_server, resolve_tracking_uri

#: The claims judged, in report order (``complexity_tracker.reproduce.runner.CLAIMS`` holds their criteria).
CLAIM_NAMES = ("phenomenon1", "phenomenon2", "phenomenon3", "entanglement", "ceiling", "complexity_loss",
               "adversarial_training", "lambda_perturbation", "transferability")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run (or resume) the studies of studies/paper/, judge each claim of the paper by an explicit "
        "criterion, write OUT/reproduction.md with figures under OUT/reproduction/, and log the report on a "
        "'reproduce' MLflow run. Interrupted runs resume: run the same command again."
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true",
                       help="fewer epochs, seeds and grid cells (about 10 minutes on 2 cores)")
    sizes.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("reproduction"),
                        help="folder for reproduction.md, its figures and the run state (default: reproduction)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--storage", help="Optuna storage URL shared by the studies (default: "
                        "journal:OUT/.state/optuna.journal)")
    parser.add_argument("--workers", type=int, default=min(2, cores()),
                        help="worker processes per study (default: min(2, cores))")
    parser.add_argument("--only", action="append", choices=CLAIM_NAMES, metavar="CLAIM",
                        help=f"evaluate only this claim (repeatable): {', '.join(CLAIM_NAMES)}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=reproduce_command)


def reproduce_command(args: argparse.Namespace) -> int:
    check_tracking_server(resolve_tracking_uri(args.tracking_uri))  # before torch and MLflow are imported

    from ..reproduce.runner import ReproduceSettings, reproduce
    from ..reproduce.sizing import FULL, QUICK, TINY

    sizing = TINY if args.tiny else QUICK if args.quick else FULL
    outcome = reproduce(ReproduceSettings(
        out_dir=args.out,
        sizing=sizing,
        storage_url=args.storage,
        tracking_uri=args.tracking_uri,
        workers=args.workers,
        claims=args.only,
        progress=not args.no_progress,
    ))
    width = max(len(r.name) for r in outcome.results)
    for result in outcome.results:
        print(f"{result.name:<{width}}  {result.verdict:<14}  {result.reason}")
    print(f"\nreport: {outcome.report_path.absolute()} ({outcome.wall_seconds / 60:.1f} min); "
          f"MLflow run {outcome.run_id} in experiment 'reproduce'")
    return 0
