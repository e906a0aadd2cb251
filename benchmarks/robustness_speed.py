"""Robustness evaluation speed: 5 digits models x 500 test samples, PGD-20 (Linf) and DeepFool.

Target: at most 5 minutes on 2 CPU cores.  Prints, measured side by side in one run:

* our pipeline (`evaluate_robustness`: sample selection, 4-D view, eval mode, frozen
  parameters, RNG fork, re-classification, norms) and its ratio to the 300 s budget;
* the bare torchattacks calls on the same models and samples with the parameters frozen as
  ours are (the ratio is the pipeline's own overhead);
* bare torchattacks with the parameters left trainable, as in torchattacks' examples:
  DeepFool's ``backward`` then also computes (and accumulates) every parameter's gradient.

    .venv/bin/python benchmarks/robustness_speed.py [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks

from complexity_tracker.config import RunConfig
from complexity_tracker.data import load_data
from complexity_tracker.models import build_model
from complexity_tracker.robustness import RobustnessConfig, evaluate_robustness
from complexity_tracker.training import train

BUDGET_S = 300.0
N_SAMPLES = 500
SHAPES = [(2, 32), (2, 128), (3, 64), (4, 128), (4, 256)]  # (depth, width) of the 5 MLPs


def trained_models() -> tuple[list[torch.nn.Module], torch.Tensor, torch.Tensor]:
    models = []
    for depth, width in SHAPES:
        config = RunConfig(depth=depth, width=width, epochs=3, n_train=1797 - N_SAMPLES, n_test=N_SAMPLES,
                           probe_per_class=20)
        data = load_data(config)
        models.append(train(build_model(config, data.input_shape, data.n_classes), data, config,
                            progress=False).model.eval())
    return models, data.x_test[:N_SAMPLES], data.y_test[:N_SAMPLES]


class FlatView(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


def bare_torchattacks(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, frozen: bool) -> float:
    images = x.reshape(len(x), 1, 1, -1)
    elapsed = 0.0
    for model in models:
        for param in model.parameters():
            param.requires_grad_(not frozen)
        view = FlatView(model)
        start = time.perf_counter()
        torchattacks.PGD(view, eps=0.1, alpha=2.5 * 0.1 / 20, steps=20)(images, y)
        torchattacks.DeepFool(view, steps=50, overshoot=0.02)(images, y)
        elapsed += time.perf_counter() - start
        for param in model.parameters():
            param.requires_grad_(True)
    return elapsed


def pipeline(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> float:
    config = RobustnessConfig(attacks=("pgd_linf",), linf_eps=(0.1,), pgd_steps=20, min_norm_attacks=("deepfool",),
                              n_samples=N_SAMPLES)
    start = time.perf_counter()
    for model in models:
        evaluate_robustness(model, x, y, config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, x, y = trained_models()
    print(f"{len(models)} MLPs {SHAPES} x {len(x)} digits test samples, PGD-20 Linf 0.1 + DeepFool (50 steps), "
          f"{args.threads} torch thread(s)")
    ours = pipeline(models, x, y)
    frozen = bare_torchattacks(models, x, y, frozen=True)
    trainable = bare_torchattacks(models, x, y, frozen=False)
    print(f"evaluate_robustness               : {ours:7.1f} s  = {ours / BUDGET_S:.2f} x the 300 s budget "
          f"({'within' if ours <= BUDGET_S else 'OVER'})")
    print(f"bare torchattacks, params frozen  : {frozen:7.1f} s  -> pipeline / bare = {ours / frozen:.2f}")
    print(f"bare torchattacks, params training: {trainable:7.1f} s  -> pipeline / bare = {ours / trainable:.2f}")


if __name__ == "__main__":
    main()
