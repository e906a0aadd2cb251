"""The trial budget of a study as a queue of numbered slots shared by all workers.

When a study is created, its ``n_trials`` slots are enqueued once (``study.enqueue_trial``):
for a grid, one slot per cell with the cell's parameters fixed; otherwise empty slots whose
parameters the sampler chooses when a worker takes them.  Taking a WAITING trial from the queue is
atomic in every Optuna storage, so workers never run the same slot or grid cell twice, and a
study finishes with exactly ``n_trials`` finished slots however many workers share it.

A slot is *settled* when its latest trial is COMPLETE, PRUNED, or FAIL because the training
diverged (a result of the searched settings).  Any other FAIL (the worker died, was interrupted,
or lost its tracking server or storage) is queued again as a retry that keeps the slot's number and
parameters but none of the failed attempt's attributes.  Interruptions are always retried; other
faults at most ``max_retry`` times per slot, after which the slot is *given up* and reported.
A trial that did not come from the queue (a worker asked when the queue had just emptied) or that
repeats a slot already taken is *surplus*: it is pruned at once, without a run.
"""

from __future__ import annotations

import datetime
import itertools
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .config import LAM_IS_ZERO, StudyConfig

SLOT_ATTR = "slot"
SURPLUS_ATTR = "surplus"
#: Trial user attributes saying why a trial failed: Ctrl-C/SIGTERM, a NaN loss, a tracking or storage fault.
INTERRUPTED_ATTR = "interrupted"
DIVERGED_ATTR = "diverged"
FAULT_ATTR = "fault"
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
    """Queue a failed trial's slot again: a new WAITING trial with the same slot and parameters.

    The retry carries only the slot (user attributes such as ``interrupted``, ``worker`` or
    ``mlflow_run_id`` belong to the failed attempt) and the ``retry_history`` system attribute
    that Optuna's ``RetryHeartbeatStaleTrialCallback`` also writes.
    """
    system_attrs = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number)}
    system_attrs["retry_history"] = [*retry_history(trial), trial.number]
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={SLOT_ATTR: trial.user_attrs[SLOT_ATTR]}, system_attrs=system_attrs,
        )
    )


def is_settled(trial: FrozenTrial) -> bool:
    """Whether a finished trial's result stands: COMPLETE, PRUNED, or FAIL because the loss diverged."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and DIVERGED_ATTR in trial.user_attrs
    )


def faults(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> int:
    """How many attempts of ``trial``'s slot, up to ``trial`` itself, failed for a reason other
    than an interruption or a diverged training (a dead worker, a tracking or storage fault)."""
    by_number = {t.number: t for t in trials}
    chain = [by_number[n] for n in retry_history(trial) if n in by_number] + [trial]
    return sum(
        t.state == TrialState.FAIL and not is_settled(t) and not t.user_attrs.get(INTERRUPTED_ATTR) for t in chain
    )


def unsettled(study: optuna.Study, max_retry: int) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """``(to_retry, given_up)``: the slots' latest trials that failed without a result and were not
    queued again, split by whether the slot has retries left (``max_retry`` faults allowed)."""
    trials = counted(study.get_trials(deepcopy=False))
    retried = retried_numbers(trials)
    failed = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried and not is_settled(t)]
    to_retry = [t for t in failed if faults(t, trials) <= max_retry]
    return to_retry, [t for t in failed if t not in to_retry]


def requeue_unsettled(study: optuna.Study, max_retry: int, worker: str | None = None) -> list[FrozenTrial]:
    """Queue again every failed slot that has retries left (only those last run by ``worker``, when
    given); returns the trials whose slots were queued."""
    to_retry = [t for t in unsettled(study, max_retry)[0] if worker is None or t.user_attrs.get("worker") == worker]
    for trial in to_retry:
        requeue(study, trial)
    return to_retry


def given_up_line(trial: FrozenTrial) -> str:
    """One line on a slot that used up its retries: its attempts and the last one's failure."""
    attempts = [*retry_history(trial), trial.number]
    failure = trial.user_attrs.get(FAULT_ATTR, "its worker stopped beating or raised an error")
    return (f"slot {trial.user_attrs.get(SLOT_ATTR)} given up after {len(attempts)} attempts "
            f"(trials {', '.join(map(str, attempts))}); last failure: {failure}")


def fail_orphaned_trials(study: optuna.Study, max_retry: int, claim_s: float = 60.0) -> list[int]:
    """Journal storages have no heartbeat: fail the RUNNING slot trials whose worker process on this
    machine no longer exists (or that no worker claimed within ``claim_s`` seconds) and queue their
    slots again; returns their numbers.  (A reused process id hides an orphan until that process ends.)"""
    host = socket.gethostname()
    now = datetime.datetime.now()
    orphans = []
    for trial in counted(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if "worker" in trial.user_attrs:
            if worker_host != host or not pid.isdigit() or _process_exists(int(pid)):
                continue
        elif trial.datetime_start is None or (now - trial.datetime_start).total_seconds() < claim_s:
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        RetryStaleSlot(max_retry)(study, study.get_trials(deepcopy=False)[trial.number])
        orphans.append(trial.number)
    return orphans


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


class RetryStaleSlot:
    """Heartbeat callback of RDB storages: queue again the slot of a trial whose worker stopped
    beating, unless the slot has used up its ``max_retry`` retries (see :func:`faults`)."""

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if SLOT_ATTR in trial.user_attrs and faults(trial, study.get_trials(deepcopy=False)) <= self.max_retry:
            requeue(study, trial)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that a later trial retries (their slot was queued again)."""
    return {n for t in trials for n in retry_history(t)}


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the earlier trials this one retries, oldest first (``[]`` for a first attempt).

    Reads the system attribute written by ``RetryHeartbeatStaleTrialCallback`` (its static
    accessor does the same but warns that it is experimental on every call).
    """
    return list(trial.system_attrs.get("retry_history", []))
