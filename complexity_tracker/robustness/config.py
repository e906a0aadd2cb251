"""Settings of a robustness evaluation: attacks, epsilon grids, steps, samples, seed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import InvalidBudgetError, UnknownAttackError

#: Attacks with a perturbation budget: robust accuracy is measured at each epsilon of their norm's grid.
BUDGETED_ATTACKS: dict[str, str] = {"fgsm": "Linf", "pgd_linf": "Linf", "pgd_l2": "L2", "autoattack": "Linf"}
#: Minimum-norm attacks: they look for the smallest L2 perturbation that changes the prediction.
MIN_NORM_ATTACKS: tuple[str, ...] = ("deepfool", "fab_l2")
ALL_ATTACKS: tuple[str, ...] = (*BUDGETED_ATTACKS, *MIN_NORM_ATTACKS)

#: Defaults for inputs scaled to [0, 1]: Linf budgets up to 0.3 (MNIST's usual ceiling), L2 up to 2.
DEFAULT_LINF_EPS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
DEFAULT_L2_EPS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0)


def check_attack_name(name: str, allowed: tuple[str, ...] = ALL_ATTACKS) -> str:
    """Return ``name`` if it is one of ``allowed``, else raise :class:`UnknownAttackError`."""
    if name not in allowed:
        raise UnknownAttackError(f"unknown attack {name!r}; choose from {', '.join(allowed)}")
    return name


def check_epsilon(eps: float, norm: str, what: str = "epsilon") -> float:
    """Return ``eps`` as float if it is a usable budget for inputs in [0, 1], else raise."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:
        raise InvalidBudgetError(f"{what} must be a finite number > 0, got {eps!r}")
    if norm == "Linf" and eps > 1:
        raise InvalidBudgetError(
            f"{what}={eps} exceeds 1, the largest Linf distance between inputs in [0, 1]; "
            "give budgets in input units (e.g. 8/255, not 8)"
        )
    return float(eps)


@dataclass(frozen=True)
class RobustnessConfig:
    """What to measure and how hard to attack.

    Epsilons are in input units for inputs in [0, 1] (Linf: max per-feature change; L2: Euclidean
    norm of the whole perturbation).  PGD uses ``pgd_steps`` steps of size ``2.5 * eps / pgd_steps``
    with a seeded random start.

    Attributes:
        attacks: budgeted attacks run over their norm's grid (``fgsm``/``pgd_linf``/``autoattack``
            use ``linf_eps``, ``pgd_l2`` uses ``l2_eps``).  ``autoattack`` runs at ``autoattack_eps`` only.
        min_norm_attacks: minimum-norm attacks (``deepfool``, ``fab_l2``); the smallest successful
            L2 norm per sample over those run is the sample's minimal perturbation.
        transfer_attack / transfer_eps: the attack that crafts transfer examples on each source model.
        n_samples: test samples evaluated (the first ``n_samples``; ``None`` = all).
        seed: seeds every attack; the caller's global RNG state is restored afterwards.
        batch_size: samples per attack call.
    """

    attacks: tuple[str, ...] = ("fgsm", "pgd_linf", "pgd_l2")
    min_norm_attacks: tuple[str, ...] = MIN_NORM_ATTACKS
    linf_eps: tuple[float, ...] = DEFAULT_LINF_EPS
    l2_eps: tuple[float, ...] = DEFAULT_L2_EPS
    pgd_steps: int = 20
    autoattack_eps: float = 0.1
    autoattack_version: str = "standard"
    deepfool_steps: int = 50
    deepfool_overshoot: float = 0.02
    fab_steps: int = 20
    transfer_attack: str = "pgd_linf"
    transfer_eps: float = 0.1
    n_samples: int | None = 500
    seed: int = 0
    batch_size: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))
        object.__setattr__(self, "min_norm_attacks", tuple(self.min_norm_attacks))
        object.__setattr__(self, "linf_eps", tuple(sorted(check_epsilon(e, "Linf", "linf_eps") for e in self.linf_eps)))
        object.__setattr__(self, "l2_eps", tuple(sorted(check_epsilon(e, "L2", "l2_eps") for e in self.l2_eps)))
        for name in self.attacks:
            check_attack_name(name, tuple(BUDGETED_ATTACKS))
        for name in self.min_norm_attacks:
            check_attack_name(name, MIN_NORM_ATTACKS)
        check_attack_name(self.transfer_attack, ("fgsm", "pgd_linf", "pgd_l2"))
        check_epsilon(self.transfer_eps, BUDGETED_ATTACKS[self.transfer_attack], "transfer_eps")
        check_epsilon(self.autoattack_eps, "Linf", "autoattack_eps")
        if self.autoattack_version not in ("standard", "plus", "rand"):
            raise InvalidBudgetError(
                f"autoattack_version={self.autoattack_version!r} is not one of standard, plus, rand"
            )
        for name in ("pgd_steps", "deepfool_steps", "fab_steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidBudgetError(f"{name} must be an integer >= 1, got {value!r}")
        if self.n_samples is not None and (not isinstance(self.n_samples, int) or self.n_samples < 1):
            raise InvalidBudgetError(f"n_samples must be an integer >= 1 or None (all samples), got {self.n_samples!r}")
        if not self.deepfool_overshoot >= 0:
            raise InvalidBudgetError(f"deepfool_overshoot must be >= 0, got {self.deepfool_overshoot!r}")

    @classmethod
    def grid(cls, name: str, **changes: object) -> RobustnessConfig:
        """The named grid of :data:`GRIDS` with ``changes`` applied."""
        if name not in GRIDS:
            raise InvalidBudgetError(f"unknown grid {name!r}; choose from {', '.join(GRIDS)}")
        return cls(**{**GRIDS[name], **changes})

    def eps_grid(self, attack: str) -> tuple[float, ...]:
        """The epsilons at which ``attack``'s robust accuracy is measured."""
        if attack == "autoattack":
            return (self.autoattack_eps,)
        return self.linf_eps if BUDGETED_ATTACKS[attack] == "Linf" else self.l2_eps

    def replace(self, **changes: object) -> RobustnessConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


#: Named settings of the command line.  ``quick`` (its default) finds minimal perturbations with
#: FAB-L2 alone: DeepFool loops over samples and took 80% of the time, while on the quickstart
#: study's models FAB-L2 was 4.6x faster, fooled every correctly classified sample (DeepFool: 73%)
#: and found smaller norms.  This keeps ``evaluate`` of the 8-trial quickstart study within about a
#: minute on 2 cores.  ``full`` is :class:`RobustnessConfig`'s defaults (DeepFool and FAB-L2).
GRIDS: dict[str, dict[str, object]] = {
    "quick": {"min_norm_attacks": ("fab_l2",)},
    "full": {},
}
