"""Differentiable complexity losses: estimates of sum_l H(S_l) from soft gates, in bits.

The training objective is ``L = L_task + lam * sum_l H(S_l)``.  Gating states are not
differentiable, so each selected ReLU's pre-activation ``z`` is relaxed to the soft gate
``g = sigmoid(beta * z)`` (the derivative of the paper's Swish ``z * sigmoid(beta z)`` gating;
``beta = 100`` by default), flattened per sample to ``(batch, d)``.  Three estimates of H:

* ``ebm`` (the paper's method): ``log p(s) = f(s) + log q(s) - log Z`` with ``q`` the product of
  running Bernoulli marginals (``m <- 0.9 m + 0.1 mean(g)``) and ``f`` an energy network trained by
  contrastive divergence with Langevin dynamics started at the batch's gates.  The loss is
  ``mean(-f(g) - log q(g))`` (bits), the cross-entropy estimate of H up to the constant ``log Z``.
* ``kde``: the paper's kernel estimate (as :func:`complexity_tracker.estimators.kde_entropy`, bits)
  on the mini-batch's soft gates; bounded by ``log2(batch size)``.
* ``marginal``: ``C_l = sum_i h(mean_batch g_i)``, the upper bound H <= C (bits).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .config import ConfigError, RunConfig
from .estimators import DEFAULT_LAM_CONV, DEFAULT_LAM_VECTOR
from .gating import PreactivationRecorder, find_gating_modules

_LN2 = math.log(2.0)
_RATE_EPS = 1e-4
#: Running-average weight of the newest batch in the ebm's Bernoulli marginals (paper: 0.9 / 0.1).
MARGINAL_MOMENTUM = 0.1
ENERGY_LR = 1e-3
#: Weight of the energy-magnitude penalty that keeps contrastive divergence stable.
ENERGY_REGULARISATION = 0.1


def soft_gates(preactivation: torch.Tensor, beta: float) -> torch.Tensor:
    """``sigmoid(beta * z)`` flattened to (batch, d): a differentiable relaxation of ``z >= 0``."""
    return torch.sigmoid(beta * preactivation).flatten(1)


def binary_entropy_sum(rates: torch.Tensor) -> torch.Tensor:
    """``sum_i h(p_i)`` in bits for open rates ``p`` (clamped away from 0 and 1)."""
    p = rates.clamp(_RATE_EPS, 1.0 - _RATE_EPS)
    return -(p * torch.log2(p) + (1.0 - p) * torch.log2(1.0 - p)).sum()


def soft_kde_entropy(gates: torch.Tensor, lam: float) -> torch.Tensor:
    """Kernel entropy estimate (bits) of the rows of ``gates`` (N, d), differentiable.

    Same formula as :func:`complexity_tracker.estimators.kde_entropy`, with the squared
    Euclidean distance of soft gates in place of the Hamming distance (equal on 0/1 data).
    """
    n, d = gates.shape
    norms = gates.pow(2).sum(dim=1)
    distances = (norms[:, None] + norms[None, :] - 2.0 * gates @ gates.T).clamp_min(0.0)
    log_density = torch.logsumexp(-distances / (2.0 * lam * d), dim=1) - math.log(n)
    return -log_density.mean() / _LN2


class ComplexityLoss(nn.Module):
    """Base class: records the selected layers' pre-activations and sums a per-layer entropy (bits).

    Use ``with loss.recording() as recorder: logits = model(x)`` then ``loss(recorder.records())``.

    Args:
        model: the network being trained.
        layers: module paths or glob patterns (``None``: every gating layer).
        beta: soft-gate sharpness.
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float) -> None:
        super().__init__()
        self.recorder = PreactivationRecorder(model, layers, differentiable=True)
        self.beta = beta

    @contextlib.contextmanager
    def recording(self) -> Iterator[PreactivationRecorder]:
        """Record pre-activations of the forward passes inside the block (earlier records are dropped)."""
        self.recorder.clear()
        with self.recorder:
            yield self.recorder

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        """Sum over recorded layers of the entropy estimate, in bits.

        Args:
            records: ``(layer, pre-activation)`` pairs from :meth:`recording`.
            update: also update the estimator's own state (running marginals, energy network).
        """
        return torch.stack([self.layer_entropy(name, z, soft_gates(z, self.beta), update)
                            for name, z in records]).sum()

    def layer_entropy(self, name: str, preactivation: torch.Tensor, gates: torch.Tensor,
                      update: bool) -> torch.Tensor:
        raise NotImplementedError


class MarginalEntropyLoss(ComplexityLoss):
    """``C_l = sum_i h(p_i)`` with ``p_i`` the batch mean of unit i's soft gate (an upper bound on H)."""

    def layer_entropy(self, name: str, preactivation: torch.Tensor, gates: torch.Tensor,
                      update: bool) -> torch.Tensor:
        return binary_entropy_sum(gates.mean(dim=0))


