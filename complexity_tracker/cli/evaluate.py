"""``complexity-tracker evaluate``: robustness and transferability of trained models across complexity levels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ESTIMATOR_NAMES
from ..robustness.config import BUDGETED_ATTACKS, GRIDS, MIN_NORM_ATTACKS, RobustnessConfig
from ..tracking_store import resolve_tracking_uri
from .model_sources import add_run_arguments, load_models
from .renamed import add_renamed_flag

#: Attack settings the command line can override; unset ones come from ``--grid``.
ATTACK_FLAGS = ("attacks", "min_norm_attacks", "linf_eps", "l2_eps", "pgd_steps", "autoattack_eps",
                "transfer_attack", "transfer_eps", "n_samples", "seed")


def _grid_default(field: str) -> str:
    values = {name: getattr(RobustnessConfig.grid(name), field) for name in GRIDS}
    shown = {name: " ".join(map(str, v)) if isinstance(v, tuple) else str(v) for name, v in values.items()}
    if len(set(shown.values())) == 1:
        return f"default: {shown['quick']}"
    return "default: " + ", ".join(f"{value} with --grid {name}" for name, value in shown.items())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Attack trained models with torchattacks on their dataset's test split (inputs in [0, 1]): "
        "clean and robust accuracy over epsilon grids, minimal L2 perturbation (DeepFool, FAB), the transfer "
        "matrix ordered by complexity, and Spearman correlations (exact p-values up to 9 models) between "
        "complexity (bits) and robustness. Complexity is what each run logged at its last epoch on its own "
        "probe, unless --remeasure; checkpoints are measured. Prints tables; logs to MLflow when the models "
        "come from runs or a study."
    )
    source = parser.add_argument_group("models (choose one source)").add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoints", nargs="+", metavar="FILE", help="files written by save_checkpoint")
    add_run_arguments(parser, source)
    parser.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    attacks = parser.add_argument_group("attacks")
    attacks.add_argument("--grid", choices=tuple(GRIDS), default="quick",
                         help="quick: minimal perturbations from FAB-L2 only (about a minute for the quickstart "
                         "study on 2 cores); full: DeepFool and FAB-L2. Flags below override it (default: %(default)s)")
    attacks.add_argument("--attacks", nargs="+", metavar="NAME",
                         help=f"budgeted attacks: {', '.join(BUDGETED_ATTACKS)} ({_grid_default('attacks')})")
    attacks.add_argument("--min-norm-attacks", nargs="*", metavar="NAME",
                         help=f"minimum-norm attacks: {', '.join(MIN_NORM_ATTACKS)}; none to skip "
                         f"({_grid_default('min_norm_attacks')})")
    attacks.add_argument("--linf-eps", type=float, nargs="+", metavar="EPS",
                         help=f"Linf budgets of fgsm/pgd_linf ({_grid_default('linf_eps')})")
    attacks.add_argument("--l2-eps", type=float, nargs="+", metavar="EPS",
                         help=f"L2 budgets of pgd_l2 ({_grid_default('l2_eps')})")
    attacks.add_argument("--pgd-steps", type=int, help=f"PGD steps ({_grid_default('pgd_steps')})")
    attacks.add_argument("--autoattack-eps", type=float,
                         help=f"Linf budget of autoattack ({_grid_default('autoattack_eps')})")
    attacks.add_argument("--transfer-attack", choices=("fgsm", "pgd_linf", "pgd_l2"),
                         help=f"attack crafting transfer examples ({_grid_default('transfer_attack')})")
    attacks.add_argument("--transfer-eps", type=float, help=f"its budget ({_grid_default('transfer_eps')})")
    attacks.add_argument("--n-samples", type=int, help=f"test samples attacked ({_grid_default('n_samples')})")
    attacks.add_argument("--seed", type=int, help=f"seeds samples, probe and attacks ({_grid_default('seed')})")
    measured = parser.add_argument_group("complexity measured here (checkpoints, or runs with --remeasure)")
    measured.add_argument("--remeasure", action="store_true",
                          help="measure the runs' complexity again on one probe instead of using what each run logged")
    measured.add_argument("--probe-per-class", type=int, default=None,
                          help="training samples per class of the probe (default: the first model's probe_per_class)")
    measured.add_argument("--estimator", choices=ESTIMATOR_NAMES, default="kde",
                          help="entropy estimator (default: %(default)s)")
    measured.add_argument("--kernel-width", type=float, default=None,
                          help="kde kernel width (default: 0.01 vectors, 0.04 feature maps)")
    add_renamed_flag(measured, "--kde-lam", "--kernel-width")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="also write comparison.json, tables and figures here")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of tables")
    parser.set_defaults(handler=run)


def attack_config(args: argparse.Namespace) -> RobustnessConfig:
    """``--grid`` with every attack flag given on the command line applied."""
    given = {name: getattr(args, name) for name in ATTACK_FLAGS if getattr(args, name) is not None}
    return RobustnessConfig.grid(args.grid, **given)


def run(args: argparse.Namespace) -> int:
    config = attack_config(args)
    sources, summary_run_id = load_models(args, args.checkpoints)  # checks the tracking server before torch loads

    from ..metrics import class_balanced_probe
    from ..robustness.comparison import compare_models
    from ..robustness.mlflow_logging import log_comparison, write_artifacts
    from ..robustness.sources import evaluation_data, logged_complexities
    from ..robustness.tables import report
    from ..studies.storage import redact_url
    from ..training import resolve_device

    device = resolve_device(args.device)
    data = evaluation_data(sources)
    complexity = complexity_source = probe = None
    if args.checkpoints or args.remeasure:
        per_class = args.probe_per_class if args.probe_per_class is not None else sources[0].config.probe_per_class
        chosen = class_balanced_probe(data.y_train, per_class=per_class, seed=config.seed)
        probe = (data.x_train[chosen], data.y_train[chosen])
    else:
        complexity, complexity_source = logged_complexities(sources)
    print(f"evaluating {len(sources)} models on {config.n_samples} test samples (--grid {args.grid}); "
          f"attack runs per model: {', '.join(config.attacks)} over their epsilons, "
          f"{', '.join(config.min_norm_attacks) or 'no minimum-norm attack'}", file=sys.stderr, flush=True)
    result = compare_models(
        {s.name: s.model.to(device) for s in sources}, data.x_test, data.y_test, config,
        probe=probe, complexity_key=args.complexity_key,
        complexity_kwargs={"estimator": args.estimator, "kernel_width": args.kernel_width},
        run_ids={s.name: s.run_id for s in sources if s.run_id is not None},
        complexity=complexity, complexity_source=complexity_source, progress=not args.no_progress,
    )
    print(result.to_json() if args.json else f"complexity (bits): {result.complexity_source}\n\n{report(result)}")
    if args.output_dir is not None:
        write_artifacts(result, args.output_dir)
    from_mlflow = any(s.run_id is not None for s in sources)
    if from_mlflow and not args.no_log:
        tracking_uri = resolve_tracking_uri(args.tracking_uri)
        run_id = log_comparison(result, tracking_uri, summary_run_id=summary_run_id)
        if not args.json:
            print(f"\nlogged to MLflow ({redact_url(tracking_uri)}): per-model metrics on each run, comparison on run {run_id}")
    return 0
