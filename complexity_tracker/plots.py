"""Matplotlib figures (no display needed: figures are built without pyplot, on the Agg canvas)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from matplotlib.figure import Figure

#: Line label of each complexity value (bits).
COMPLEXITY_LABELS = {
    "H": "H(S)",
    "I_XS": "I(X;S)",
    "I_XSY": "I(X;S;Y)",
    "TC": "TC(S)",
    "C": "C = sum h(p_i)",
}
#: Values drawn in a panel of their own: TC reaches many times the range of H and I(X;S;Y).
SEPARATE_PANEL = ("TC", "C")


def plot_layer_complexity(
    rows: Iterable[Mapping[str, Any]],
    layer: str,
    *,
    stochastic: bool = False,
    metrics: tuple[str, ...] = ("H", "I_XSY", "TC"),
) -> Figure:
    """Complexity of one layer against the epoch: H(S), I(X;S;Y) (and I(X;S)) in the top panel,
    TC(S) in its own panel below (it can be many times larger and would flatten the others).

    Args:
        rows: measured values, one mapping per (epoch, layer) with keys ``epoch``, ``layer`` and
            the metric names (as :meth:`ComplexityTracker.complexity_rows` returns them).
        layer: the layer to draw (``"network"`` for all layers together).
        stochastic: also draw I(X;S) (it equals H for a deterministic network).
        metrics: values to draw, in bits.
    """
    selected = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["epoch"])
    if not selected:
        raise ValueError(f"no measured values for layer {layer!r}")
    names = metrics + (("I_XS",) if stochastic and "I_XS" not in metrics else ())
    panels = [[n for n in names if n not in SEPARATE_PANEL], [n for n in names if n in SEPARATE_PANEL]]
    panels = [panel for panel in panels if panel]
    figure = Figure(figsize=(6, 2.4 + 2.0 * len(panels)), layout="constrained")
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    epochs = [r["epoch"] for r in selected]
    for axes, panel in zip(axes_list, panels):
        for name in panel:
            colour = f"C{names.index(name)}"
            axes.plot(epochs, [r[name] for r in selected], marker="o", markersize=3, color=colour,
                      label=COMPLEXITY_LABELS.get(name, name))
        axes.set_ylabel("bits")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    axes_list[-1].set_xlabel("epoch")
    figure.suptitle(f"complexity of {layer} (d = {selected[-1].get('d', '?')}, N = {selected[-1].get('N', '?')})")
    return figure


# ---------------------------------------------------------------------------- study figures
# (appended by the studies helper; used by complexity_tracker.studies.report)


def plot_heatmap(
    values: Any,
    row_labels: list[Any],
    column_labels: list[Any],
    *,
    title: str,
    row_name: str,
    column_name: str,
    value_name: str = "bits",
) -> Figure:
    """A matrix of values (e.g. network complexity over depth x task order n), cells annotated.

    Args:
        values: 2-D array ``(len(row_labels), len(column_labels))``; NaN cells are left blank.
    """
    import numpy as np

    matrix = np.asarray(values, dtype=float)
    figure = Figure(figsize=(1.2 + 0.9 * len(column_labels), 1.2 + 0.6 * len(row_labels)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="viridis", aspect="auto", origin="lower")
    axes.set_xticks(range(len(column_labels)), [str(c) for c in column_labels])
    axes.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    axes.set_xlabel(column_name)
    axes.set_ylabel(row_name)
    axes.set_title(title)
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                      color="black" if value > middle else "white")
    figure.colorbar(image, ax=axes, label=value_name)
    return figure


def plot_curves(
    series: Mapping[str, tuple[list[float], list[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "bits",
    legend_title: str | None = None,
) -> Figure:
    """One line per labelled ``(xs, ys)`` series (e.g. complexity per epoch for each depth)."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for label, (xs, ys) in series.items():
        axes.plot(xs, ys, marker="o", markersize=3, label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if series:
        axes.legend(title=legend_title, fontsize=8)
    return figure


def plot_lambda_sweep(
    points: Iterable[tuple[float | None, Mapping[str, float]]],
    metrics: Mapping[str, str],
    *,
    title: str = "complexity loss sweep",
) -> Figure:
    """Metrics against log10 lambda, one panel per metric, the mean per lambda joined by a line.

    Args:
        points: ``(log10_lambda, {metric: value})`` per run; ``None`` is lambda = 0, which has no
            log10: it is drawn in a narrow axis of its own left of the log10 axis, labelled "λ = 0".
        metrics: metric key -> axis label (e.g. ``{"loss_gap": "test - train loss (nats)"}``).
    """
    import numpy as np

    points = list(points)
    with_zero = any(p[0] is None for p in points)
    figure = Figure(figsize=(4.4 * len(metrics) + (0.6 * len(metrics) if with_zero else 0), 3.6),
                    layout="constrained")
    columns = [5, 1, 24] if with_zero else [1]
    grid = figure.add_gridspec(1, len(metrics) * len(columns),
                               width_ratios=columns * len(metrics), wspace=0.0)
    for index, (key, label) in enumerate(metrics.items()):
        first = index * len(columns)
        axes = figure.add_subplot(grid[0, first + len(columns) - 1])
        logs = [(p[0], p[1][key]) for p in points if key in p[1] and p[0] is not None]
        if logs:
            xs, ys = zip(*logs)
            axes.scatter(xs, ys, s=14, alpha=0.6, color="C0")
            means = sorted({x: float(np.mean([y for xx, y in logs if xx == x])) for x in xs}.items())
            axes.plot([m[0] for m in means], [m[1] for m in means], color="C1")
        axes.set_xlabel("log10 lambda")
        axes.grid(alpha=0.3)
        if with_zero:
            zero = figure.add_subplot(grid[0, first], sharey=axes)
            zeros = [p[1][key] for p in points if key in p[1] and p[0] is None]
            zero.scatter([0.0] * len(zeros), zeros, s=14, alpha=0.6, color="C0")
            if zeros:
                zero.plot([-0.4, 0.4], [float(np.mean(zeros))] * 2, color="C1")
            zero.set_xlim(-1, 1)
            zero.set_xticks([0.0], ["λ = 0"])
            zero.grid(alpha=0.3)
            zero.set_ylabel(label)
            zero.spines["right"].set_linestyle((0, (2, 2)))
            axes.tick_params(labelleft=False)
        else:
            axes.set_ylabel(label)
    figure.suptitle(title)
    return figure


def plot_pareto_front(
    values: Any,
    on_front: Any,
    names: tuple[str, str],
    *,
    labels: list[str] | None = None,
    title: str = "Pareto front",
) -> Figure:
    """Two objectives of every finished trial, the Pareto-optimal ones highlighted and joined.

    Args:
        values: array ``(n_trials, 2)`` of objective values.
        on_front: boolean mask ``(n_trials,)`` of the Pareto-optimal trials.
        labels: optional text per trial (e.g. its parameters), written next to front points.
    """
    import numpy as np

    values = np.asarray(values, dtype=float)
    on_front = np.asarray(on_front, dtype=bool)
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(values[~on_front, 0], values[~on_front, 1], s=16, color="0.6", label="trial")
    front = values[on_front]
    order = np.argsort(front[:, 0])
    axes.plot(front[order, 0], front[order, 1], marker="o", color="C3", label="Pareto front")
    if labels is not None:
        for (x, y), text in zip(values[on_front], np.asarray(labels, dtype=object)[on_front]):
            axes.annotate(str(text), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel(names[0])
    axes.set_ylabel(names[1])
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def plot_param_importances(importances: Mapping[str, Mapping[str, float]], *, title: str = "parameter importances") -> Figure:
    """Horizontal bars of each parameter's importance, one panel per objective (fractions summing to 1)."""
    figure = Figure(figsize=(4.5 * max(1, len(importances)), 3.2), layout="constrained")
    for index, (objective, values) in enumerate(importances.items()):
        axes = figure.add_subplot(1, max(1, len(importances)), index + 1)
        names = list(values)[::-1]
        axes.barh(names, [values[n] for n in names], color="C0")
        axes.set_xlabel("importance (fraction of the objective's variance, fANOVA)")
        axes.set_title(objective)
        axes.set_xlim(0, 1)
    figure.suptitle(title)
    return figure