class KDEEntropyLoss(ComplexityLoss):
    """The paper's kernel estimate on the batch's soft gates; ``kde_lam=None``: 0.01 vectors, 0.04 maps."""

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float,
                 kde_lam: float | None = None) -> None:
        super().__init__(model, layers, beta)
        self.kde_lam = kde_lam

    def layer_entropy(self, name: str, preactivation: torch.Tensor, gates: torch.Tensor,
                      update: bool) -> torch.Tensor:
        lam = self.kde_lam or (DEFAULT_LAM_CONV if preactivation.ndim > 2 else DEFAULT_LAM_VECTOR)
        return soft_kde_entropy(gates, lam)


class EnergyNetwork(nn.Module):
    """``f(s)``: a scalar energy correction for gate vectors of one layer (d -> h -> h -> 1)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        hidden = min(512, max(32, d // 4))
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, gates: torch.Tensor) -> torch.Tensor:
        return self.net(gates).squeeze(1)


class _LayerDensity(nn.Module):
    """Per-layer state of the ebm loss: running Bernoulli marginals and the energy network."""

    def __init__(self, gates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("marginals", gates.detach().mean(dim=0))
        self.energy = EnergyNetwork(gates.shape[1]).to(gates.device)
        self.optimizer = torch.optim.Adam(self.energy.parameters(), lr=ENERGY_LR)

    def log_q(self, gates: torch.Tensor) -> torch.Tensor:
        """Log-probability (nats) of each row under the product of Bernoulli marginals."""
        m = self.marginals.clamp(_RATE_EPS, 1.0 - _RATE_EPS)
        return gates @ torch.log(m) + (1.0 - gates) @ torch.log1p(-m)

    def langevin(self, start: torch.Tensor, steps: int, tau: float) -> torch.Tensor:
        """Samples of p ~ q exp(f) by ``steps`` Langevin moves of step ``tau`` from ``start``, kept in [0, 1]."""
        sample = start.detach()
        for _ in range(steps):
            sample.requires_grad_(True)
            log_p = (self.energy(sample) + self.log_q(sample)).sum()
            (grad,) = torch.autograd.grad(log_p, sample)
            noise = torch.randn_like(sample)
            sample = (sample + tau * grad + math.sqrt(2.0 * tau) * noise).clamp(0.0, 1.0).detach()
        return sample

    def contrastive_divergence(self, positive: torch.Tensor, steps: int, tau: float) -> None:
        """One optimiser step of f raising the energy of the data and lowering that of Langevin samples."""
        self.energy.requires_grad_(True)
        negative = self.langevin(positive, steps, tau)
        f_pos, f_neg = self.energy(positive), self.energy(negative)
        objective = f_neg.mean() - f_pos.mean() + ENERGY_REGULARISATION * (f_pos.pow(2) + f_neg.pow(2)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.energy.requires_grad_(False)


class EnergyEntropyLoss(ComplexityLoss):
    """The paper's energy-based estimate ``mean(-f(g) - log q(g))`` in bits (H up to the constant log Z).

    Every call with ``update=True`` (under autograd) first moves the running marginals and trains
    ``f`` by one contrastive-divergence step; the returned loss then uses the updated ``f``, whose
    parameters receive no gradient from it.
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float,
                 steps: int = 5, tau: float = 1e-3) -> None:
        super().__init__(model, layers, beta)
        self.steps, self.tau = steps, tau
        self.densities = nn.ModuleDict()

    def layer_entropy(self, name: str, preactivation: torch.Tensor, gates: torch.Tensor,
                      update: bool) -> torch.Tensor:
        key = name.replace(".", "/")
        if key not in self.densities:
            self.densities[key] = _LayerDensity(gates)
            self.densities[key].energy.requires_grad_(False)
        density = self.densities[key]
        if update and torch.is_grad_enabled():
            batch_rates = gates.detach().mean(dim=0)
            density.marginals.mul_(1.0 - MARGINAL_MOMENTUM).add_(MARGINAL_MOMENTUM * batch_rates)
            density.contrastive_divergence(gates.detach(), self.steps, self.tau)
        return (-density.energy(gates) - density.log_q(gates)).mean() / _LN2


def build_complexity_loss(model: nn.Module, config: RunConfig) -> ComplexityLoss | None:
    """The loss named by ``config.loss_method`` on ``config.loss_layers``, or ``None`` when it is off.

    ``lam == 0`` gives ``None`` (after checking the layer selection), so that the run is exactly
    the plain one.

    Raises:
        ConfigError: ``lam > 0`` with ``loss_method='none'``.
        NoGatingLayersError: ``loss_layers`` matches no gating module of ``model``.
    """
    if config.loss_method == "none":
        if config.lam > 0:
            raise ConfigError(f"lam={config.lam} but loss_method='none'; choose loss_method ebm, kde or marginal")
        return None
    if config.lam == 0:
        find_gating_modules(model, config.loss_layers)
        return None
    if config.loss_method == "marginal":
        return MarginalEntropyLoss(model, config.loss_layers, config.loss_beta)
    if config.loss_method == "kde":
        return KDEEntropyLoss(model, config.loss_layers, config.loss_beta, config.kde_lam)
    if config.loss_method == "ebm":
        return EnergyEntropyLoss(model, config.loss_layers, config.loss_beta, config.ebm_steps, config.ebm_tau)
    raise ConfigError(f"unknown loss_method {config.loss_method!r}; choose none, ebm, kde or marginal")
