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
from .estimators import DEFAULT_KERNEL_WIDTH_CONV, DEFAULT_KERNEL_WIDTH_VECTOR
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
    """Kernel entropy estimate (bits) of the rows of ``gates`` (..., N, d), differentiable.

    Same formula as :func:`complexity_tracker.estimators.kde_entropy`, with the squared
    Euclidean distance of soft gates in place of the Hamming distance (equal on 0/1 data).
    Leading dimensions are independent sets (one per layer); the result has their shape.
    """
    n, d = gates.shape[-2:]
    scale = 1.0 / (2.0 * lam * d)
    # -scale * ||g_i - g_j||^2 = (2 scale g_i.g_j - scale |g_j|^2) - scale |g_i|^2: one fused matmul
    norms = gates.square().sum(dim=-1)
    batched = gates if gates.ndim == 3 else gates.reshape(-1, n, d)
    logits = torch.baddbmm(norms.reshape(-1, 1, n) * -scale, batched, batched.transpose(1, 2), alpha=2.0 * scale)
    log_density = torch.logsumexp(logits, dim=-1).reshape(norms.shape) - scale * norms
    return (math.log(n) - log_density.mean(dim=-1)) / _LN2


LayerGroup = tuple[tuple[str, ...], torch.Tensor]


def group_layers(records: list[tuple[str, torch.Tensor]]) -> list[LayerGroup]:
    """Stack the pre-activations of layers with the same shape: ``(names, (L, N, d))`` per shape.

    Layers of equal size are then processed by one batched computation instead of one each.
    """
    groups: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for name, z in records:
        groups.setdefault(tuple(z.shape), []).append((name, z))
    return [(tuple(n for n, _ in members), torch.stack([z.flatten(1) for _, z in members]))
            for members in groups.values()]


