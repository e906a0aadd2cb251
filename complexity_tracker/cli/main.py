"""Entry point of ``complexity-tracker``: each sub-command lives in its own module.

A sub-command module exposes ``configure(parser)``, which adds its arguments and sets ``handler``
(a function taking the parsed arguments and returning an exit code).  Only the module of the
command being run is imported, so ``--help`` answers at once and ``study run`` can start its
helper workers before it loads torch and MLflow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ComplexityTrackerError

#: Sub-command name -> (module under complexity_tracker.cli, one-line help).
COMMANDS = {
    "measure": ("measure", "measure the complexity of saved models (checkpoint files)"),
    "train": ("train", "train one model with per-layer complexity tracked in MLflow"),
    "ui": ("ui", "browse tracked runs in the MLflow UI"),
    "study": ("study", "run and inspect Optuna studies (lambda, depth, complexity ceiling, train-test gap)"),
    "dashboard": ("dashboard", "browse a study's trials in optuna-dashboard"),
    "evaluate": ("evaluate", "adversarial robustness and transferability of trained models across complexity levels"),
    "reproduce": ("reproduce", "reproduce the paper's claims (studies under studies/paper/) and write a verdict report"),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``complexity-tracker``, with every argument of the command named in ``argv``
    (the other commands are listed with their help only)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="complexity-tracker",
        description="Transformation complexity of ReLU networks: measure, track, search, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(f"{__package__}.{module}").configure(subparser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` (without the program name) parsed into the command's arguments and ``handler``."""
    return build_parser(argv).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return int(args.handler(args) or 0)
    except ComplexityTrackerError as exc:
        print(f"complexity-tracker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"complexity-tracker {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
