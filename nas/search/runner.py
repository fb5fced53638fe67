"""``nas search``: open (or resume, or join) the study, run the loop, write the results.

The jobs live in their own modules: :mod:`nas.search.study` (opening, identity, interrupted trials),
:mod:`nas.search.claims` (the spec-hash claim protocol), :mod:`nas.search.loop` (the loop and the
baseline), :mod:`nas.search.workers` (several processes) and :mod:`nas.search.results` (the output
files). This module puts them in order.
"""

from __future__ import annotations

from nas.errors import NasError
from nas.experiment import Experiment, with_resolved_table
from nas.search.loop import evaluate_baseline
from nas.search.results import SearchResult, finish, summary_table  # noqa: F401
from nas.search.storage import Heartbeat, redact
from nas.search.study import check_strategy, open_session, open_study, recover_interrupted  # noqa: F401


def run_search(
    experiment: Experiment,
    *,
    strategy: str | None = None,
    n_trials: int | None = None,
    timeout_min: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    evaluator=None,
    progress: bool = True,
    measure_best: bool | None = None,
    workers: int = 1,
    heartbeat: Heartbeat | None = None,
) -> SearchResult:
    """Run (or resume, or join) the experiment's search and write its results to ``experiment.out``.

    ``evaluator``: an object with ``evaluate(spec, report)``, or a name (``proxy``, ``supernet``,
    ``synthetic[:SECONDS]``; default: the experiment's ``search.evaluator``). ``workers > 1`` starts that many worker processes (the evaluator must
    then be a name) and waits for them; ``heartbeat`` sets their heartbeat interval and grace period.
    """
    if workers > 1 and evaluator is not None and not isinstance(evaluator, str):
        raise NasError("several workers need an evaluator name (proxy, supernet or synthetic[:SECONDS]), not an object")
    check_strategy(experiment, strategy)
    experiment = with_resolved_table(experiment, progress)  # the target device's table (built if it is this machine's)
    session = open_session(experiment, strategy=strategy, n_trials=n_trials, timeout_min=timeout_min,
                           storage=storage, study_name=study_name, evaluator=evaluator, heartbeat=heartbeat,
                           workers=workers)
    study = session.study
    recover_interrupted(study)
    reward_fn = session.experiment.reward_fn()
    baseline = None
    if experiment.search.baseline:
        baseline = evaluate_baseline(study, session.space, session.evaluator, reward_fn)
    if workers > 1:
        from nas.search.workers import run_workers

        run_workers(experiment, session, workers, evaluator or experiment.search.evaluator, progress)
    else:
        session.loop(progress).run(session.n_trials, session.timeout_min)
    return finish(session.experiment, study, session.out, baseline,
                  experiment.latency.measure_best if measure_best is None else measure_best, redact(session.storage))
