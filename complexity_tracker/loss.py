"""Differentiable complexity losses: estimates of sum_l H(S_l) from soft gates, in bits.

The training objective is ``L = L_task + lam * sum_l H(S_l)``.  Gating states are not
differentiable, so each selected ReLU's pre-activation ``z`` is relaxed to the soft gate
``g = sigmoid(beta * z)`` (the derivative of the paper's Swish ``z * sigmoid(beta z)`` gating;
``beta = 100`` by default), flattened per sample to ``(batch, d)``.  Three estimates of H:

* ``ebm`` (the paper's method, as its official code): ``log p(s) = f(s) + log q(s) - log Z`` with
  ``q`` the product of Bernoulli marginals (running average 0.9 / 0.1 of the batches' hard open
  rates) and ``f`` an energy network (official architecture) trained by contrastive divergence
  with 5 Langevin steps started at the batch's gates.  The loss is ``mean(-f(g) - log q(g))``,
  the cross-entropy estimate of H up to the constant ``log Z``, converted from nats to bits.
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
# ebm settings, as the official code (docs/training.md compares the two point by point)
#: Hidden widths of the energy network after its d inputs (official E_3072d: 1x1 convs 3072 -> 32 ... 512).
ENERGY_HIDDEN_WIDTHS = (32, 64, 128, 256, 512, 512)
#: f's output is multiplied by d / ENERGY_OUTPUT_DIVISOR (official: 3072 / 1000).
ENERGY_OUTPUT_DIVISOR = 1000.0
ENERGY_LR = 1e-4
#: f's learning rate falls by this many decades over the run (official: 1e-4 to 1e-6 over the epochs).
ENERGY_LR_DECADES = 2.0
ENERGY_MOMENTUM = 0.9
ENERGY_WEIGHT_DECAY = 5e-4
#: Every element of f's gradient is clipped to +-ENERGY_GRAD_CLIP before the SGD step.
ENERGY_GRAD_CLIP = 1e-5
#: Running-average weight of the newest batch's hard open rates in q (official: 0.9 old / 0.1 new).
MARGINAL_MOMENTUM = 0.1
#: Added to q's per-unit probability before the log (official 1e-5).
LOG_Q_EPS = 1e-5

def soft_gates(preactivation: torch.Tensor, beta: float) -> torch.Tensor:
    """``sigmoid(beta * z)`` flattened to (batch, d): a differentiable relaxation of ``z >= 0``."""
    return torch.sigmoid(beta * preactivation).flatten(1)


def binary_entropy_sum(rates: torch.Tensor) -> torch.Tensor:
    """``sum_i h(p_i)`` in bits for open rates ``p`` (clamped away from 0 and 1)."""
    p = rates.clamp(_RATE_EPS, 1.0 - _RATE_EPS)
    return -(p * torch.log2(p) + (1.0 - p) * torch.log2(1.0 - p)).sum()


def soft_kde_entropy(gates: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """Kernel entropy estimate (bits) of the rows of ``gates`` (..., N, d), differentiable.

    Same formula as :func:`complexity_tracker.estimators.kde_entropy`, with the squared
    Euclidean distance of soft gates in place of the Hamming distance (equal on 0/1 data).
    Leading dimensions are independent sets (one per layer); the result has their shape.
    """
    n, d = gates.shape[-2:]
    scale = 1.0 / (2.0 * kernel_width * d)
    # -scale * ||g_i - g_j||^2 = (2 scale g_i.g_j - scale |g_j|^2) - scale |g_i|^2: one fused matmul
    norms = gates.square().sum(dim=-1)
    batched = gates if gates.ndim == 3 else gates.reshape(-1, n, d)
    logits = torch.baddbmm(norms.reshape(-1, 1, n) * -scale, batched, batched.transpose(1, 2), alpha=2.0 * scale)
    log_density = torch.logsumexp(logits, dim=-1).reshape(norms.shape) - scale * norms
    return (math.log(n) - log_density.mean(dim=-1)) / _LN2


LayerGroup = tuple[tuple[str, ...], torch.Tensor]
#: A linear map's ``(weight, bias)``.
FoldedLinear = tuple[torch.Tensor, torch.Tensor]


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

    def end_epoch(self) -> None:
        """Called by :func:`complexity_tracker.training.train` after every epoch (the ebm decays f's learning rate)."""


class MarginalEntropyLoss(ComplexityLoss):
    """``C_l = sum_i h(p_i)`` with ``p_i`` the batch mean of unit i's soft gate (an upper bound on H).

    The sum over layers is the sum over all their units, so all layers are handled in one pass.
    """

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        preactivations = torch.cat([z.flatten(1) for _, z in records], dim=1)
        return binary_entropy_sum(soft_gates(preactivations, self.beta).mean(dim=0))


class KDEEntropyLoss(ComplexityLoss):
    """The paper's kernel estimate on the batch's soft gates; ``kernel_width=None``: 0.01 vectors, 0.04 maps."""

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float,
                 kernel_width: float | None = None) -> None:
        super().__init__(model, layers, beta)
        self.kernel_width = kernel_width

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        is_conv = {name: z.ndim > 2 for name, z in records}
        total = []
        for names, stacked in group_layers(records):
            default = DEFAULT_KERNEL_WIDTH_CONV if is_conv[names[0]] else DEFAULT_KERNEL_WIDTH_VECTOR
            width = self.kernel_width or default
            total.append(soft_kde_entropy(torch.sigmoid(self.beta * stacked), width).sum())
        return torch.stack(total).sum()


