"""Plain-text tables of a :class:`ComparisonResult` for the terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..text_table import format_cell, format_table
from .comparison import ComparisonResult
from .correlation import EXACT_MAX_N


def summary_table(result: ComparisonResult) -> str:
    """One row per model (ordered by complexity): clean and mean robust accuracy, minimal L2, transfer."""
    attacks = list(result.config.attacks)
    headers = ["model", result.complexity_key + " (bits)", "clean_acc", *[f"mean_acc {a}" for a in attacks],
               "min_l2 median", "min_l2 mean", "found", "failed", "transfer_out", "transfer_in"]
    rows = []
    for model in result.models:
        measures = model.measures()
        rows.append([
            model.name, model.complexity[result.complexity_key], measures["clean_acc"],
            *[measures[f"robust_acc_mean/{a}"] for a in attacks],
            measures.get("min_l2_median", math.nan), measures.get("min_l2_mean", math.nan),
            int(measures.get("min_l2_n_success", 0)), int(measures.get("min_l2_n_failed", 0)),
            measures.get("transfer_out", math.nan), measures.get("transfer_in", math.nan),
        ])
    return format_table(headers, rows, "Robustness by model (simplest first; accuracies are fractions, L2 in input units)")


def accuracy_tables(result: ComparisonResult) -> str:
    """Robust accuracy against epsilon, one table per attack."""
    tables = []
    for attack in result.config.attacks:
        grid = result.config.eps_grid(attack)
        rows = [[m.name, m.robustness.clean_accuracy, *[m.robustness.robust_accuracy[attack][e] for e in grid]]
                for m in result.models]
        tables.append(format_table(["model", "clean", *[f"eps={e:g}" for e in grid]], rows,
                                   f"Robust accuracy under {attack}"))
    return "\n\n".join(tables)


def transfer_table(result: ComparisonResult) -> str:
    """The transfer matrix (rows: source, columns: target) and its asymmetry summary."""
    matrix = result.transfer
    if matrix is None:
        return "Transfer matrix: needs at least 2 models"
    rows = [[f"{name} ->", *matrix.rates[i]] for i, name in enumerate(matrix.names)]
    table = format_table(["source \\ target", *matrix.names], rows,
                         f"Transfer success rate ({matrix.attack}, eps={matrix.eps:g}; diagonal = white-box)")
    return (f"{table}\nsimple -> complex (upper triangle mean): {format_cell(matrix.simple_to_complex)}\n"
            f"complex -> simple (lower triangle mean): {format_cell(matrix.complex_to_simple)}\n"
            f"asymmetry: {format_cell(matrix.asymmetry)}")


def correlation_table(result: ComparisonResult, metrics: Sequence[str] = ("H", "I_XSY"),
                      summary_only: bool = True) -> str:
    """Spearman rho, p-value and n for complexity values of ``metrics`` (per layer and network).

    With ``summary_only`` the per-epsilon accuracies are left out (they are in the full result).
    """
    rows = [
        [c.complexity, c.measure, c.rho, c.p_value, c.n]
        for c in result.correlations
        if c.complexity.split("/", 1)[0] in metrics and not (summary_only and c.measure.startswith("robust_acc/"))
    ]
    return format_table(["complexity (bits)", "robustness measure", "spearman rho", "p-value", "n"], rows,
                        f"Complexity vs robustness across models (Spearman; two-sided p, exact over all n! orderings "
                        f"for n <= {EXACT_MAX_N})")


def report(result: ComparisonResult) -> str:
    """All tables, separated by blank lines."""
    return "\n\n".join([summary_table(result), accuracy_tables(result), transfer_table(result),
                        correlation_table(result)])
