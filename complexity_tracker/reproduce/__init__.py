"""Reproduce the paper's claims: run the studies of ``studies/paper/``, judge each claim by an
explicit criterion, and write a Markdown report (also logged on a ``reproduce`` MLflow run).

Run it with ``complexity-tracker reproduce [--quick]``; see docs/reproduction.md.
"""

from .claims import ClaimResult
from .criteria import NOT_REPRODUCED, PARTLY, REPRODUCED, VERDICTS
from .report import ReportContext, render_markdown, write_report
from .runner import CLAIMS, ReproduceSettings, ReproductionIncompleteError, ReproductionOutcome, reproduce
from .sizing import FULL, QUICK, TINY, Sizing, get_sizing

__all__ = [
    "CLAIMS",
    "FULL",
    "NOT_REPRODUCED",
    "PARTLY",
    "QUICK",
    "REPRODUCED",
    "TINY",
    "VERDICTS",
    "ClaimResult",
    "ReportContext",
    "ReproduceSettings",
    "ReproductionIncompleteError",
    "ReproductionOutcome",
    "Sizing",
    "get_sizing",
    "render_markdown",
    "reproduce",
    "write_report",
]
