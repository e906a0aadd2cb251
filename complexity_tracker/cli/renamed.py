"""Flags that were renamed: the old spelling fails with a one-line error naming the new one."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class _RenamedFlag(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} was renamed {self.new}: use {self.new}"
                     + (f" {values}" if values is not None else ""))


def add_renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Make ``old`` (hidden from ``--help``) fail with "old was renamed new"."""
    parser.add_argument(old, action=_RenamedFlag, new=new, dest=f"renamed_{old.lstrip('-').replace('-', '_')}")
