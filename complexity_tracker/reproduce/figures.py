"""Figures of the reproduction report that ``complexity_tracker.plots`` has no shape for; saved as small PNGs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

#: Resolution of the saved PNGs (small enough to commit).
DPI = 80


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at :data:`DPI` and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def plot_grouped_curves(
    groups: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    *,
    title: str,
    ylabel: str = "bits",
    xlabel: str = "epoch",
) -> Figure:
    """Curves of several runs, one colour per group (e.g. model), one line per run (seed)."""
    figure = Figure(figsize=(6, 3.6), layout="constrained")
    axes = figure.add_subplot()
    for index, (group, curves) in enumerate(groups.items()):
        for run, (xs, ys) in enumerate(curves):
            axes.plot(xs, ys, color=f"C{index}", alpha=0.8, linewidth=1.2, label=group if run == 0 else None)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def plot_grouped_scatter(
    groups: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Figure:
    """Scatter of (x, y) points, one colour per group."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for index, (group, (xs, ys)) in enumerate(groups.items()):
        axes.scatter(xs, ys, s=8, alpha=0.6, color=f"C{index % 10}", label=group)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6, ncol=2)
    return figure


def plot_paired_bars(
    labels: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    ylabel: str = "bits",
) -> Figure:
    """Bars per label for each series (``name -> (means, stds)``), side by side with error bars."""
    figure = Figure(figsize=(max(5, 0.9 * len(labels) + 2), 3.6), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    for index, (name, (means, stds)) in enumerate(series.items()):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        axes.bar(positions, means, width, yerr=stds, capsize=2, label=name)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)
    return figure
