"""The paper's claims, one function each: our measurements from finished studies against the paper's
statement and numbers, and a verdict computed by the criteria of :mod:`.criteria`.

Every function takes the studies' :class:`~.collect.TrialRecord` lists (and, for robustness, the
attack results of :mod:`.robust_eval`) plus the folder for figures, and returns a
:class:`ClaimResult`.  Complexity values are in bits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..plots import plot_heatmap, plot_lambda_sweep
from ..robustness.correlation import spearman
from . import criteria
from .collect import TrialRecord
from .figures import plot_grouped_curves, plot_grouped_scatter, plot_paired_bars, save
from .robust_eval import LambdaRobustness


@dataclass
class ClaimResult:
    """One claim of the paper and how our runs compare.

    Attributes:
        name: short identifier (file names, MLflow keys).
        title: section heading.
        paper_statement: what the paper claims.
        paper_numbers: the paper's numbers (Markdown), or what it reports instead of numbers.
        our_measurements: table rows (column -> value), with seeds and spread (mean ± std).
        verdict: one of ``criteria.VERDICTS``.
        reason: one honest line saying why.
        criterion: how the verdict was decided (thresholds included).
        figures: PNG files.
        numbers: the key quantities behind the verdict (logged as MLflow metrics).
    """

    name: str
    title: str
    paper_statement: str
    paper_numbers: str
    our_measurements: list[dict[str, Any]]
    verdict: str
    reason: str
    criterion: str
    figures: list[Path] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in criteria.VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {criteria.VERDICTS}")


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``"mean ± std"`` (sample std; just the value for one run)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def group_by(records: Sequence[TrialRecord], key: Callable[[TrialRecord], Hashable]) -> dict[Any, list[TrialRecord]]:
    groups: dict[Any, list[TrialRecord]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return dict(groups)


def _seeds(records: Sequence[TrialRecord]) -> str:
    return ",".join(str(r.config.seed) for r in records)


def _require(records: Sequence[TrialRecord], study: str) -> None:
    if not records:
        raise ValueError(f"study {study!r} has no finished trial to evaluate; run it first")


_CHANGE = f"{criteria.MIN_CHANGE_BITS:g} bits"
_FRACTIONS = (f"reproduced when, for every model, at least {criteria.REPRODUCED_FRACTION:.0%} of the seeds show it; "
              f"partly when at least {criteria.PARTLY_FRACTION:.0%} of all runs (or every run of one model) do")


# ------------------------------------------------------------------------------ training phenomena

def phenomenon1(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """Stacked networks: H(S) of the whole network first falls, then rises during training."""
    _require(records, "phenomenon1_stacked")
    by_model = group_by(records, lambda r: r.config.model)
    rows, hits = [], {}
    for model, runs in by_model.items():
        shapes = [criteria.curve_shape(*r.curve("H/network")) for r in runs]
        hits[model] = [criteria.falls_then_rises(*r.curve("H/network")) for r in runs]
        info = [criteria.curve_shape(*r.curve("I_XSY/network")) for r in runs]
        rows.append({
            "model": model,
            "seeds": _seeds(runs),
            "H epoch 0": mean_std([s.start for s in shapes]),
            "H min": mean_std([s.minimum for s in shapes]),
            "epoch of min": ",".join(str(s.argmin_epoch) for s in shapes),
            "H last": mean_std([s.end for s in shapes]),
            "I(S;Y) 0 / min / last": f"{mean_std([s.start for s in info])} / {mean_std([s.minimum for s in info])}"
                                     f" / {mean_std([s.end for s in info])}",
            "test acc": mean_std([r.final["test_acc"] for r in runs], 3),
            "fall then rise": f"{sum(hits[model])}/{len(runs)}",
        })
    verdict = criteria.fraction_verdict(hits)
    shown = sum(sum(h) for h in hits.values())
    minima = [criteria.curve_shape(*r.curve("H/network")).argmin_epoch for r in records]
    last_epoch = max(r.config.epochs for r in records)
    figure = plot_grouped_curves(
        {m: [r.curve("H/network") for r in runs] for m, runs in by_model.items()},
        title="Phenomenon 1: H(S) of stacked networks over training (one line per seed)",
    )
    return ClaimResult(
        name="phenomenon1",
        title="Phenomenon 1: stacked networks, complexity first falls, then rises",
        paper_statement="For most traditional stacked DNNs the transformation complexity first decreases, then "
                        "increases during training.",
        paper_numbers="MLP 784-1024-256-128-64-10 on MNIST (d = 1472, N = 2000): H(S) ≈ 10.85 at epoch 0, "
                      "≈ 7.35 near epoch 55, ≈ 10.65 at epoch 500; I(S;Y) ≈ 3.28 → 1.5 → 3.25 (notebook).",
        our_measurements=rows,
        verdict=verdict,
        reason=f"{shown} of {len(records)} runs fall by >= {_CHANGE} and rise again by >= {_CHANGE}; the minimum "
               f"lies at epochs {min(minima)}-{max(minima)} of {last_epoch}",
        criterion=f"A run shows the phenomenon when H(S) of the whole network falls at least {_CHANGE} below its "
                  f"epoch-0 value and ends at least {_CHANGE} above its minimum; {_FRACTIONS}.",
        figures=[save(figure, figure_dir / "phenomenon1.png")],
        numbers={"fraction_showing": shown / len(records)},
    )


def phenomenon2(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """Residual networks: H(S) rises early in training, then saturates."""
    _require(records, "phenomenon2_residual")
    by_depth = group_by(records, lambda r: f"{r.config.model}-{r.config.depth}")
    rows, hits = [], {}
    for name, runs in by_depth.items():
        shapes = [criteria.curve_shape(*r.curve("H/network")) for r in runs]
        hits[name] = [criteria.rises_then_saturates(*r.curve("H/network")) for r in runs]
        rows.append({
            "model": name,
            "seeds": _seeds(runs),
            "H epoch 0": mean_std([s.start for s in shapes]),
            "H min (epoch)": f"{mean_std([s.minimum for s in shapes])} ({','.join(str(s.argmin_epoch) for s in shapes)})",
            "H mid-training": mean_std([s.half for s in shapes]),
            "H last": mean_std([s.end for s in shapes]),
            "test acc": mean_std([r.final["test_acc"] for r in runs], 3),
            "rise then saturate": f"{sum(hits[name])}/{len(runs)}",
        })
    verdict = criteria.fraction_verdict(hits)
    shown = sum(sum(h) for h in hits.values())
    dips = sum(criteria.curve_shape(*r.curve("H/network")).drop > criteria.MIN_CHANGE_BITS for r in records)
    figure = plot_grouped_curves(
        {m: [r.curve("H/network") for r in runs] for m, runs in by_depth.items()},
        title="Phenomenon 2: H(S) of residual MLPs over training (one line per seed)",
    )
    return ClaimResult(
        name="phenomenon2",
        title="Phenomenon 2: residual networks, complexity rises early, then saturates",
        paper_statement="For residual DNNs with skip connections the complexity increases monotonically in the "
                        "early stage of training and saturates later.",
        paper_numbers="Curves only (no table); ResMLP on CIFAR-10 in the public code.",
        our_measurements=rows,
        verdict=verdict,
        reason=f"{shown} of {len(records)} runs rise and saturate; {dips} of {len(records)} first fall by more "
               f"than {_CHANGE} (a stacked-network dip)",
        criterion=f"A run shows the phenomenon when H(S) ends at least {_CHANGE} above its epoch-0 value, never "
                  f"falls more than {_CHANGE} below it, and changes over the second half of training by at most "
                  f"max({_CHANGE}, {criteria.SATURATION_SHARE:.0%} of the total rise); {_FRACTIONS}.",
        figures=[save(figure, figure_dir / "phenomenon2.png")],
        numbers={"fraction_showing": shown / len(records), "fraction_dipping": dips / len(records)},
    )


def _randomness_gap(record: TrialRecord) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, H(S) - I(X;S) of the whole network) = H(S|X), bits."""
    epochs, h = record.curve("H/network")
    _, i_xs = record.curve("I_XS/network")
    return epochs, h - i_xs


