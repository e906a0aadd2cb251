"""Evidence for the paper's robustness claims on digits, written into docs/robustness.md.

Trains MLPs (3 hidden ReLU layers of 128) on the embedded digits set: without complexity loss,
with the ``marginal`` and the ``ebm`` complexity loss at 4 levels of lambda each, and with
PGD-Linf adversarial training (eps 0.1), 2 seeds each (20 models), then compares them with
:func:`compare_models`:

1. adversarial training lowers complexity (the paper's per-layer table);
2. larger lambda gives a larger minimal L2 adversarial perturbation;
3. adversarial examples transfer from simple to complex networks better than the reverse.

About 5-10 minutes on 2 shared CPU cores.  Usage::

    .venv/bin/python scripts/robustness_evidence.py [--output docs/robustness.md] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import re
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.metrics import class_balanced_probe
from complexity_tracker.models import build_model
from complexity_tracker.robustness import RobustnessConfig, compare_models
from complexity_tracker.robustness.correlation import spearman
from complexity_tracker.robustness.tables import format_table
from complexity_tracker.training import seed_everything, train

BASE = RunConfig(model="mlp", depth=3, width=128, epochs=15, n_train=1297, n_test=500, probe_per_class=100)
LOSS_METHODS = ("marginal", "ebm")
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3)
SEEDS = (0, 1)
AT_EPS = 0.1
EVALUATION = RobustnessConfig(
    attacks=("pgd_linf", "pgd_l2"), linf_eps=(0.05, 0.1, 0.2), l2_eps=(0.25, 0.5, 1.0),
    min_norm_attacks=("deepfool", "fab_l2"), transfer_attack="pgd_linf", transfer_eps=0.1, n_samples=300, seed=0,
)
#: The paper's per-layer complexity, normal / adversarially trained (poster table, layers 1/2/3).
PAPER_AT_TABLE = {
    "RN-20": ((3.845, 2.979), (6.079, 4.485), (6.671, 6.573)),
    "RN-32": ((2.718, 2.507), (5.660, 4.370), (6.817, 6.786)),
    "RN-44": ((3.938, 1.600), (5.426, 3.374), (6.395, 6.828)),
    "LeNet": ((7.624, 5.358), (7.417, 1.216), (10.966, 10.949)),
}
START, END = "<!-- robustness-evidence:start -->", "<!-- robustness-evidence:end -->"


def model_name(method: str, lam: float, seed: int) -> str:
    """``plain-s0`` (lambda 0), ``AT-s0`` (adversarially trained), ``marginal-1e-4-s0``..."""
    return f"{method}-s{seed}" if method in ("plain", "AT") else f"{method}-{lam:.0e}-s{seed}".replace("e-0", "e-")


def run_configs() -> dict[str, RunConfig]:
    configs = {model_name("plain", 0.0, seed): BASE.replace(seed=seed) for seed in SEEDS}
    configs.update({model_name("AT", 0.0, seed): BASE.replace(adversarial_training=True, adv_eps=AT_EPS, seed=seed)
                    for seed in SEEDS})
    configs.update({model_name(method, lam, seed): BASE.replace(loss_method=method, lam=lam, seed=seed)
                    for method in LOSS_METHODS for lam in LAMBDAS for seed in SEEDS})
    return configs


def train_models(configs: dict[str, RunConfig]) -> dict[str, torch.nn.Module]:
    models = {}
    for name, config in configs.items():
        seed_everything(config.seed, config.deterministic)
        data = load_data(config)
        models[name] = train(build_model(config, data.input_shape, data.n_classes), data, config, progress=False).model
        print(f"trained {name}", flush=True)
    return models


def verdict(rho: float, p_value: float, expected_sign: int) -> str:
    if not math.isfinite(rho):
        return "undetermined (constant values or too few models)"
    if rho * expected_sign > 0:
        return "reproduces (p < 0.05)" if p_value < 0.05 else "same direction, not significant (p >= 0.05)"
    return "does not reproduce (opposite direction" + (", p < 0.05)" if p_value < 0.05 else ", not significant)")


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def at_section(result, layers: list[str]) -> list[str]:
    by_name = {m.name: m for m in result.models}
    rows, lower, clear = [], 0, 0
    for index, layer in enumerate([*layers, "network"]):
        normal = [by_name[model_name("plain", 0, s)].complexity[f"H/{layer}"] for s in SEEDS]
        adversarial = [by_name[model_name("AT", 0, s)].complexity[f"H/{layer}"] for s in SEEDS]
        change = float(np.mean(adversarial) - np.mean(normal))
        spread = max(np.std(normal), np.std(adversarial))
        lower += int(change < 0)
        clear += int(change < 0 and abs(change) > 2 * spread)
        paper = " / ".join(f"{v[index][0]:.2f}→{v[index][1]:.2f}" for v in PAPER_AT_TABLE.values()) if index < 3 else "-"
        rows.append([layer, paper, mean_sd(normal), mean_sd(adversarial), change])
    acc = {kind: [by_name[model_name(kind, 0, s)].measures()["robust_acc/pgd_linf/0.1"] for s in SEEDS]
           for kind in ("plain", "AT")}
    table = format_table(["layer", "paper normal→AT H (RN-20 / RN-32 / RN-44 / LeNet)", "ours normal H",
                          "ours AT H", "AT - normal"], rows)
    rows_total = len(layers) + 1
    if clear == rows_total:
        result_text = "reproduces"
    elif lower > rows_total / 2:
        result_text = (f"same direction, but only {clear} of these changes exceed twice the spread over seeds: "
                       "weak evidence")
    else:
        result_text = "does not reproduce"
    return [
        "### 1. Adversarial training lowers complexity",
        "",
        "H(Σ_l) in bits on a class-balanced probe of 100 training samples per class (kernel estimate, "
        "ceiling log2 1000 = 9.97), mean ± sd over seeds; AT = PGD-Linf adversarial training at eps 0.1. "
        "The paper's layers 1/2/3 are beside our hidden layers 1/2/3.",
        "",
        "```", table, "```", "",
        f"Sanity check that AT worked: robust accuracy under PGD-20 Linf 0.1 is {mean_sd(acc['plain'])} (normal) vs "
        f"{mean_sd(acc['AT'])} (AT).",
        "",
        f"**Result:** AT lowered H in {lower} of {rows_total} rows (layers + network); {result_text}.",
    ]


def sweep(method: str) -> dict[str, float]:
    """Model name -> lambda of one loss method's sweep, the lambda = 0 (plain) models included."""
    return {model_name("plain" if lam == 0 else method, lam, s): lam for lam in (0.0, *LAMBDAS) for s in SEEDS}


