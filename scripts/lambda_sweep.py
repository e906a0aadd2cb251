"""Evidence for the complexity loss: a lambda sweep on digits with an MLP, for each loss method.

For every method (ebm, kde, marginal), lambda in LAMBDAS (0 included, shared by all methods since
lambda = 0 is the plain run) and every seed, trains an MLP and measures on a fixed class-balanced
probe of training images (the paper's kernel estimate, bits):

* H(S) of the penalised layers (all hidden layers, concatenated: the "network" record),
* I(S;Y) of the same (I(X;S;Y), equal to I(S;Y) for a deterministic network),
* test loss and the test - train loss gap (nats), test accuracy.

Prints a Markdown table (mean +- std over seeds) and, with --write, puts it into
docs/training.md between the lambda-sweep markers (``lambda-sweep-TAG`` with --tag), with the raw
per-run numbers in docs/lambda_sweep[_TAG].json.

Usage: python scripts/lambda_sweep.py [--seeds 3] [--epochs 60] [--n-train 1198] [--tag NAME] [--write]
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
from complexity_tracker.training import seed_everything, train

METHODS = ("ebm", "kde", "marginal")
LAMBDAS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
PENALISED_LAYERS = ["net.2", "net.4", "net.6"]
PROBE_PER_CLASS = 100
DOCS = Path(__file__).resolve().parent.parent / "docs"


def base_config(epochs: int, n_train: int) -> RunConfig:
    return RunConfig(model="mlp", depth=3, width=128, dataset="digits", n_train=n_train, n_test=599, epochs=epochs,
                     batch_size=64, lr=0.05, optimizer="sgd", schedule="cosine", loss_layers=PENALISED_LAYERS,
                     probe_per_class=PROBE_PER_CLASS)


def run_one(config: RunConfig, data, probe: torch.Tensor) -> dict[str, float]:
    seed_everything(config.seed, config.deterministic)
    model = build_model(config, data.input_shape, data.n_classes)
    started = time.perf_counter()
    final = train(model, data, config, progress=False).history[-1]
    report = measure_complexity(model, data.x_train[probe], data.y_train[probe], layers=PENALISED_LAYERS)
    return {
        "method": config.loss_method, "lam": config.lam, "seed": config.seed,
        "H": report.network.H, "I_SY": report.network.I_XSY,
        "test_loss": final["test_loss"], "gap": final["loss_gap"], "test_acc": final["test_acc"],
        "seconds": time.perf_counter() - started,
    }


def summary(values: list[float], decimals: int = 2) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{decimals}f} ± {spread:.{decimals}f}"


def markdown_table(runs: list[dict[str, float]], seeds: int, epochs: int, n_train: int, probe_size: int) -> str:
    lines = [
        f"digits ({n_train} train / 599 test), MLP 64-128-128-128-10, SGD lr 0.05 cosine, {epochs} epochs, "
        f"batch 64, {seeds} seeds; penalised layers {', '.join(PENALISED_LAYERS)} (all hidden layers, "
        f"d = 384); H and I(S;Y) by the kernel estimate (lam 0.01, bits) on a class-balanced probe of "
        f"{probe_size} training images (ceiling log2 {probe_size} = {math.log2(probe_size):.2f}); losses in "
        "nats; mean ± std over seeds.",
        "",
        "| method | lambda | H(S) | I(S;Y) | test loss - train loss | test loss | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    plain = [r for r in runs if r["lam"] == 0.0]
    rows = [("none", 0.0, plain)]
    for method in METHODS:
        rows += [(method, lam, [r for r in runs if r["method"] == method and r["lam"] == lam])
                 for lam in LAMBDAS if lam > 0]
    for method, lam, group in rows:
        lam_text = "0" if lam == 0 else f"{lam:g} (log10 {math.log10(lam):.1f})"
        lines.append(
            f"| {method} | {lam_text} | {summary([r['H'] for r in group])} | {summary([r['I_SY'] for r in group])} "
            f"| {summary([r['gap'] for r in group], 3)} | {summary([r['test_loss'] for r in group], 3)} "
            f"| {summary([r['test_acc'] for r in group])} |"
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
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--n-train", type=int, default=1198,
                        help="training images, at most 1198 (digits has 1797 images; 599 are the test set)")
    parser.add_argument("--tag", default="", help="write between <!-- lambda-sweep-TAG:start/end --> markers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update docs/training.md and docs/lambda_sweep.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(base_config(args.epochs, args.n_train))
    probe = torch.from_numpy(class_balanced_probe(data.y_train, PROBE_PER_CLASS, seed=0))
    runs = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        plain = base_config(args.epochs, args.n_train).replace(seed=seed)
        runs.append(run_one(plain, data, probe))
        for method in METHODS:
            for lam in LAMBDAS[1:]:
                runs.append(run_one(plain.replace(loss_method=method, lam=lam), data, probe))
                last = runs[-1]
                print(f"seed {seed} {method:<8} lam {lam:<6g} H {last['H']:.2f} I(S;Y) {last['I_SY']:.2f} "
                      f"gap {last['gap']:.3f} test loss {last['test_loss']:.3f} ({last['seconds']:.0f} s)",
                      flush=True)
    table = markdown_table(runs, args.seeds, args.epochs, len(data.y_train), len(probe))
    print(f"\n{table}\n\ntotal {time.perf_counter() - started:.0f} s")
    if args.write:
        write_into_docs(table, runs, args.tag)


if __name__ == "__main__":
    main()
