"""``complexity-tracker train``: train one configured model with complexity tracking on."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from mlflow.tracking import MlflowClient

from ..config import DATASETS, ESTIMATOR_NAMES, LOSS_METHODS, MODELS, ConfigError, RunConfig
from ..experiment import run_experiment
from ..tracking import DEFAULT_EXPERIMENT
from ..tracking_store import resolve_tracking_uri

#: Options with their own flag; every other RunConfig field is reachable through ``--set``.
FLAGS: dict[str, dict[str, Any]] = {
    "model": {"choices": MODELS},
    "depth": {"type": int},
    "width": {"type": int},
    "dataset": {"choices": DATASETS},
    "data_dir": {"help": "folder holding MNIST/CIFAR-10 files (they are never downloaded)"},
    "lam": {"type": float, "help": "complexity-loss weight (linear)"},
    "loss_method": {"choices": LOSS_METHODS},
    "epochs": {"type": int},
    "batch_size": {"type": int},
    "lr": {"type": float},
    "seed": {"type": int},
    "device": {"help": "auto, cpu, cuda, cuda:1, ..."},
    "probe_per_class": {"type": int, "help": "probe samples per class"},
    "estimator": {"choices": ESTIMATOR_NAMES},
    "measure_every": {"type": int, "help": "measure complexity every k epochs"},
}


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = RunConfig()
    parser.description = (
        "Train one configured model; complexity and losses go to MLflow every epoch."
    )
    for name, options in FLAGS.items():
        options = dict(options)
        description = options.pop("help", name.replace("_", " "))
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{description} (default: {getattr(defaults, name)})", **options
        )
    parser.add_argument("--log10-lam", type=float, default=None, help="complexity-loss weight as log10 (overrides --lam)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other RunConfig field, VALUE as JSON (e.g. --set weight_decay=5e-4 --set adversarial_training=true)",
    )
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT})")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    parser.add_argument("--no-log-model", action="store_true", help="do not store the trained model in the run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _parse_override(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    if not sep or name not in known:
        raise ConfigError(f"--set expects FIELD=VALUE with FIELD one of {', '.join(sorted(known))}; got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig named by the flags (unset flags keep RunConfig's defaults)."""
    values: dict[str, Any] = dict(_parse_override(text) for text in args.overrides)
    values.update({name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None})
    if args.log10_lam is not None:
        values.pop("lam", None)
        values["log10_lam"] = args.log10_lam
    return RunConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    result = run_experiment(
        config,
        tracking_uri=tracking_uri,
        experiment_name=args.experiment,
        run_name=args.run_name,
        log_model=not args.no_log_model,
        progress=not args.quiet,
    )
    final = result.history[-1]
    print(f"run id: {result.run_id}")
    print(
        f"epoch {final['epoch']}: train_loss {final['train_loss']:.4f}, test_loss {final['test_loss']:.4f}, "
        f"test_acc {final['test_acc']:.4f}"
    )
    if result.final_report is not None and result.final_report.network is not None:
        network = result.final_report.network
        print(f"network complexity: H {network.H:.3f} bits, I(X;S;Y) {network.I_XSY:.3f} bits, TC {network.TC:.3f} bits")
    experiment_id = MlflowClient(tracking_uri).get_run(result.run_id).info.experiment_id
    run_path = f"#/experiments/{experiment_id}/runs/{result.run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        print(f"browse: {tracking_uri.rstrip('/')}/{run_path}")
    else:
        print(f"browse: complexity-tracker ui --backend-store-uri {tracking_uri}")
        print(f"        then open http://127.0.0.1:5000/{run_path}")
    return 0
