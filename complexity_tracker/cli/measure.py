"""``complexity-tracker measure``: the complexity of a saved model's gating layers on a probe."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("measure", help="measure the complexity of a network on the digits probe")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