def phenomenon3(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """Networks with extra randomness: H(S) - I(X;S) shrinks during training."""
    _require(records, "phenomenon3_stochastic")
    by_model = group_by(records, lambda r: r.config.model)
    rows, hits = [], {}
    for model, runs in by_model.items():
        gaps = [_randomness_gap(r) for r in runs]
        shapes = [criteria.curve_shape(*g) for g in gaps]
        hits[model] = [criteria.shrinks(*g) for g in gaps]
        rows.append({
            "model": model,
            "seeds": _seeds(runs),
            "H - I(X;S) epoch 0": mean_std([s.start for s in shapes]),
            "H - I(X;S) last": mean_std([s.end for s in shapes]),
            "H last": mean_std([r.final["H/network"] for r in runs]),
            "I(X;S) last": mean_std([r.final["I_XS/network"] for r in runs]),
            "test acc": mean_std([r.final["test_acc"] for r in runs], 3),
            "shrinks": f"{sum(hits[model])}/{len(runs)}",
        })
    verdict = criteria.fraction_verdict(hits)
    shown = sum(sum(h) for h in hits.values())
    figure = plot_grouped_curves(
        {m: [_randomness_gap(r) for r in runs] for m, runs in by_model.items()},
        title="Phenomenon 3: H(S) - I(X;S) = H(S|X) of the whole network (one line per seed)",
    )
    showing = [m for m, h in hits.items() if np.mean(h) >= criteria.REPRODUCED_FRACTION]
    return ClaimResult(
        name="phenomenon3",
        title="Phenomenon 3: extra randomness, H(S) - I(X;S) shrinks",
        paper_statement="For DNNs with additional uncertainty (e.g. VAE sampling, dropout) the difference "
                        "H(S) - I(X;S) gradually decreases during training.",
        paper_numbers="Curves only (no table).",
        our_measurements=rows,
        verdict=verdict,
        reason=f"{shown} of {len(records)} runs shrink the gap by >= {_CHANGE}"
               + (f" (majority for {', '.join(showing)})" if showing else "")
               + "; the estimate of H(S|X) is capped at log2(10 passes) = 3.32 bits",
        criterion=f"A run shows the phenomenon when H(S) - I(X;S) of the whole network (10 stochastic passes per "
                  f"probe input) ends at least {_CHANGE} below its epoch-0 value and its Spearman rho against the "
                  f"epoch is <= {criteria.SHRINK_RHO}; {_FRACTIONS}.",
        figures=[save(figure, figure_dir / "phenomenon3.png")],
        numbers={"fraction_showing": shown / len(records)},
    )


# ------------------------------------------------------------------------------ complexity vs entanglement

def entanglement(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """H(S_l) and TC(S_l) are negatively correlated; the largest |H + TC - C_l| of the estimates is reported."""
    _require(records, "phenomenon1/2/3")
    points: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    max_gap = 0.0
    for record in records:
        for layer in record.layers():
            for row in record.history:
                if f"H/{layer}" not in row:
                    continue
                h, tc, c = row[f"H/{layer}"], row[f"TC/{layer}"], row[f"C/{layer}"]
                max_gap = max(max_gap, abs(h + tc - c))
                group = f"{record.config.model}-{record.config.depth} {layer}" if record.config.model == "resmlp" \
                    else f"{record.config.model} {layer}"
                points[group][0].append(h)
                points[group][1].append(tc)
    rows, negatives, rhos = [], 0, []
    for group, (hs, tcs) in points.items():
        rho, p_value, n = spearman(hs, tcs)
        significant = bool(np.isfinite(rho) and rho < 0 and p_value < criteria.ALPHA)
        negatives += significant
        rhos.append(rho)
        rows.append({"model / layer": group, "points": n, "Spearman rho(H, TC)": f"{rho:.2f}",
                     "p": f"{p_value:.2g}", "negative (p<0.05)": "yes" if significant else "no"})
    share = negatives / len(points) if points else float("nan")
    verdict = criteria.share_verdict(share, criteria.REPRODUCED_FRACTION, criteria.PARTLY_FRACTION)
    figure = plot_grouped_scatter(
        {g: p for g, p in points.items()}, title="H(S_l) vs TC(S_l) over epochs and seeds, per layer",
        xlabel="H(S_l) (bits)", ylabel="TC(S_l) (bits)",
    )
    return ClaimResult(
        name="entanglement",
        title="Complexity vs entanglement: H(S_l) and TC(S_l) negatively correlated",
        paper_statement="The complexity H(S_l) and the entanglement TC(S_l) of a layer are negatively correlated; "
                        "H(S_l) + TC(S_l) = C_l.",
        paper_numbers="Proof plus a verification plot (no table).",
        our_measurements=rows,
        verdict=verdict,
        reason=f"rho(H, TC) < 0 with p < {criteria.ALPHA} in {negatives} of {len(points)} (model, layer) groups "
               f"(median rho {np.nanmedian(rhos):.2f}); |H + TC - C| reaches {max_gap:.2f} bits: H and TC are "
               "estimated separately, so the paper's identity holds for true entropies, not for the estimates",
        criterion=f"Per (model, layer), Spearman rho between H(S_l) and TC(S_l) over all measured epochs and "
                  f"seeds of the phenomenon studies; reproduced when at least {criteria.REPRODUCED_FRACTION:.0%} "
                  f"of the groups are negative with p < {criteria.ALPHA}, partly when at least "
                  f"{criteria.PARTLY_FRACTION:.0%} are.",
        figures=[save(figure, figure_dir / "entanglement.png")],
        numbers={"share_negative": share, "median_rho": float(np.nanmedian(rhos)), "max_additivity_gap": max_gap},
    )


# ------------------------------------------------------------------------------ ceiling

#: Test accuracy below which a binary parity task counts as not learned (chance is 0.5).
LEARNED_ACCURACY = 0.6


def ceiling(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """Final H(S) over depth x task order n: monotonic in neither."""
    _require(records, "ceiling")
    depths = sorted({r.config.depth for r in records})
    orders = sorted({r.config.task_order for r in records})
    cells = group_by(records, lambda r: (r.config.depth, r.config.task_order))
    mean = np.full((len(depths), len(orders)), np.nan)
    learned = np.zeros_like(mean, dtype=bool)
    stds = []
    for (depth, order), runs in cells.items():
        values = [r.final["H/network"] for r in runs]
        mean[depths.index(depth), orders.index(order)] = float(np.mean(values))
        learned[depths.index(depth), orders.index(order)] = np.mean([r.final["test_acc"] for r in runs]) >= LEARNED_ACCURACY
        if len(values) > 1:
            stds.append(float(np.std(values, ddof=1)))
    judged = np.where(learned, mean, np.nan)
    tol = max(criteria.MIN_CHANGE_BITS, 2 * float(np.median(stds))) if stds else criteria.MIN_CHANGE_BITS
    over_depth = [criteria.has_decrease(judged[:, j], tol) for j in range(len(orders))]
    over_order = [criteria.has_decrease(judged[i, :], tol) for i in range(len(depths))]
    share_depth, share_order = float(np.mean(over_depth)), float(np.mean(over_order))
    verdict = criteria.combine([criteria.share_verdict(s, 0.5, 1e-9) for s in (share_depth, share_order)])
    unlearned = int((~learned).sum())
    rows = []
    for depth in depths:
        row: dict[str, Any] = {"depth": depth}
        for order in orders:
            runs = cells.get((depth, order), [])
            row[f"n={order}"] = (f"{mean_std([r.final['H/network'] for r in runs])} "
                                 f"(acc {np.mean([r.final['test_acc'] for r in runs]):.2f})") if runs else "n/a"
        rows.append(row)
    figure = plot_heatmap(mean, depths, orders, title="final H(S) of the network (mean over seeds)",
                          row_name="hidden layers (depth)", column_name="task order n")
    seeds = sorted({r.config.seed for r in records})
    return ClaimResult(
        name="ceiling",
        title="The ceiling: complexity is not monotonic in depth nor in task order",
        paper_statement="The complexity of a DNN did not increase monotonically with the network depth, nor with "
                        "the complexity (order n) of the task.",
        paper_numbers="Curves only (no table).",
        our_measurements=rows,
        verdict=verdict,
        reason=f"H falls with depth somewhere for {sum(over_depth)}/{len(orders)} task orders and with n somewhere "
               f"for {sum(over_order)}/{len(depths)} depths (drop > {tol:.2f} bits); {unlearned} of {len(cells)} "
               f"cells stayed near chance (test acc < {LEARNED_ACCURACY}) and are skipped",
        criterion=f"Mean final H(S) per (depth, n) cell over seeds {seeds}, over the cells whose networks learned the "
                  f"task (mean test acc >= {LEARNED_ACCURACY}; chance is 0.5). A curve (over depth at fixed n, or over "
                  f"n at fixed depth) is not monotonically increasing when some step between learned cells drops by "
                  f"more than max({_CHANGE}, 2 x median seed std) = {tol:.2f} bits. Reproduced when at least half "
                  "the curves of both axes drop somewhere; not reproduced when no curve of either axis does; partly "
                  "otherwise.",
        figures=[save(figure, figure_dir / "ceiling.png")],
        numbers={"share_depth_nonmonotonic": share_depth, "share_order_nonmonotonic": share_order},
    )


# ------------------------------------------------------------------------------ complexity loss

_LAMBDA_TABLE = """| log10 lambda | H(S) | I(S;Y) | test loss - train loss | test loss |
|---|---|---|---|---|
| none | 10.95 | 3.32 | 1.73 | 1.89 |
| -5 | 10.9 | 3.29 | 1.67 | 1.85 |
| -4.5 | 10.4 | 2.9 | 1.60 | 1.80 |
| -4 | 6.6 | 0.83 | 1.41 | 1.66 |
| -3.5 | 2.1 | 0.2 | 1.12 | 1.44 |
| -3 | 0.5 | 0.08 | 0.90 | 1.28 |
| -2 | 0 | 0 | 0.78 | 1.24 |

(ResMLP-10 on CIFAR-10, energy-model loss, several seeds per lambda; notebook.)"""


def _log10_lam(record: TrialRecord) -> float | None:
    return None if record.config.lam == 0 else float(np.log10(record.config.lam))


def _per_lambda_rows(records: Sequence[TrialRecord],
                     columns: Callable[[list[TrialRecord]], dict[str, str]]) -> list[dict[str, Any]]:
    """One row per lambda (ascending): log10 lambda, seeds, final H(S) and ``columns(runs)``."""
    by_lam = group_by(records, lambda r: r.config.lam)
    return [
        {"log10 lambda": "none" if lam == 0 else f"{np.log10(lam):g}", "seeds": _seeds(by_lam[lam]),
         "H(S)": mean_std([r.final["H/network"] for r in by_lam[lam]]), **columns(by_lam[lam])}
        for lam in sorted(by_lam)
    ]


def complexity_loss(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """Larger lambda: lower complexity and a smaller test-train loss gap."""
    _require(records, "complexity_loss")
    rows = _per_lambda_rows(records, lambda runs: {
        "I(S;Y)": mean_std([r.final["I_XSY/network"] for r in runs]),
        "test - train loss": mean_std([r.final["loss_gap"] for r in runs], 3),
        "test loss": mean_std([r.final["test_loss"] for r in runs], 3),
        "test acc": mean_std([r.final["test_acc"] for r in runs], 3),
    })
    lams = [r.config.lam for r in records]
    rho_h, p_h, n = spearman(lams, [r.final["H/network"] for r in records])
    rho_gap, p_gap, n_gap = spearman(lams, [r.final["loss_gap"] for r in records])
    parts = [criteria.correlation_verdict(rho_h, p_h, n, -1), criteria.correlation_verdict(rho_gap, p_gap, n_gap, -1)]
    figure = plot_lambda_sweep(
        [(_log10_lam(r), r.final) for r in records],
        {"H/network": "H(S) (bits)", "loss_gap": "test - train loss (nats)", "test_loss": "test loss (nats)"},
        title="complexity loss: lambda vs complexity and loss gap (one point per seed)",
    )
    method = records[0].config.loss_method if records[0].config.lam else next(
        (r.config.loss_method for r in records if r.config.lam), "none")
    return ClaimResult(
        name="complexity_loss",
        title="The complexity loss lowers complexity and the test-train loss gap",
        paper_statement="Adding lambda * sum_l H(S_l) to the task loss learns a DNN of lower complexity and reduces "
                        "the gap between the testing loss and the training loss.",
        paper_numbers=_LAMBDA_TABLE,
        our_measurements=rows,
        verdict=criteria.combine(parts),
        reason=f"Spearman(lambda, H) = {rho_h:.2f} (p = {p_h:.2g}) -> {parts[0]}; "
               f"Spearman(lambda, gap) = {rho_gap:.2f} (p = {p_gap:.2g}) -> {parts[1]}",
        criterion=f"Over all runs (lambda = 0 ranked lowest), Spearman rho of lambda against final H(S) and against "
                  f"the final test - train loss; each part is reproduced when rho <= -{criteria.STRONG_RHO} with "
                  f"p < {criteria.ALPHA} over at least {criteria.MIN_CORRELATION_POINTS} runs, partly when rho < 0; the "
                  "claim is reproduced when both parts are. "
                  f"Loss method here: {method!r} (the paper: its energy model).",
        figures=[save(figure, figure_dir / "complexity_loss.png")],
        numbers={"rho_lambda_H": rho_h, "rho_lambda_gap": rho_gap},
    )


# ------------------------------------------------------------------------------ robustness

_AT_TABLE = """| model | layer 1 normal / AT | layer 2 normal / AT | layer 3 normal / AT |
|---|---|---|---|
| RN-20 | 3.845 / 2.979 | 6.079 / 4.485 | 6.671 / 6.573 |
| RN-32 | 2.718 / 2.507 | 5.660 / 4.370 | 6.817 / 6.786 |
| RN-44 | 3.938 / 1.600 | 5.426 / 3.374 | 6.395 / 6.828 |
| LeNet | 7.624 / 5.358 | 7.417 / 1.216 | 10.966 / 10.949 |

(poster; 11 of the 12 pairs are lower after adversarial training)"""

#: Share of (model, layer) pairs lower after adversarial training needed for "reproduced" / "partly"
#: (the paper's table: 11 of 12).
AT_REPRODUCED_SHARE = 0.75
AT_PARTLY_SHARE = 0.5


def adversarial_training(records: Sequence[TrialRecord], figure_dir: Path) -> ClaimResult:
    """Adversarially trained networks have lower per-layer complexity than normally trained ones."""
    _require(records, "robustness")
    by_model = group_by(records, lambda r: r.config.model)
    rows, labels, normal_bars, at_bars = [], [], ([], []), ([], [])
    lower = total = 0
    for model, runs in by_model.items():
        normal = [r for r in runs if not r.config.adversarial_training]
        trained = [r for r in runs if r.config.adversarial_training]
        if not normal or not trained:
            continue
        for layer in [*normal[0].layers(), "network"]:
            key = f"H/{layer}"
            a = [r.final[key] for r in normal]
            b = [r.final[key] for r in trained]
            is_lower = float(np.mean(b)) < float(np.mean(a))
            lower += is_lower
            total += 1
            row = {"model": model, "layer": layer, "seeds normal / AT": f"{_seeds(normal)} / {_seeds(trained)}",
                   "H normal": mean_std(a),
                   "H adversarial": mean_std(b), "AT lower": "yes" if is_lower else "no"}
            if layer == "network":
                row["test acc normal / adversarial"] = (f"{mean_std([r.final['test_acc'] for r in normal], 3)} / "
                                                        f"{mean_std([r.final['test_acc'] for r in trained], 3)}")
            rows.append(row)
            labels.append(f"{model} {layer}")
            for bars, values in ((normal_bars, a), (at_bars, b)):
                bars[0].append(float(np.mean(values)))
                bars[1].append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    share = lower / total if total else float("nan")
    figure = plot_paired_bars(labels, {"normal": normal_bars, "adversarial training": at_bars},
                              title="final H(S_l): normal vs adversarial training (mean ± std over seeds)")
    return ClaimResult(
        name="adversarial_training",
        title="Adversarial training lowers the per-layer complexity",
        paper_statement="DNNs with low transformation complexity usually have high adversarial robustness; "
                        "adversarially trained networks have lower complexity.",
        paper_numbers=_AT_TABLE,
        our_measurements=rows,
        verdict=criteria.share_verdict(share, AT_REPRODUCED_SHARE, AT_PARTLY_SHARE),
        reason=f"H is lower after adversarial training in {lower} of {total} (model, layer) pairs",
        criterion=f"Per (model, gating layer and whole network), compare the mean final H over seeds of normal and "
                  f"PGD-adversarially trained runs; reproduced when at least {AT_REPRODUCED_SHARE:.0%} of the pairs "
                  f"are lower after adversarial training (paper: 11 of 12), partly from {AT_PARTLY_SHARE:.0%}.",
        figures=[save(figure, figure_dir / "adversarial_training.png")],
        numbers={"share_lower": share},
    )


def lambda_perturbation(evaluation: LambdaRobustness, figure_dir: Path) -> ClaimResult:
    """Larger lambda: larger minimal L2 adversarial perturbation."""
    records = evaluation.records
    _require(records, "complexity_loss")
    rows = _per_lambda_rows(records, lambda runs: {
        "median min L2": mean_std([evaluation.min_l2[r.number] for r in runs], 3),
        "attacked / fooled": ", ".join(f"{evaluation.attacked[r.number]}/{evaluation.fooled[r.number]}" for r in runs),
    })
    lams = [r.config.lam for r in records]
    norms = [evaluation.min_l2[r.number] for r in records]
    rho, p_value, n = spearman(lams, norms)
    rho_h, p_h, _ = spearman([r.final["H/network"] for r in records], norms)
    figure = plot_lambda_sweep(
        [(_log10_lam(r), {"min_l2": evaluation.min_l2[r.number]}) for r in records],
        {"min_l2": "median minimal L2 perturbation"},
        title=f"lambda vs minimal L2 perturbation ({evaluation.attack})",
    )
    return ClaimResult(
        name="lambda_perturbation",
        title="Larger complexity-loss weight, larger minimal adversarial perturbation",
        paper_statement="The minimal L2 norm of adversarial perturbations increases with the weight lambda of "
                        "the complexity loss.",
        paper_numbers="Curve only (no table).",
        our_measurements=rows,
        verdict=criteria.correlation_verdict(rho, p_value, n, +1),
        reason=f"Spearman(lambda, median minimal L2) = {rho:.2f} (p = {p_value:.2g}, n = {n}); "
               f"Spearman(H, minimal L2) = {rho_h:.2f} (p = {p_h:.2g})",
        criterion=f"Per trained model of the complexity-loss study, the median over correctly classified test "
                  f"samples of the smallest successful L2 perturbation found by {evaluation.attack}; reproduced when "
                  f"Spearman rho(lambda, norm) >= {criteria.STRONG_RHO} with p < {criteria.ALPHA} over at least "
                  f"{criteria.MIN_CORRELATION_POINTS} models, partly when rho > 0.",
        figures=[save(figure, figure_dir / "lambda_perturbation.png")],
        numbers={"rho_lambda_min_l2": rho, "rho_H_min_l2": rho_h},
    )


#: Transfer asymmetry (simple -> complex minus complex -> simple) needed for "reproduced".
TRANSFER_MARGIN = 0.02


def transferability(evaluation: LambdaRobustness, figure_dir: Path) -> ClaimResult:
    """Adversarial examples of simple networks transfer to complex ones better than the reverse."""
    matrices = evaluation.transfer
    if not matrices:
        raise ValueError("no transfer matrix was computed; the complexity-loss study needs at least 2 models per seed")
    rows, asymmetries, pair_wins, pairs = [], [], 0, 0
    for seed, matrix in sorted(matrices.items()):
        n = len(matrix.names)
        wins = [matrix.rates[i, j] > matrix.rates[j, i] for i in range(n) for j in range(i + 1, n)
                if np.isfinite(matrix.rates[i, j]) and np.isfinite(matrix.rates[j, i])]
        pair_wins += sum(wins)
        pairs += len(wins)
        asymmetries.append(matrix.asymmetry)
        rows.append({"seed": seed, "models (simplest first)": ", ".join(matrix.names),
                     "simple -> complex": f"{matrix.simple_to_complex:.3f}",
                     "complex -> simple": f"{matrix.complex_to_simple:.3f}",
                     "asymmetry": f"{matrix.asymmetry:+.3f}", "pairs simple wins": f"{sum(wins)}/{len(wins)}"})
    mean_asymmetry = float(np.mean(asymmetries))
    share = pair_wins / pairs if pairs else float("nan")
    if mean_asymmetry > TRANSFER_MARGIN and share >= criteria.REPRODUCED_FRACTION:
        verdict = criteria.REPRODUCED
    elif mean_asymmetry > 0:
        verdict = criteria.PARTLY
    else:
        verdict = criteria.NOT_REPRODUCED
    first = matrices[min(matrices)]
    figure = plot_heatmap(first.rates, first.names, first.names,
                          title=f"transfer rate, seed {min(matrices)} (row: source, column: target)",
                          row_name="source (simplest at bottom)", column_name="target", value_name="fooling rate")
    return ClaimResult(
        name="transferability",
        title="Adversarial examples of simple networks transfer better to complex ones than the reverse",
        paper_statement="Adversarial perturbations of simple DNNs transfer to complex DNNs, while those of "
                        "complex DNNs do not transfer well to simple DNNs.",
        paper_numbers="Qualitative (no table).",
        our_measurements=rows,
        verdict=verdict,
        reason=f"mean asymmetry {mean_asymmetry:+.3f} over {len(matrices)} seed(s); simple source wins "
               f"{pair_wins} of {pairs} model pairs",
        criterion=f"Models of one seed of the complexity-loss study, ordered by final H(S); examples crafted by "
                  f"{first.attack} (eps = {first.eps:g}) on each model, fooling rate on every other model (over "
                  f"samples both classify correctly). Reproduced when the mean asymmetry (simple -> complex minus "
                  f"complex -> simple) exceeds {TRANSFER_MARGIN} and the simpler source wins at least "
                  f"{criteria.REPRODUCED_FRACTION:.0%} of the pairs; partly when the asymmetry is positive.",
        figures=[save(figure, figure_dir / "transferability.png")],
        numbers={"transfer_asymmetry": mean_asymmetry, "share_pairs_simple_wins": share},
    )