class EnergyNetwork(nn.Sequential):
    """The energy ``f(s)`` of one layer of d gates (nats), as the official ``E_3072d`` with input width d.

    Six bias-free linear maps d -> 32 -> 64 -> 128 -> 256 -> 512 -> 512 (the official 1x1
    convolutions on a 1x1 map), each followed by BatchNorm and ReLU, then a linear map to one
    number, multiplied by ``d / 1000``.  Weights are Kaiming-normal.  BatchNorm always runs in eval
    mode with its initial statistics (mean 0, variance 1), i.e. as a learnable per-unit scale and
    shift: the official code switches f to eval mode before every use, so its statistics never move.
    Input (N, d), output (N,).
    """

    def __init__(self, d: int) -> None:
        widths = (d, *ENERGY_HIDDEN_WIDTHS)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out, bias=False), nn.BatchNorm1d(width_out), nn.ReLU()]
        super().__init__(*layers, nn.Linear(widths[-1], 1))
        self.output_scale = d / ENERGY_OUTPUT_DIVISOR
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
        super().train(False)

    def train(self, mode: bool = True) -> EnergyNetwork:
        """Stays in eval mode whatever ``mode`` is (see the class docstring)."""
        return super().train(False)

    def folded_layers(self) -> list[FoldedLinear]:
        """Each linear map with its eval-mode BatchNorm folded in, then the output map: ``(weight, bias)`` pairs.

        ``BN(W x) = gamma (W x - mean) / sqrt(var + eps) + beta`` is the linear map with rows scaled
        by ``gamma / sqrt(var + eps)`` and bias ``beta - mean gamma / sqrt(var + eps)``; differentiable
        in the parameters.  Evaluating f with them skips the BatchNorm passes (same f, rounding aside).
        """
        modules = list(self)
        layers = []
        for linear, norm in zip(modules[0:-1:3], modules[1:-1:3]):
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            layers.append((linear.weight * scale[:, None], norm.bias - norm.running_mean * scale))
        return [*layers, (modules[-1].weight, modules[-1].bias)]

    def forward(self, gates: torch.Tensor, layers: Sequence[FoldedLinear] | None = None) -> torch.Tensor:
        """f at ``gates`` (N, d), shape (N,); with ``layers`` (from :meth:`folded_layers`) it uses those weights."""
        if layers is None:
            return super().forward(gates).squeeze(-1) * self.output_scale
        hidden = gates
        for weight, bias in layers[:-1]:
            hidden = torch.relu(nn.functional.linear(hidden, weight, bias))
        return nn.functional.linear(hidden, *layers[-1]).squeeze(-1) * self.output_scale


