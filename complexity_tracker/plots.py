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


def plot_layer_complexity(
    rows: Iterable[Mapping[str, Any]],
    layer: str,
    *,
    stochastic: bool = False,
    metrics: tuple[str, ...] = ("H", "I_XSY", "TC"),
) -> Figure:
    """Complexity of one layer against the epoch.

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
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    epochs = [r["epoch"] for r in selected]
    for name in names:
        axes.plot(epochs, [r[name] for r in selected], marker="o", markersize=3, label=COMPLEXITY_LABELS.get(name, name))
    axes.set_xlabel("epoch")
    axes.set_ylabel("bits")
    axes.set_title(f"complexity of {layer} (d = {selected[-1].get('d', '?')}, N = {selected[-1].get('N', '?')})")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure
