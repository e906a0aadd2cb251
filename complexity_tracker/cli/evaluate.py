"""``complexity-tracker evaluate``: robustness and transferability of trained models across complexity levels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..estimators import ESTIMATORS
from ..metrics import class_balanced_probe
from ..robustness.comparison import compare_models
from ..robustness.config import (
    BUDGETED_ATTACKS,
    DEFAULT_L2_EPS,
    DEFAULT_LINF_EPS,
    MIN_NORM_ATTACKS,
    RobustnessConfig,
)
from ..robustness.errors import ModelSourceError
from ..robustness.mlflow_logging import log_comparison, write_artifacts
from ..robustness.sources import evaluation_data, from_checkpoints, from_runs, from_study
from ..robustness.tables import report
from ..studies.storage import redact_url
from ..tracking_store import resolve_tracking_uri
from ..training import resolve_device

DEFAULTS = RobustnessConfig()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Attack trained models with torchattacks on their dataset's test split (inputs in [0, 1]): "
        "clean and robust accuracy over epsilon grids, minimal L2 perturbation (DeepFool, FAB), the transfer "
        "matrix ordered by complexity, and Spearman correlations between complexity (bits, measured on a "
        "class-balanced probe of the training split) and robustness. Prints tables; logs to MLflow when the "
        "models come from runs or a study."
    )
    source = parser.add_argument_group("models (choose one source)").add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoints", nargs="+", metavar="FILE", help="files written by save_checkpoint")
    source.add_argument("--runs", nargs="+", metavar="RUN_ID", help="MLflow runs of `train` or of a study")
    source.add_argument("--study", metavar="NAME", help="an Optuna study (needs --storage)")
    parser.add_argument("--storage", metavar="URL", help="the study's storage (sqlite:///FILE, journal:FILE, postgresql://...)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--top-k", type=int, metavar="K", help="the K best finished trials (first objective)")
    pick.add_argument("--quantiles", type=float, nargs="+", metavar="Q",
                      help="the trials nearest to these quantiles (0..1) of --complexity-key")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    parser.add_argument("--complexity-key", default="H/network",
                        help="complexity value (bits) that orders the models, e.g. H/network, I_XSY/network")
    attacks = parser.add_argument_group("attacks")
    attacks.add_argument("--attacks", nargs="+", default=list(DEFAULTS.attacks), metavar="NAME",
                         help=f"budgeted attacks: {', '.join(BUDGETED_ATTACKS)} (default: %(default)s)")
    attacks.add_argument("--min-norm-attacks", nargs="*", default=list(DEFAULTS.min_norm_attacks), metavar="NAME",
                         help=f"minimum-norm attacks: {', '.join(MIN_NORM_ATTACKS)}; none to skip (default: %(default)s)")
    attacks.add_argument("--linf-eps", type=float, nargs="+", default=list(DEFAULT_LINF_EPS), metavar="EPS",
                         help="Linf budgets of fgsm/pgd_linf (default: %(default)s)")
    attacks.add_argument("--l2-eps", type=float, nargs="+", default=list(DEFAULT_L2_EPS), metavar="EPS",
                         help="L2 budgets of pgd_l2 (default: %(default)s)")
    attacks.add_argument("--pgd-steps", type=int, default=DEFAULTS.pgd_steps, help="PGD steps (default: %(default)s)")
    attacks.add_argument("--autoattack-eps", type=float, default=DEFAULTS.autoattack_eps,
                         help="Linf budget of autoattack (default: %(default)s)")
    attacks.add_argument("--transfer-attack", default=DEFAULTS.transfer_attack, choices=("fgsm", "pgd_linf", "pgd_l2"),
                         help="attack crafting transfer examples (default: %(default)s)")
    attacks.add_argument("--transfer-eps", type=float, default=DEFAULTS.transfer_eps,
                         help="its budget (default: %(default)s)")
    attacks.add_argument("--n-samples", type=int, default=DEFAULTS.n_samples,
                         help="test samples attacked (default: %(default)s)")
    attacks.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds samples and attacks (default: %(default)s)")
    parser.add_argument("--probe-per-class", type=int, default=200,
                        help="training samples per class on which complexity is measured (default: %(default)s)")
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default="kde",
                        help="entropy estimator of the complexity (default: %(default)s)")
    parser.add_argument("--kde-lam", type=float, default=None,
                        help="kde kernel width (default: 0.01 vectors, 0.04 feature maps)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="also write comparison.json, tables and figures here")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of tables")
    parser.set_defaults(handler=run)


def _config(args: argparse.Namespace) -> RobustnessConfig:
    return RobustnessConfig(
        attacks=tuple(args.attacks), min_norm_attacks=tuple(args.min_norm_attacks), linf_eps=tuple(args.linf_eps),
        l2_eps=tuple(args.l2_eps), pgd_steps=args.pgd_steps, autoattack_eps=args.autoattack_eps,
        transfer_attack=args.transfer_attack, transfer_eps=args.transfer_eps, n_samples=args.n_samples,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.study is not None and not args.storage:
        raise ModelSourceError("--study needs --storage URL (where the study's trials are stored)")
    if args.study is None and (args.top_k is not None or args.quantiles is not None):
        raise ModelSourceError("--top-k and --quantiles select trials of a --study")
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    summary_run_id = None
    if args.checkpoints:
        sources = from_checkpoints(args.checkpoints)
    elif args.runs:
        sources = from_runs(args.runs, tracking_uri)
    else:
        sources, summary_run_id = from_study(args.study, args.storage, tracking_uri, top_k=args.top_k,
                                             quantiles=args.quantiles, complexity_key=args.complexity_key)
    if len({s.name for s in sources}) < len(sources):
        for index, source in enumerate(sources):
            source.name = f"{index}:{source.name}"
    device = resolve_device(args.device)
    data = evaluation_data(sources)
    probe = class_balanced_probe(data.y_train, per_class=args.probe_per_class, seed=args.seed)
    result = compare_models(
        {s.name: s.model.to(device) for s in sources}, data.x_test, data.y_test, config,
        probe=(data.x_train[probe], data.y_train[probe]), complexity_key=args.complexity_key,
        complexity_kwargs={"estimator": args.estimator, "lam": args.kde_lam},
        run_ids={s.name: s.run_id for s in sources if s.run_id is not None},
    )
    print(result.to_json() if args.json else report(result))
    if args.output_dir is not None:
        write_artifacts(result, args.output_dir)
    from_mlflow = any(s.run_id is not None for s in sources)
    if from_mlflow and not args.no_log:
        run_id = log_comparison(result, tracking_uri, summary_run_id=summary_run_id)
        if not args.json:
            print(f"\nlogged to MLflow ({redact_url(tracking_uri)}): per-model metrics on each run, comparison on run {run_id}")
    return 0
