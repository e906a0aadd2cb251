"""Evidence for the complexity loss: a lambda sweep of mlp_mnist on mnist5k, for each loss method.

The paper's setting scaled to one CPU: the paper's MNIST MLP (784-1024-256-128-64-10) on 1,000
real MNIST training images (mnist5k), trained to over-fit (SGD, cosine schedule, batch 128), with
the complexity loss on all four gating layers every ``loss_every`` (10) steps.  For every method
(ebm, kde, marginal), lambda in the grid (0 included, shared by all methods since lambda = 0 is
the plain run) and every seed, it trains the network and measures on a fixed class-balanced probe
of the training images (the paper's kernel estimate, bits):

* H(S) of the penalised layers (all four concatenated: the "network" record, d = 1,472),
* I(S;Y) of the same (I(X;S;Y), equal to I(S;Y) for a deterministic network),
* test loss and the test - train loss gap (nats), test accuracy.

The grid is the paper's log10 lambda (per nat of its estimate) converted to our lambda per bit:
lambda = ln(2) * 10^k, so that a row applies the same trade-off as the official code at 10^k.

Prints a Markdown table (mean +- std over seeds) and, with --write, puts it into
docs/training.md between the lambda-sweep markers (``lambda-sweep-TAG`` with --tag), with the raw
per-run numbers in docs/lambda_sweep[_TAG].json.

Usage: python scripts/lambda_sweep.py [--seeds 1] [--epochs 60] [--n-train 1000] [--methods ebm,kde,marginal]
       [--log10-lams -5,-4.5,...] [--runs FILE.json] [--skip-plain] [--tag NAME] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.metrics import class_balanced_probe, measure_complexity
from complexity_tracker.models import build_model
from complexity_tracker.training import TrainingDivergedError, seed_everything, train

METHODS = ("ebm", "kde", "marginal")
#: log10 of the paper's lambda (per nat): its grid -5..-2, extended to -1 (our network has 1,472
#: penalised units against the paper's 4 x 3,072, so the same lambda weighs a smaller sum).
PAPER_LOG10_LAMBDAS = (-5.0, -4.5, -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0)
N_TEST = 1000
DOCS = Path(__file__).resolve().parent.parent / "docs"


def lam_per_bit(paper_log10_lam: float) -> float:
    """Our lambda (per bit) applying the same trade-off as the paper's 10^k per nat: ln(2) * 10^k."""
    return math.log(2.0) * 10.0**paper_log10_lam


def base_config(epochs: int, n_train: int) -> RunConfig:
    return RunConfig(model="mlp_mnist", dataset="mnist5k", n_train=n_train, n_test=N_TEST, epochs=epochs,
                     batch_size=128, lr=0.05, optimizer="sgd", schedule="cosine", loss_layers=None,
                     loss_every=10)


def run_one(config: RunConfig, data, probe: torch.Tensor, paper_log10_lam: float | None) -> dict:
    """One training run and its measurement; a run whose loss diverges is recorded as such (``diverged``)."""
    seed_everything(config.seed, config.deterministic)
    model = build_model(config, data.input_shape, data.n_classes)
    started = time.perf_counter()
    cell = {"method": config.loss_method, "lam": config.lam, "seed": config.seed, "paper_log10_lam": paper_log10_lam}
    try:
        final = train(model, data, config, progress=False).history[-1]
    except TrainingDivergedError as error:
        return {**cell, "diverged": str(error), "seconds": time.perf_counter() - started}
    report = measure_complexity(model, data.x_train[probe], data.y_train[probe])
    return {
        **cell, "H": report.network.H, "I_SY": report.network.I_XSY,
        "test_loss": final["test_loss"], "gap": final["loss_gap"], "test_acc": final["test_acc"],
        "seconds": time.perf_counter() - started,
    }


def summary(values: list[float], decimals: int = 2) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{decimals}f} ± {spread:.{decimals}f}"


