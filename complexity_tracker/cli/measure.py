"""``complexity-tracker measure``: per-layer complexity of saved models on their dataset's probe."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..config import ESTIMATOR_NAMES, TC_METHOD_NAMES
from ..text_table import format_table
from .model_sources import add_run_arguments, load_models
from .renamed import add_renamed_flag

if TYPE_CHECKING:
    from ..metrics import ComplexityReport

COLUMNS = ("layer", "d", "N", "H", "I_XS", "I_XSY", "C", "TC", "additivity_gap")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure H, I(X;S), I(X;S;Y), C and TC (bits) of every gating layer of each checkpoint (or model of "
        "an MLflow run or study), on a class-balanced probe of the training split of the checkpoint's dataset."
    )
    parser.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="files written by `train --save` or save_checkpoint")
    add_run_arguments(parser, parser.add_argument_group("or models of MLflow runs").add_mutually_exclusive_group())
    parser.add_argument("--per-class", type=int, default=None,
                        help="probe samples per class (default: the checkpoint's probe_per_class)")
    parser.add_argument("--probe-seed", type=int, default=None,
                        help="seed of the probe sample (default: the model's data_seed, as its training run drew it)")
    parser.add_argument("--estimator", choices=ESTIMATOR_NAMES, default="kde", help="entropy estimator (default: kde)")
    parser.add_argument("--kernel-width", type=float, default=None,
                        help="kde kernel width (default: 0.01 vectors, 0.04 maps)")
    add_renamed_flag(parser, "--lam", "--kernel-width")
    parser.add_argument("--tc-method", choices=TC_METHOD_NAMES, default=None,
                        help="total-correlation estimator: kde (the paper's density ratio) or plugin (exact where "
                             "patterns repeat) (default: the model's tc_method, kde)")
    parser.add_argument("--layers", nargs="+", default=None, help="layer names or glob patterns (default: all)")
    parser.add_argument("--stochastic", action="store_true", help="keep dropout/sampling on; estimate H(S|X)")
    parser.add_argument("--repeats", type=int, default=10, help="forward passes per input with --stochastic")
    parser.add_argument("--json", action="store_true", help="print one JSON object per checkpoint instead of a table")
    parser.set_defaults(handler=run)


def format_report(report: ComplexityReport) -> str:
    """A fixed-width table of a report, values in bits."""
    rows = [(r.name, r.d, r.N, *(getattr(r, m) for m in COLUMNS[3:])) for r in report.records]
    return format_table(COLUMNS, rows, float_format=".3f")


def run(args: argparse.Namespace) -> int:
    if args.checkpoints and not (args.runs or args.study):
        from ..training import load_checkpoint

        models = [({"checkpoint": path}, path, *load_checkpoint(path)) for path in args.checkpoints]
    else:  # weights rebuilt from runs without running code, as evaluate does; the server is checked first
        models = [({"run_id": s.run_id, "name": s.name}, f"run {s.run_id} ({s.name})", s.model, s.config)
                  for s in load_models(args, args.checkpoints)[0]]
    from ..data import load_data
    from ..metrics import class_balanced_probe, measure_complexity

    for source, path, model, config in models:
        data = load_data(config)
        per_class = args.per_class if args.per_class is not None else config.probe_per_class
        seed = args.probe_seed if args.probe_seed is not None else config.data_seed
        probe = class_balanced_probe(data.y_train, per_class=per_class, seed=seed)
        report = measure_complexity(
            model, data.x_train[probe], data.y_train[probe], layers=args.layers, estimator=args.estimator,
            stochastic=args.stochastic, repeats=args.repeats, kernel_width=args.kernel_width,
            tc_method=args.tc_method or config.tc_method,
        )
        if args.json:
            print(json.dumps({**source, "layers": report.to_records()}))
        else:
            print(f"{path}: {config.model} depth {config.depth} width {config.width} on {config.dataset}, "
                  f"estimator {args.estimator}, TC {args.tc_method or config.tc_method}, values in bits "
                  "(additivity_gap = H + TC - C)")
            print(format_report(report))
    return 0
