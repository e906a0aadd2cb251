"""Matplotlib figures of a :class:`ComparisonResult` (Agg backend, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .comparison import ComparisonResult  # noqa: E402
from .config import BUDGETED_ATTACKS  # noqa: E402

#: Markers cycled after every 10 models (tab10 has 10 colours).
MARKERS = ("o", "s", "^", "D", "v")

SUMMARY_MEASURES = ("clean_acc", "min_l2_median", "transfer_out", "transfer_in")
#: Axis label (with units) of each robustness measure.
MEASURE_LABELS = {
    "clean_acc": "clean accuracy (fraction)",
    "min_l2_median": "median minimal L2 perturbation\n(input units)",
    "min_l2_mean": "mean minimal L2 perturbation\n(input units)",
    "transfer_out": "its examples fool the others\n(fraction)",
    "transfer_in": "others' examples fool it\n(fraction)",
}


def measure_label(measure: str) -> str:
    """Axis label of a robustness measure, with its unit."""
    if measure.startswith("robust_acc_mean/"):
        return f"mean robust accuracy, {measure.split('/', 1)[1]}\n(fraction)"
    return MEASURE_LABELS.get(measure, measure)


def plot_robustness_vs_complexity(result: ComparisonResult, measures: tuple[str, ...] | None = None) -> Figure:
    """One panel per robustness measure against the ordering complexity (bits), with Spearman's rho.

    Each model has its own colour and marker, named once in the figure's legend (no text next to
    the points, which would overlap where models have similar complexity).
    """
    first = result.models[0].measures()
    measures = measures or tuple(
        m for m in (*SUMMARY_MEASURES, *(f"robust_acc_mean/{a}" for a in result.config.attacks)) if m in first
    )
    columns = min(4, len(measures))
    rows = -(-len(measures) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    x = [m.complexity[result.complexity_key] for m in result.models]
    rhos = {(c.complexity, c.measure): c for c in result.correlations}
    styles = [(plt.cm.tab10(i % 10), MARKERS[(i // 10) % len(MARKERS)]) for i in range(len(result.models))]
    for ax, measure in zip(axes.flat, measures):
        for xi, model, (colour, marker) in zip(x, result.models, styles):
            ax.scatter([xi], [model.measures().get(measure, np.nan)], color=colour, marker=marker, s=36,
                       label=f"{model.name} ({xi:.2f} bits)")
        corr = rhos.get((result.complexity_key, measure))
        ax.set_title(f"rho={corr.rho:.2f} p={corr.p_value:.2g} n={corr.n}" if corr else "", fontsize=8)
        ax.set_xlabel(f"{result.complexity_key} (bits)", fontsize=8)
        ax.set_ylabel(measure_label(measure), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(5, len(labels)), fontsize=7,
               title="model (complexity)", title_fontsize=7)
    return fig


def plot_accuracy_vs_epsilon(result: ComparisonResult) -> Figure:
    """Robust accuracy against epsilon, one panel per attack, one curve per model coloured by complexity."""
    attacks = [a for a in result.config.attacks if len(result.config.eps_grid(a)) > 1] or list(result.config.attacks)
    fig, axes = plt.subplots(1, len(attacks), figsize=(4 * len(attacks) + 1, 3.2), squeeze=False,
                             layout="constrained")
    complexities = np.array([m.complexity[result.complexity_key] for m in result.models], dtype=float)
    low, high = float(np.nanmin(complexities)), float(np.nanmax(complexities))
    scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(low, high if high > low else low + 1),
                                         cmap="viridis")
    colours = scale.to_rgba(complexities)
    for ax, attack in zip(axes[0], attacks):
        grid = [0.0, *result.config.eps_grid(attack)]
        for model, colour in zip(result.models, colours):
            curve = model.robustness.robust_accuracy[attack]
            ax.plot(grid, [model.robustness.clean_accuracy, *curve.values()], marker="o", color=colour,
                    label=f"{model.name} ({model.complexity[result.complexity_key]:.2f} bits)")
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel(f"epsilon ({BUDGETED_ATTACKS[attack]}, input units)", fontsize=8)
        ax.set_ylabel("accuracy (fraction)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.colorbar(scale, ax=axes[0].tolist(), label=f"{result.complexity_key} (bits)")
    return fig


def plot_transfer_matrix(result: ComparisonResult) -> Figure:
    """Heatmap of transfer success rates (rows: source, columns: target), simplest model first."""
    matrix = result.transfer
    if matrix is None:
        raise ValueError("the result has no transfer matrix (it needs at least 2 models)")
    n = len(matrix.names)
    fig, ax = plt.subplots(figsize=(2.6 + 0.7 * n, 1.6 + 0.6 * n), layout="constrained")
    image = ax.imshow(matrix.rates, vmin=0, vmax=1, cmap="magma")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix.rates[i, j]:.2f}", ha="center", va="center", fontsize=7, color="cyan")
    ax.set_xticks(range(n), matrix.names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), matrix.names, fontsize=7)
    ax.set_xlabel("target (complexity increases ->)", fontsize=8)
    ax.set_ylabel("source", fontsize=8)
    ax.set_title(f"{matrix.attack} eps={matrix.eps:g}; asymmetry {matrix.asymmetry:+.3f}", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fooling rate (fraction)")
    return fig
