"""Entry point of ``complexity-tracker``: each sub-command lives in its own module.

A sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` (a function taking the parsed arguments and returning an exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ComplexityTrackerError
from . import dashboard, evaluate, measure, reproduce, study, train, ui  # noqa: F401

SUBCOMMAND_MODULES = [measure, train, ui, study, dashboard, evaluate, reproduce]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="complexity-tracker",
        description="Transformation complexity of ReLU networks: measure, track, search, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