def lambda_section(result) -> list[str]:
    by_name = {m.name: m for m in result.models}
    rows, verdicts = [], []
    for method in LOSS_METHODS:
        for lam in (0.0, *LAMBDAS):
            group = [by_name[model_name("plain" if lam == 0 else method, lam, s)] for s in SEEDS]
            measures = [m.measures() for m in group]
            rows.append([
                method, "-inf (none)" if lam == 0 else f"{math.log10(lam):.1f}",
                mean_sd([m.complexity["H/network"] for m in group]),
                mean_sd([v["clean_acc"] for v in measures]),
                mean_sd([v["min_l2_median"] for v in measures]),
                mean_sd([v["min_l2_mean"] for v in measures]),
                sum(int(v["min_l2_n_failed"]) for v in measures),
                mean_sd([v["robust_acc/pgd_linf/0.1"] for v in measures]),
                mean_sd([v["robust_acc/pgd_l2/0.5"] for v in measures]),
            ])
        lams = sweep(method)
        rho, p_value, n = spearman(list(lams.values()), [by_name[name].measures()["min_l2_median"] for name in lams])
        verdicts.append(f"`{method}`: Spearman(λ, min-L2 median) over {n} models: rho = {rho:.3f}, "
                        f"p = {p_value:.3g} → **{verdict(rho, p_value, +1)}**.")
    h_rho, h_p, h_n = spearman([m.complexity["H/network"] for m in result.models],
                               [m.measures()["min_l2_median"] for m in result.models])
    table = format_table(["loss", "log10 λ", "H/network (bits)", "clean acc", "min-L2 median", "min-L2 mean",
                          "failed", "PGD Linf 0.1 acc", "PGD L2 0.5 acc"], rows)
    return [
        "### 2. Larger λ gives a larger minimal L2 perturbation",
        "",
        "Complexity losses `marginal` (Σ_l C_l, the upper bound of H) and `ebm` (the paper's energy model) "
        "with weight λ; minimal L2 perturbation = smallest successful ||x_adv − x||₂ of DeepFool and FAB-L2 per "
        "correctly classified test sample (inputs in [0, 1]^64), median/mean over successes, failures counted "
        "apart; mean ± sd over seeds (the λ = 0 rows are the same models in both sweeps).",
        "",
        "```", table, "```", "",
        *[f"- {line}" for line in verdicts],
        f"- Spearman(H/network, min-L2 median) over all {h_n} models: rho = {h_rho:.3f}, p = {h_p:.3g} "
        "(the paper's claim implies a negative rho).",
    ]


