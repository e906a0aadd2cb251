"""Aligned plain-text tables for the terminal (``measure``, ``study status``, ``evaluate``)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def format_cell(value: object, float_format: str = ".4g") -> str:
    """``None`` as ``-``, non-finite floats as ``n/a``, other floats with ``float_format``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, float_format) if math.isfinite(value) else "n/a"
    return str(value)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "", float_format: str = ".4g"
) -> str:
    """Columns padded to their widest cell, under a header and a rule; columns of numbers (``None``
    allowed) are right-aligned."""
    cells = [[format_cell(v, float_format) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = ([title] if title else []) + [line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(out)
