"""The spec-hash claim protocol: no architecture is trained twice, whatever the number of workers.

After ``ask`` a worker writes the spec hash on its trial, then looks at the study (:func:`claim`).
A finished trial with the same hash is reused (``cached=True``). A RUNNING trial with the same
hash and a lower number owns the architecture: this worker waits for it and reuses its result (if
the owner dies, the wait ends with its FAIL and the claim is re-checked). Because each worker
writes its hash before it reads, of two racing workers at least the later one sees the other, and
the lowest trial number wins, so an architecture is never trained twice.

The budget works the same way: of workers racing for the last slots, the lowest trial numbers keep
them (:func:`is_surplus`).
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from nas.samplers.optuna_private import set_trial_user_attr_by_number
from nas.search.base import TrialRecord
from nas.search.storage import fail_stale_trials

CLAIMS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
POLL_SECONDS = 0.2  # how often a worker waiting for another worker's trial looks at the study


def is_surplus(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Did workers racing for the last slots ask more trials than the budget? The lowest numbers keep them."""
    before = [t for t in study.get_trials(deepcopy=False, states=CLAIMS) if t.number < number]
    return len(before) >= n_trials


def claim(study: optuna.Study, spec_hash: str, number: int) -> TrialRecord | None:
    """Own the architecture (None: train it) or get the result of the trial that owns it.

    A finished trial with the hash is reused. A lower-numbered RUNNING trial with the hash owns
    it: wait (``claim=wait``). Otherwise wait until the higher-numbered RUNNING ones have
    decided: if one owns it (it did not see this trial), wait for it; else own it
    (``claim=own``). An owner never waits, so waits end; two owners would each have missed the
    other, which cannot happen because each writes its hash before it reads."""
    trial_attrs = None
    while True:
        same = [t for t in study.get_trials(deepcopy=False, states=CLAIMS)
                if t.number != number and t.user_attrs.get("hash") == spec_hash]
        done = sorted((t for t in same if t.state != TrialState.RUNNING),
                      key=lambda t: (t.state != TrialState.COMPLETE, t.number))
        if done:
            return TrialRecord.from_frozen(done[0])
        higher = [t for t in same if t.number > number]
        owners = [t for t in higher if t.user_attrs.get("claim") == "own"]
        if any(t.number < number for t in same) or owners:
            decision = "wait"
        elif any(t.user_attrs.get("claim") not in ("own", "wait") for t in higher):
            decision = None  # a later trial is still deciding (without waiting for this one)
        else:
            set_claim(study, number, "own")
            return None
        if decision is not None and decision != trial_attrs:
            set_claim(study, number, decision)
            trial_attrs = decision
        time.sleep(POLL_SECONDS)
        fail_stale_trials(study)


def set_claim(study: optuna.Study, number: int, value: str | None) -> None:
    set_trial_user_attr_by_number(study, number, "claim", value)
