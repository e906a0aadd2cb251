"""The trial budget of a study as a queue of numbered slots shared by all workers.

When a study is created, its ``n_trials`` slots are enqueued once (``study.enqueue_trial``):
for a grid, one slot per cell with the cell's parameters fixed; otherwise empty slots whose
parameters the sampler chooses when a worker takes them.  Taking a WAITING trial from the queue is
atomic in every Optuna storage, so workers never run the same slot or grid cell twice, and a
study finishes with exactly ``n_trials`` finished slots however many workers share it.

A slot whose worker died (heartbeat) or was interrupted is queued again as a retry that keeps
the slot number.  A trial that did not come from the queue (a worker asked when the queue had just
emptied) or that repeats a slot already taken is *surplus*: it is pruned at once, without a run.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from .config import LAM_IS_ZERO, StudyConfig

SLOT_ATTR = "slot"
SURPLUS_ATTR = "surplus"
#: Study user attribute holding the number of enqueued slots; written last, so it also means "ready".
N_SLOTS_ATTR = "n_trials"


def enqueue_slots(study: optuna.Study, config: StudyConfig, start: int = 0) -> None:
    """Enqueue slots ``start .. n_trials - 1`` (grid cells for the grid sampler) and record the total."""
    cells = config.grid() if config.study.sampler == "grid" else sampled_cells(config)
    for slot in range(start, config.study.n_trials):
        study.enqueue_trial(cells[slot], user_attrs={SLOT_ATTR: slot})
    study.set_user_attr(N_SLOTS_ATTR, config.study.n_trials)


def sampled_cells(config: StudyConfig) -> list[dict]:
    """Fixed parameters of each slot of a sampled (non-grid) study: ``{}`` lets the sampler choose.

    A ``log10_lam`` range with ``include_zero`` gets lam = 0 baseline slots first: one per
    combination of the other list-valued settings when they fit in a quarter of the budget, else
    one; every other slot is pinned to lam > 0 (``lam_is_zero = False``) and samples the rest.
    """
    n_trials = config.study.n_trials
    zero = next((p for p in config.search if p.include_zero and p.choices is None), None)
    if zero is None:
        return [{} for _ in range(n_trials)]
    listed = [p for p in config.search if p.choices is not None]
    combinations = [dict(zip([p.name for p in listed], values))
                    for values in itertools.product(*(p.grid_values() for p in listed))]
    baselines = combinations if len(combinations) <= max(1, n_trials // 4) else [{}]
    cells = [{LAM_IS_ZERO: True, **cell} for cell in baselines]
    return (cells + [{LAM_IS_ZERO: False} for _ in range(n_trials)])[:n_trials]


def n_slots(study: optuna.Study) -> int | None:
    """The number of slots enqueued so far (``None`` until the creator has finished enqueuing)."""
    return study.user_attrs.get(N_SLOTS_ATTR)


def is_surplus(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> bool:
    """True when ``trial`` has no slot or an earlier trial outside its retry chain holds the same slot."""
    slot = trial.user_attrs.get(SLOT_ATTR)
    if slot is None:
        return True
    ancestors = set(retry_history(trial))
    return any(
        other.user_attrs.get(SLOT_ATTR) == slot and other.number < trial.number and other.number not in ancestors
        for other in trials
    )


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that stand for a slot (surplus trials left out)."""
    return [t for t in trials if SLOT_ATTR in t.user_attrs and not t.user_attrs.get(SURPLUS_ATTR)]


def remaining(study: optuna.Study) -> tuple[int, int]:
    """``(waiting, running)`` slot trials: the study is done when both are 0."""
    trials = counted(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return waiting, len(trials) - waiting


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """The finished slot trials whose slot was not queued again (one per finished slot)."""
    trials = counted(study.get_trials(deepcopy=False))
    retried = retried_numbers(trials)
    return [t for t in trials if t.state.is_finished() and t.number not in retried]


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's slot again, with the same parameters (a new WAITING trial)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that a later trial retries (their slot was queued again)."""
    return {n for t in trials for n in retry_history(t)}


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the earlier trials this one retries, oldest first (``[]`` for a first attempt).

    Reads the system attribute written by ``RetryHeartbeatStaleTrialCallback`` (its static
    accessor does the same but warns that it is experimental on every call).
    """
    return list(trial.system_attrs.get("retry_history", []))
