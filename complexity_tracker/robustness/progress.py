"""Progress of a robustness evaluation: tqdm bars on stderr, one per model, one step per attack run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm


def progress_bar(name: str, total: int, enabled: bool) -> tqdm:
    """A bar of ``total`` attack runs labelled ``name`` (a no-op bar when not ``enabled``)."""
    return tqdm(total=total, desc=name, unit="attack", file=sys.stderr, disable=not enabled, leave=True,
                dynamic_ncols=True)


@contextlib.contextmanager
def step(bar: tqdm | None, label: str) -> Iterator[None]:
    """Show ``label`` (the attack running) on ``bar`` and advance it by one when the block ends."""
    if bar is not None:
        bar.set_postfix_str(label)
    yield
    if bar is not None:
        bar.update()
