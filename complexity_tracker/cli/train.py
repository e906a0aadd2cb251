"""``complexity-tracker train``: train one configured model with complexity tracking on.

Everything is validated, and a tracking server checked, before torch and MLflow are imported, so
bad input and an unreachable server fail at once and leave no run behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..config import DATASETS, ESTIMATOR_NAMES, LOSS_METHODS, MODELS, RENAMED_FIELDS, ConfigError, RunConfig
from ..tracking_store import DEFAULT_EXPERIMENT, check_tracking_server, resolve_tracking_uri
from . import hints

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
    "kernel_width": {"type": float, "help": "kernel width of the kde estimator and loss (automatic: 0.01 vectors, 0.04 maps)"},
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
    parser.add_argument("--run-name", default=None,
                        help="MLflow run name (default: model, depth x width, lam, seed and a random suffix)")
    parser.add_argument("--no-log-model", action="store_true", help="do not store the trained weights in the run")
    parser.add_argument("--save", type=Path, default=None, metavar="PATH",
                        help="also write a checkpoint for `measure` and `evaluate --checkpoints`")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _parse_override(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    if not sep or name not in known | RENAMED_FIELDS.keys():
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
    save = _checkpoint_path(args.save) if args.save is not None else None
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_server(tracking_uri)

    from ..experiment import run_experiment
    from ..training import save_checkpoint

    result = run_experiment(
        config,
        tracking_uri=tracking_uri,
        experiment_name=args.experiment,
        run_name=args.run_name,
        log_model=not args.no_log_model,
        progress=not args.quiet,
    )
    if save is not None:
        save_checkpoint(save, result.model, config)
    final = result.history[-1]
    print(f"run id: {result.run_id}")
    print(
        f"epoch {final['epoch']}: train_loss {final['train_loss']:.4f}, test_loss {final['test_loss']:.4f}, "
        f"test_acc {final['test_acc']:.4f}"
    )
    if result.final_report is not None and result.final_report.network is not None:
        network = result.final_report.network
        print(f"network complexity: H {network.H:.3f} bits, I(X;S;Y) {network.I_XSY:.3f} bits, TC {network.TC:.3f} bits")
    run_path = f"#/experiments/{result.experiment_id}/runs/{result.run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        print(f"browse: {hints.tracking_uri(tracking_uri).rstrip('/')}/{run_path}")
    else:
        print(f"browse: {hints.command('ui', '--backend-store-uri', hints.tracking_uri(tracking_uri))}")
        print(f"        then open http://127.0.0.1:5000/{run_path}")
    if save is not None:
        print(f"checkpoint: {save}\nmeasure: {hints.command('measure', save)}")
    note = hints.credential_note([tracking_uri])
    if note:
        print(note)
    return 0


def _checkpoint_path(path: Path) -> Path:
    """The absolute ``--save`` path, refused before training when it cannot be written."""
    path = path.absolute()
    if path.is_dir():
        raise ConfigError(f"--save {path} is a folder; give a file name, e.g. --save {path / 'model.pt'}")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise ConfigError(f"--save {path}: cannot write to {path.parent}; create the folder or choose another path")
    return path