class LayerDensity(nn.Module):
    """Density model ``p(s) ~ q(s) exp(f(s))`` of one layer's d gates.

    ``q`` is the product of Bernoulli marginals whose open rates ``marginals`` (d,) are a running
    average of the batches' hard open rates (``z > 0``); ``f`` is an :class:`EnergyNetwork`
    trained by contrastive divergence with SGD (lr ``lr``, momentum 0.9, weight decay 5e-4) on
    gradients clipped to +-1e-5 per element.

    Args:
        preactivations: the first batch's pre-activations (N, d); they set the initial marginals.
        lr: the energy network's learning rate.
    """

    def __init__(self, preactivations: torch.Tensor, lr: float) -> None:
        super().__init__()
        self.register_buffer("marginals", hard_open_rates(preactivations))
        self.register_buffer("marginals_updated", torch.tensor(False))
        self.energy = EnergyNetwork(preactivations.shape[1]).to(preactivations.device, preactivations.dtype)
        self.energy.requires_grad_(False)
        self.optimizer = torch.optim.SGD(self.energy.parameters(), lr=lr, momentum=ENERGY_MOMENTUM,
                                         weight_decay=ENERGY_WEIGHT_DECAY)

    def log_q(self, gates: torch.Tensor) -> torch.Tensor:
        """``sum_i log(g_i p_i + (1 - g_i)(1 - p_i) + 1e-5)`` per row (nats), shape (N,).

        On hard gates this is the Bernoulli log-probability; on soft gates the probability is
        interpolated linearly, as in the official code.
        """
        m = self.marginals
        return torch.log(gates * (2.0 * m - 1.0) + (1.0 - m) + LOG_Q_EPS).sum(dim=-1)

    def update_marginals(self, preactivations: torch.Tensor) -> None:
        """The first update copies the batch's hard open rates; later ones do ``p <- 0.9 p + 0.1 rate``."""
        rates = hard_open_rates(preactivations)
        if bool(self.marginals_updated):
            self.marginals.lerp_(rates, MARGINAL_MOMENTUM)
        else:
            self.marginals.copy_(rates)
            self.marginals_updated.fill_(True)

    def langevin(self, start: torch.Tensor, steps: int, tau: float) -> torch.Tensor:
        """``steps`` Langevin moves ``s <- clamp(s - tau/2 dE/ds + sqrt(tau) xi, 0, 1)`` from ``start``.

        ``E = -f(s) - log q(s)``; the noise ``xi ~ N(0, I_d)`` is drawn once per step and shared by
        every row of the batch (as in the official code: each chain still gets standard noise).
        The clamp keeps ``s`` where log q is defined (the official code does not clamp).
        """
        with torch.no_grad():
            layers = self.energy.folded_layers()
        return self._langevin_chain(start, steps, tau, layers)[0]

    def _energy_slope(self, sample: torch.Tensor, layers: Sequence[FoldedLinear],
                      wrt: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``dE/ds`` at ``sample`` for ``E = -sum_rows (f(s) + log q(s))``, and ``dE/dt`` for each tensor of ``wrt``."""
        with torch.enable_grad():
            point = sample.detach().requires_grad_(True)
            energy = -(self.energy(point, layers) + self.log_q(point)).sum()
            slope, *grads = torch.autograd.grad(energy, [point, *wrt])
        return slope, grads

    def _langevin_chain(self, start: torch.Tensor, steps: int, tau: float, layers: Sequence[FoldedLinear]
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`langevin` with f's folded ``layers``, also returning ``dE/d layers`` at ``start`` (first step).

        The gradient with respect to the layers is computed only when they require it.
        """
        wrt = [t for pair in layers for t in pair if t.requires_grad]
        fixed = [(weight.detach(), bias.detach()) for weight, bias in layers]
        sample, start_grads = start.detach(), []
        for step in range(steps):
            slope, grads = self._energy_slope(sample, layers if step == 0 else fixed, wrt if step == 0 else ())
            if step == 0:
                start_grads = grads
            noise = torch.randn((1, sample.shape[1]), device=sample.device, dtype=sample.dtype)
            sample = (sample - 0.5 * tau * slope + math.sqrt(tau) * noise).clamp_(0.0, 1.0)
        return sample, start_grads

    def contrastive_divergence(self, positive: torch.Tensor, steps: int, tau: float) -> None:
        """One SGD step of f on ``mean f(Langevin samples) - mean f(batch)``, gradients clipped to +-1e-5.

        Computed with f's BatchNorm folded into its linear maps.  The batch term's gradient comes
        from the first Langevin step, which evaluates f at the batch with the same weights, so f
        runs forward and backward once less per update.
        """
        if steps < 1:
            raise ValueError(f"contrastive divergence needs steps >= 1 Langevin moves, got {steps}")
        parameters = list(self.energy.parameters())
        with torch.enable_grad():
            self.energy.requires_grad_(True)
            try:
                folded = [t for pair in self.energy.folded_layers() for t in pair]
                leaves = [t.detach().requires_grad_(True) for t in folded]
                layers = list(zip(leaves[0::2], leaves[1::2]))
                negative, positive_grads = self._langevin_chain(positive, steps, tau, layers)
                negative_grads = torch.autograd.grad(self.energy(negative, layers).mean(), leaves)
                # dE/dt at the batch is -sum_rows df/dt, so the batch term -mean_rows df/dt is that / N
                folded_grads = [negative_grad.add_(positive_grad, alpha=1.0 / positive.shape[0])
                                for negative_grad, positive_grad in zip(negative_grads, positive_grads)]
                parameter_grads = torch.autograd.grad(folded, parameters, folded_grads)
            finally:
                self.energy.requires_grad_(False)
        for parameter, grad in zip(parameters, parameter_grads):
            parameter.grad = grad
        nn.utils.clip_grad_value_(parameters, ENERGY_GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def entropy(self, gates: torch.Tensor) -> torch.Tensor:
        """``mean(-f(g) - log q(g))`` over the batch, in bits; differentiable in ``gates`` only."""
        with torch.no_grad():
            layers = self.energy.folded_layers()
        return (-self.energy(gates, layers) - self.log_q(gates)).mean() / _LN2


def hard_open_rates(preactivations: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch in which each unit is open (``z > 0``), shape (d,)."""
    return (preactivations.detach() > 0).to(preactivations.dtype).mean(dim=0)


class EnergyEntropyLoss(ComplexityLoss):
    """The paper's energy-based estimate ``sum_l mean(-f_l(g) - log q_l(g))`` in bits (H up to log Z).

    One :class:`LayerDensity` per penalised layer (conv maps flattened to d = C*H*W units), created
    at the first call.  Every call with ``update=True`` (under autograd) first updates each layer's
    marginals and trains its f by one contrastive-divergence step (``steps`` Langevin moves of
    step ``tau``, started at the batch's gates); the returned loss then uses the updated f, whose
    parameters receive no gradient from it.  :meth:`end_epoch` lowers f's learning rate so that
    it falls from 1e-4 to 1e-6 over ``epochs`` epochs, log-linearly.
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None, beta: float,
                 steps: int = 5, tau: float = 1e-3, epochs: int = 1) -> None:
        super().__init__(model, layers, beta)
        self.steps, self.tau = steps, tau
        self.energy_lr = ENERGY_LR
        self.energy_lr_factor = 10.0 ** (-ENERGY_LR_DECADES / (epochs - 1)) if epochs > 1 else 1.0
        self.densities = nn.ModuleDict()

    def end_epoch(self) -> None:
        self.energy_lr *= self.energy_lr_factor
        for density in self.densities.values():
            for group in density.optimizer.param_groups:
                group["lr"] = self.energy_lr

    def forward(self, records: list[tuple[str, torch.Tensor]], update: bool = True) -> torch.Tensor:
        total = []
        for name, z in records:
            preactivations = z.flatten(1)
            key = name.replace(".", "/")
            if key not in self.densities:
                self.densities[key] = LayerDensity(preactivations, self.energy_lr)
            density = self.densities[key]
            gates = torch.sigmoid(self.beta * preactivations)
            if update and torch.is_grad_enabled():
                density.update_marginals(preactivations)
                density.contrastive_divergence(gates.detach(), self.steps, self.tau)
            total.append(density.entropy(gates))
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
        return EnergyEntropyLoss(model, config.loss_layers, config.loss_beta, config.ebm_steps, config.ebm_tau,
                                 config.epochs)
    raise ConfigError(f"unknown loss_method {config.loss_method!r}; choose none, ebm, kde or marginal")