def transfer_section(result) -> list[str]:
    matrix = result.transfer
    index = {name: i for i, name in enumerate(matrix.names)}
    lines = [
        "### 3. Adversarial examples transfer from simple to complex better than the reverse",
        "",
        f"PGD-20 Linf {matrix.eps:g} examples crafted on each source and classified by each target, success rate "
        "over samples both classify correctly. Within each λ sweep (10 models) the models are ordered by their "
        "measured H/network; each pair (simpler i, more complex j) gives rate(i→j) − rate(j→i), tested with a "
        "Wilcoxon signed-rank test. The table averages the rates over seeds per λ level (rows: source, "
        "columns: target, simplest = largest λ first).",
    ]
    for method in LOSS_METHODS:
        keep = sorted(index[name] for name in sweep(method))  # matrix order = complexity order
        rates = matrix.rates[np.ix_(keep, keep)]
        upper = rates[np.triu_indices(len(keep), 1)]
        lower = rates.T[np.triu_indices(len(keep), 1)]
        differences = upper - lower
        p_value = float(wilcoxon(differences).pvalue) if np.any(differences != 0) else float("nan")
        mean_difference = float(np.mean(differences))
        text = ("reproduces (p < 0.05)" if mean_difference > 0 and p_value < 0.05
                else "same direction, not significant" if mean_difference > 0
                else "does not reproduce: complex → simple transfers better"
                + (" (p < 0.05)" if p_value < 0.05 else " (not significant)"))
        levels = [*reversed(LAMBDAS), 0.0]
        members = {lam: [index[model_name("plain" if lam == 0 else method, lam, s)] for s in SEEDS] for lam in levels}
        rows = [[f"{'-inf' if a == 0 else f'{math.log10(a):.1f}'} ->",
                 *[float(np.mean(matrix.rates[np.ix_(members[a], members[b])])) for b in levels]] for a in levels]
        headers = ["source log10 λ \\ target", *["-inf" if b == 0 else f"{math.log10(b):.1f}" for b in levels]]
        lines += ["", f"`{method}` sweep:", "", "```", format_table(headers, rows), "```", "",
                  f"simple → complex (upper triangle mean) = {upper.mean():.3f}; complex → simple (lower triangle "
                  f"mean) = {lower.mean():.3f}; mean paired difference over {len(differences)} pairs = "
                  f"{mean_difference:+.3f} (Wilcoxon p = {p_value:.3g}) → **{text}**."]
    lines += ["", f"All {len(matrix.names)} models together (AT included): asymmetry {matrix.asymmetry:+.3f}."]
    return lines


def correlation_section(result, layers: list[str]) -> list[str]:
    keys = [f"H/{layer}" for layer in layers] + ["H/network", "I_XSY/network"]
    measures = ("clean_acc", "min_l2_median", "robust_acc_mean/pgd_linf", "robust_acc_mean/pgd_l2",
                "transfer_out", "transfer_in")
    rows = [[c.complexity, c.measure, c.rho, c.p_value, c.n] for c in result.correlations
            if c.complexity in keys and c.measure in measures]
    return ["### Complexity vs robustness across all models (Spearman)", "", "```",
            format_table(["complexity (bits)", "measure", "rho", "p-value", "n"], rows), "```"]


def write_markdown(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{body}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + "## Evidence: the paper's robustness claims on digits\n\n" \
            + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/robustness.md"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, fastest for tiny MLPs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    models = train_models(run_configs())
    trained = time.perf_counter() - start
    data = load_data(BASE)
    probe = class_balanced_probe(data.y_train, per_class=BASE.probe_per_class, seed=0)
    result = compare_models(models, data.x_test, data.y_test, EVALUATION,
                            probe=(data.x_train[probe], data.y_train[probe]))
    layers = [r[2:] for r in result.models[0].complexity if r.startswith("H/") and r != "H/network"]
    elapsed = time.perf_counter() - start
    body = "\n".join([
        f"Generated by `scripts/robustness_evidence.py` on {date.today()} in {elapsed / 60:.1f} min "
        f"({trained / 60:.1f} min training) on {torch.get_num_threads()} torch thread(s) of a shared 2-core machine. "
        f"MLP 64-128-128-128-10 on digits ({BASE.n_train} train / {BASE.n_test} test, {BASE.epochs} epochs, "
        f"SGD lr {BASE.lr}), seeds {list(SEEDS)}; attacks on {EVALUATION.n_samples} test samples, seed "
        f"{EVALUATION.seed}.",
        "",
        *at_section(result, layers), "",
        *lambda_section(result), "",
        *transfer_section(result), "",
        *correlation_section(result, layers),
    ])
    write_markdown(args.output, body)
    print(body)


if __name__ == "__main__":
    main()