def markdown_table(runs: list[dict[str, float]], seeds: int, epochs: int, n_train: int, probe_size: int,
                   methods: list[str]) -> str:
    lines = [
        f"mnist5k ({n_train} train / {N_TEST} test), mlp_mnist 784-1024-256-128-64-10, SGD lr 0.05 momentum 0.9 "
        f"cosine, {epochs} epochs, batch 128, seeds 0..{seeds - 1} (column seeds), one torch thread; loss on all "
        "four gating layers "
        f"(d = 1,472) every 10 steps; H and I(S;Y) of those layers by the kernel estimate (kernel width 0.01, "
        f"bits) on a class-balanced probe of {probe_size} training images (ceiling log2 {probe_size} = "
        f"{math.log2(probe_size):.2f}); losses in nats; mean ± std over seeds (± 0 with one seed). "
        "lambda (per bit) = ln 2 x 10^k with k the paper's log10 lambda (per nat).",
        "",
        "| method | paper's log10 lambda | our lambda | seeds | H(S) | I(S;Y) | test loss - train loss | test loss "
        "| test acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    plain = [r for r in runs if r["lam"] == 0.0]
    rows = [("none", None, plain)]
    for method in methods:
        grid = sorted({r["paper_log10_lam"] for r in runs if r["method"] == method})
        rows += [(method, k, [r for r in runs if r["method"] == method and r["paper_log10_lam"] == k]) for k in grid]
    for method, k, group in rows:
        finished = [r for r in group if "diverged" not in r]
        diverged = len(group) - len(finished)
        lam_text = "none | 0" if k is None else f"{k:g} | {lam_per_bit(k):.3g}"
        seeds_text = f"{len(finished)}" + (f" (+{diverged} diverged)" if diverged else "")
        if not finished:
            lines.append(f"| {method} | {lam_text} | {seeds_text} |" + " diverged |" * 5)
            continue
        lines.append(
            f"| {method} | {lam_text} | {seeds_text} | {summary([r['H'] for r in finished])} "
            f"| {summary([r['I_SY'] for r in finished])} | {summary([r['gap'] for r in finished], 3)} "
            f"| {summary([r['test_loss'] for r in finished], 3)} "
            f"| {summary([r['test_acc'] for r in finished])} |"
        )
    return "\n".join(lines)


def write_into_docs(table: str, runs: list[dict[str, float]], tag: str) -> None:
    """Replace the text between ``<!-- lambda-sweep[-tag]:start/end -->`` and write the runs as JSON."""
    name = "lambda-sweep" + (f"-{tag}" if tag else "")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    path = DOCS / "training.md"
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    (DOCS / f"{name.replace('-', '_')}.json").write_text(json.dumps(runs, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--n-train", type=int, default=1000,
                        help=f"training images, at most {5000 - N_TEST} (mnist5k has 5,000; {N_TEST} are the test set)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of ebm,kde,marginal")
    parser.add_argument("--tag", default="", help="write between <!-- lambda-sweep-TAG:start/end --> markers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log10-lams", default=",".join(f"{k:g}" for k in PAPER_LOG10_LAMBDAS),
                        help="comma-separated grid of the paper's log10 lambda")
    parser.add_argument("--runs", type=Path,
                        help="JSON file of finished runs: runs found there are not repeated, and it is rewritten after "
                             "every run (resume an interrupted sweep; split one over processes and merge the files)")
    parser.add_argument("--skip-plain", action="store_true", help="do not train the lambda = 0 run")
    parser.add_argument("--write", action="store_true", help="update docs/training.md and docs/lambda_sweep[_TAG].json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(base_config(args.epochs, args.n_train))
    methods = args.methods.split(",")
    if not set(methods) <= set(METHODS):
        raise SystemExit(f"--methods {args.methods!r}: choose from {','.join(METHODS)}")
    per_class = int(torch.bincount(data.y_train).min())  # the largest balanced probe of the training set
    probe = torch.from_numpy(class_balanced_probe(data.y_train, per_class, seed=0))
    grid = [float(k) for k in args.log10_lams.split(",")]
    runs = json.loads(args.runs.read_text()) if args.runs is not None and args.runs.exists() else []
    done = {(r["method"], r["paper_log10_lam"], r["seed"]) for r in runs}
    started = time.perf_counter()
    for seed in range(args.seeds):
        plain = base_config(args.epochs, args.n_train).replace(seed=seed)
        cells = [] if args.skip_plain else [(plain, None)]
        cells += [(plain.replace(loss_method=method, lam=lam_per_bit(k)), k) for method in methods for k in grid]
        for config, k in cells:
            if (config.loss_method, k, seed) in done:
                continue
            runs.append(run_one(config, data, probe, k))
            if args.runs is not None:
                args.runs.write_text(json.dumps(runs, indent=1) + "\n")
            last = runs[-1]
            outcome = (last["diverged"] if "diverged" in last else
                       f"H {last['H']:.2f} I(S;Y) {last['I_SY']:.2f} gap {last['gap']:.3f} test loss {last['test_loss']:.3f}")
            print(f"seed {seed} {config.loss_method:<8} log10 lam {k!s:<5} {outcome} ({last['seconds']:.0f} s)", flush=True)
    table = markdown_table(runs, args.seeds, args.epochs, len(data.y_train), len(probe), methods)
    print(f"\n{table}\n\ntotal {time.perf_counter() - started:.0f} s")
    if args.write:
        write_into_docs(table, runs, args.tag)


if __name__ == "__main__":
    main()
