"""The strategies benchmark's evaluation cache: a hit replays its intermediate accuracies to the
study's pruner and ends where a fresh training would."""

import pytest

from nas.search.evaluate import Evaluation
from nas.spec import load_space
from tests.conftest import ROOT, load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("search_strategies")


class Inner:
    """Trains nothing: two reports, then the evaluation it was built with."""

    def __init__(self, result: Evaluation) -> None:
        self.result, self.trained = result, 0

    def latency(self, spec):
        return 0.5, 0.5, None

    def evaluate(self, spec, report=None):
        self.trained += 1
        for step, acc in ((39, 0.6), (78, 0.7)):
            if report is not None and report(step, step / 156, acc):
                return Evaluation(val_acc=acc, latency_ms=0.5, steps=step, pruned=True)
        return self.result


def _pruner_at(step_to_prune):
    return lambda step, epoch, acc: step >= step_to_prune


@pytest.mark.parametrize("first_prune, again_prune, retrained, pruned", [
    (999, 999, 0, False),  # finished, and this study lets it finish: a hit
    (999, 78, 0, False),   # finished: the last report never prunes a finished training
    (78, 78, 0, True),     # pruned at its last report, and pruned there again: a hit
    (39, 39, 0, True),     # pruned at the first report, and there again
    (39, 999, 1, False),   # stored pruned earlier than this study would prune it: trained again
])
def test_a_hit_ends_where_a_fresh_training_would(bench, tmp_path, first_prune, again_prune, retrained, pruned):
    spec = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml").baseline
    inner = Inner(Evaluation(val_acc=0.8, latency_ms=0.5, steps=100))
    cache = bench.CachedEvaluator(inner, tmp_path)
    cache.evaluate(spec, _pruner_at(first_prune))
    assert inner.trained == 1
    again = cache.evaluate(spec, _pruner_at(again_prune))
    assert inner.trained == 1 + retrained
    assert again.pruned is pruned


def test_an_entry_of_an_earlier_version_is_read_back(bench, tmp_path):
    """Entries written when ``Evaluation`` had an ``extra`` field (and without ``val_top1``) still hit."""
    import json

    spec = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml").baseline
    (tmp_path / f"{spec.hash}.json").write_text(json.dumps(
        {"spec": spec.to_string(), "val_acc": 0.8, "latency_ms": 0.5, "latency_predicted_ms": None,
         "latency_measured_ms": None, "seconds": 3.0, "steps": 100, "pruned": False, "extra": {}, "reports": []}))
    inner = Inner(Evaluation(val_acc=0.1, latency_ms=0.5, steps=100))
    hit = bench.CachedEvaluator(inner, tmp_path).evaluate(spec)
    assert (inner.trained, hit.val_acc, hit.steps) == (0, 0.8, 100)
