"""Command-line arguments naming trained models (checkpoint files, MLflow runs, an Optuna study),
shared by ``measure`` and ``evaluate``; models are loaded by :mod:`complexity_tracker.robustness.sources`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from typing import TYPE_CHECKING

from ..robustness.errors import ModelSourceError
from ..tracking_store import check_tracking_server, resolve_tracking_uri

if TYPE_CHECKING:
    from ..robustness.sources import ModelSource


def add_run_arguments(parser: argparse.ArgumentParser, source: argparse._MutuallyExclusiveGroup) -> None:
    """``--runs``/``--study`` (into the mutually exclusive ``source`` group), ``--storage``,
    ``--top-k``/``--quantiles``, ``--complexity-key`` and ``--tracking-uri``."""
    source.add_argument("--runs", nargs="+", metavar="RUN_ID", help="MLflow runs of `train` or of a study")
    source.add_argument("--study", metavar="NAME", help="an Optuna study (needs --storage)")
    parser.add_argument("--storage", metavar="URL",
                        help="the study's storage (sqlite:///FILE, journal:FILE, postgresql://...)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--top-k", type=int, metavar="K", help="the K best finished trials of --study (first objective)")
    pick.add_argument("--quantiles", type=float, nargs="+", metavar="Q",
                      help="the trials of --study nearest to these quantiles (0..1) of --complexity-key")
    parser.add_argument("--complexity-key", default="H/network",
                        help="complexity value (bits) that orders the models, e.g. H/network, I_XSY/network "
                        "(default: %(default)s)")
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking URI of the runs (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def load_models(args: argparse.Namespace, checkpoints: Sequence[str] | None) -> tuple[list[ModelSource], str | None]:
    """The models named by ``checkpoints`` or ``args.runs``/``args.study``, with unique names, and the
    study's MLflow parent run id (``None`` unless ``--study``)."""
    if checkpoints and (args.runs or args.study is not None):
        raise ModelSourceError("give checkpoint files or --runs/--study, not both")
    if args.study is not None and not args.storage:
        raise ModelSourceError("--study needs --storage URL (where the study's trials are stored)")
    if args.study is None and (args.top_k is not None or args.quantiles is not None):
        raise ModelSourceError("--top-k and --quantiles select trials of a --study")
    if not checkpoints:
        check_tracking_server(resolve_tracking_uri(args.tracking_uri))  # before torch loads; not MLflow's retries

    from ..robustness.sources import from_checkpoints, from_runs, from_study

    parent_run_id = None
    if checkpoints:
        sources = from_checkpoints(checkpoints)
    elif args.runs:
        sources = from_runs(args.runs, resolve_tracking_uri(args.tracking_uri))
    elif args.study is not None:
        sources, parent_run_id = from_study(args.study, args.storage, resolve_tracking_uri(args.tracking_uri),
                                            top_k=args.top_k, quantiles=args.quantiles,
                                            complexity_key=args.complexity_key)
    else:
        raise ModelSourceError("name the models: checkpoint files, --runs RUN_ID... or --study NAME --storage URL")
    if len({s.name for s in sources}) < len(sources):
        for index, source in enumerate(sources):
            source.name = f"{index}:{source.name}"
    return sources, parent_run_id