class ComplexityLoss(nn.Module):
    """Base class: records the selected layers' pre-activations; ``forward`` sums their entropy estimates (bits).

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
        """Sum over the recorded layers of the entropy estimate, in bits.

        Args:
            records: ``(layer, pre-activation)`` pairs from :meth:`recording`.
            update: also update the estimator's own state (running marginals, energy network).
        """
        raise NotImplementedError


class MarginalEntropyLoss(ComplexityLoss):
    """``C_l = sum_i h(p_i)`` with ``p_i`` the batch mean of unit i's soft gate (an upper bound on H).

    The sum over layers is the sum over all their units, so all layers are handled in one pass.
    """

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        preactivations = torch.cat([z.flatten(1) for _, z in records], dim=1)
        return binary_entropy_sum(soft_gates(preactivations, self.beta).mean(dim=0))


class KDEEntropyLoss(ComplexityLoss):
    """The paper's kernel estimate on the batch's soft gates; ``kde_lam=None``: 0.01 vectors, 0.04 maps."""

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float,
                 kde_lam: float | None = None) -> None:
        super().__init__(model, layers, beta)
        self.kde_lam = kde_lam

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        is_conv = {name: z.ndim > 2 for name, z in records}
        total = []
        for names, stacked in group_layers(records):
            lam = self.kde_lam or (DEFAULT_KERNEL_WIDTH_CONV if is_conv[names[0]] else DEFAULT_KERNEL_WIDTH_VECTOR)
            total.append(soft_kde_entropy(torch.sigmoid(self.beta * stacked), lam).sum())
        return torch.stack(total).sum()


class EnergyNetworks(nn.Module):
    """``f_l(s)`` for L layers of d units each, evaluated together: d -> h -> 1 per layer, SiLU.

    ``h = d / 4`` clipped to [32, 512]; initialised like ``nn.Linear``.  Input (L, N, d), output (L, N).
    """

    def __init__(self, layers: int, d: int) -> None:
        super().__init__()
        hidden = min(512, max(32, d // 4))
        self.w1 = nn.Parameter(torch.empty(layers, d, hidden).uniform_(-d**-0.5, d**-0.5))
        self.b1 = nn.Parameter(torch.empty(layers, 1, hidden).uniform_(-d**-0.5, d**-0.5))
        self.w2 = nn.Parameter(torch.empty(layers, hidden, 1).uniform_(-hidden**-0.5, hidden**-0.5))
        self.b2 = nn.Parameter(torch.empty(layers, 1, 1).uniform_(-hidden**-0.5, hidden**-0.5))

    def forward(self, gates: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.silu(torch.baddbmm(self.b1, gates, self.w1))
        return torch.baddbmm(self.b2, hidden, self.w2).squeeze(-1)

    @torch.no_grad()
    def input_gradient(self, gates: torch.Tensor) -> torch.Tensor:
        """``d f_l(s) / d s`` for every row, in closed form (cheaper than autograd in the Langevin loop)."""
        preactivation = torch.baddbmm(self.b1, gates, self.w1)
        sig = torch.sigmoid(preactivation)
        silu_slope = sig * (1.0 + preactivation * (1.0 - sig))
        return (silu_slope * self.w2.transpose(1, 2)) @ self.w1.transpose(1, 2)


class LayerDensities(nn.Module):
    """Density model ``p(s) ~ q(s) exp(f(s))`` of a group of equal-sized layers.

    ``marginals`` (L, d) are the running Bernoulli rates of q; ``energy`` holds one f per layer.
    """

    def __init__(self, gates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("marginals", gates.detach().mean(dim=1))
        self.energy = EnergyNetworks(gates.shape[0], gates.shape[2]).to(gates.device)
        self.energy.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.energy.parameters(), lr=ENERGY_LR)

    def _clamped_marginals(self) -> torch.Tensor:
        return self.marginals.clamp(_RATE_EPS, 1.0 - _RATE_EPS)

    def log_q(self, gates: torch.Tensor) -> torch.Tensor:
        """Log-probability (nats) of each row under the product of Bernoulli marginals, shape (L, N)."""
        m = self._clamped_marginals()
        return (gates @ torch.logit(m)[:, :, None]).squeeze(-1) + torch.log1p(-m).sum(dim=1, keepdim=True)

    def update_marginals(self, gates: torch.Tensor) -> None:
        """``m <- (1 - MARGINAL_MOMENTUM) m + MARGINAL_MOMENTUM * batch rate``."""
        self.marginals.lerp_(gates.detach().mean(dim=1), MARGINAL_MOMENTUM)

    def langevin(self, start: torch.Tensor, steps: int, tau: float) -> torch.Tensor:
        """Samples of p by ``steps`` Langevin moves of step ``tau`` from ``start``, kept in [0, 1]."""
        grad_log_q = torch.logit(self._clamped_marginals())[:, None, :]  # log q is linear in s
        noise = torch.randn((steps, *start.shape), device=start.device, dtype=start.dtype)
        noise *= math.sqrt(2.0 * tau)
        sample = start.detach().clone()
        for step in range(steps):
            drift = self.energy.input_gradient(sample).add_(grad_log_q)
            sample.add_(drift, alpha=tau).add_(noise[step]).clamp_(0.0, 1.0)
        return sample

    def contrastive_divergence(self, positive: torch.Tensor, steps: int, tau: float) -> None:
        """One optimiser step of each f raising the energy of the data and lowering that of Langevin samples."""
        self.energy.requires_grad_(True)
        negative = self.langevin(positive, steps, tau)
        f_pos, f_neg = self.energy(torch.cat([positive, negative], dim=1)).chunk(2, dim=1)
        per_layer = f_neg.mean(dim=1) - f_pos.mean(dim=1) + ENERGY_REGULARISATION * (
            f_pos.pow(2) + f_neg.pow(2)).mean(dim=1)
        self.optimizer.zero_grad(set_to_none=True)
        per_layer.sum().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.energy.requires_grad_(False)

    def entropy(self, gates: torch.Tensor) -> torch.Tensor:
        """``mean(-f(g) - log q(g))`` per layer, in bits, shape (L,); differentiable in ``gates`` only."""
        return (-self.energy(gates) - self.log_q(gates)).mean(dim=1) / _LN2


class EnergyEntropyLoss(ComplexityLoss):
    """The paper's energy-based estimate ``mean(-f(g) - log q(g))`` in bits (H up to the constant log Z).

    Layers of equal shape share one batched :class:`LayerDensities` (independent parameters per
    layer).  Every call with ``update=True`` (under autograd) first moves the running marginals and
    trains f by one contrastive-divergence step; the returned loss then uses the updated f, whose
    parameters receive no gradient from it.
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float,
                 steps: int = 5, tau: float = 1e-3) -> None:
        super().__init__(model, layers, beta)
        self.steps, self.tau = steps, tau
        self.densities = nn.ModuleDict()

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        total = []
        for names, stacked in group_layers(records):
            gates = torch.sigmoid(self.beta * stacked)
            key = "+".join(names).replace(".", "/")
            if key not in self.densities:
                self.densities[key] = LayerDensities(gates)
            density = self.densities[key]
            if update and torch.is_grad_enabled():
                density.update_marginals(gates)
                density.contrastive_divergence(gates.detach(), self.steps, self.tau)
            total.append(density.entropy(gates).sum())
        return torch.stack(total).sum()


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
        return KDEEntropyLoss(model, config.loss_layers, config.loss_beta, config.kernel_width)
    if config.loss_method == "ebm":
        return EnergyEntropyLoss(model, config.loss_layers, config.loss_beta, config.ebm_steps, config.ebm_tau)
    raise ConfigError(f"unknown loss_method {config.loss_method!r}; choose none, ebm, kde or marginal")
