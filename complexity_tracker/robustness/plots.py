"""Matplotlib figures of a :class:`ComparisonResult` (Agg backend, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .comparison import ComparisonResult  # noqa: E402

SUMMARY_MEASURES = ("clean_acc", "min_l2_median", "transfer_out", "transfer_in")


def plot_robustness_vs_complexity(result: ComparisonResult, measures: tuple[str, ...] | None = None) -> Figure:
    """One panel per robustness measure against the ordering complexity (bits), with Spearman's rho."""
    first = result.models[0].measures()
    measures = measures or tuple(
        m for m in (*SUMMARY_MEASURES, *(f"robust_acc_mean/{a}" for a in result.config.attacks)) if m in first
    )
    columns = min(4, len(measures))
    rows = -(-len(measures) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    x = [m.complexity[result.complexity_key] for m in result.models]
    rhos = {(c.complexity, c.measure): c for c in result.correlations}
    for ax, measure in zip(axes.flat, measures):
        y = [m.measures().get(measure, np.nan) for m in result.models]
        ax.scatter(x, y)
        for xi, yi, model in zip(x, y, result.models):
            ax.annotate(model.name, (xi, yi), fontsize=6, alpha=0.7)
        corr = rhos.get((result.complexity_key, measure))
        ax.set_title(f"{measure}\nrho={corr.rho:.2f} p={corr.p_value:.2g} n={corr.n}" if corr else measure,
                     fontsize=8)
        ax.set_xlabel(f"{result.complexity_key} (bits)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_epsilon(result: ComparisonResult) -> Figure:
    """Robust accuracy against epsilon, one panel per attack, one curve per model coloured by complexity."""
    attacks = [a for a in result.config.attacks if len(result.config.eps_grid(a)) > 1] or list(result.config.attacks)
    fig, axes = plt.subplots(1, len(attacks), figsize=(4 * len(attacks), 3.2), squeeze=False)
    complexities = np.array([m.complexity[result.complexity_key] for m in result.models], dtype=float)
    span = np.nanmax(complexities) - np.nanmin(complexities) if len(complexities) else 0.0
    colours = plt.cm.viridis((complexities - np.nanmin(complexities)) / span if span > 0 else np.zeros_like(complexities))
    for ax, attack in zip(axes[0], attacks):
        grid = [0.0, *result.config.eps_grid(attack)]
        for model, colour in zip(result.models, colours):
            curve = model.robustness.robust_accuracy[attack]
            ax.plot(grid, [model.robustness.clean_accuracy, *curve.values()], marker="o", color=colour,
                    label=f"{model.name} ({model.complexity[result.complexity_key]:.2f} bits)")
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel("epsilon", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def plot_transfer_matrix(result: ComparisonResult) -> Figure:
    """Heatmap of transfer success rates (rows: source, columns: target), simplest model first."""
    matrix = result.transfer
    if matrix is None:
        raise ValueError("the result has no transfer matrix (it needs at least 2 models)")
    n = len(matrix.names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    image = ax.imshow(matrix.rates, vmin=0, vmax=1, cmap="magma")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix.rates[i, j]:.2f}", ha="center", va="center", fontsize=7, color="cyan")
    ax.set_xticks(range(n), matrix.names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), matrix.names, fontsize=7)
    ax.set_xlabel("target (complexity increases ->)", fontsize=8)
    ax.set_ylabel("source", fontsize=8)
    ax.set_title(f"{matrix.attack} eps={matrix.eps:g}; asymmetry {matrix.asymmetry:+.3f}", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
