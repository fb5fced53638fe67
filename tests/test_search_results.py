import dataclasses

import pytest

from nas.search.base import TrialRecord
from nas.search.evolution import active_decisions
from nas.search.results import (accuracy_label, best_record, distinct_candidates, hypervolume, pareto_front, plot_pareto,
                                trials_frame)


def rec(number, acc, lat, reward=None, state="COMPLETE"):
    return TrialRecord(number=number, state=state, assignment={}, val_acc=acc, latency_ms=lat,
                       reward=acc if reward is None else reward, hash=f"h{number}")


def test_hypervolume_hand_computed():
    # Rectangles [0.5, 2] x [0, 0.8] (1.2) and [1, 2] x [0, 0.9] (0.9) overlap on [1, 2] x [0, 0.8] (0.8).
    assert hypervolume([(0.9, 1.0), (0.8, 0.5)], 0.0, 2.0) == pytest.approx(1.3)
    # A dominated point and one beyond the reference add nothing; order does not matter.
    assert hypervolume([(0.7, 1.5), (0.8, 0.5), (0.95, 2.5), (0.9, 1.0)], 0.0, 2.0) == pytest.approx(1.3)
    assert hypervolume([], 0.0, 2.0) == 0.0


def test_pareto_front_and_best():
    records = [rec(0, 0.80, 0.5), rec(1, 0.90, 1.0), rec(2, 0.85, 1.2), rec(3, 0.95, 3.0, reward=0.7),
               rec(4, 0.99, 0.1, state="PRUNED"), rec(5, 0.80, 0.5)]
    assert [r.number for r in pareto_front(records)] == [0, 1, 3]  # 2 is dominated by 1; 5 repeats 0
    assert best_record(records).number == 1
    frame = trials_frame(records)
    assert list(frame["number"]) == [0, 1, 2, 3, 4, 5] and frame.loc[4, "state"] == "PRUNED"


def test_distinct_candidates_count_each_network_once():
    records = [rec(0, 0.8, 0.5), rec(1, 0.9, 1.0), dataclasses.replace(rec(2, 0.8, 0.5), hash="h0")]  # 0 again
    assert distinct_candidates(records) == 2 and distinct_candidates([]) == 0


def test_the_plots_accuracy_axis_names_the_evaluator():
    assert accuracy_label("proxy") == "proxy validation accuracy"
    assert accuracy_label("supernet") == "supernet val accuracy (shared weights)"
    assert accuracy_label("supernet", "likelihood") == "supernet val likelihood, exp(-loss)"
    assert accuracy_label("proxy", "likelihood") == "proxy validation accuracy"  # the proxy has no such setting
    assert accuracy_label("synthetic:0.5").startswith("synthetic")
    with pytest.raises(KeyError):
        accuracy_label("oracle")


def test_the_pareto_plot_counts_pruned_trials_in_its_legend_and_keeps_its_title_inside_the_figure(tmp_path,
                                                                                                 monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    records = [rec(0, 0.74, 0.21), rec(1, 0.77, 0.20), rec(2, 0.72, 0.31)]
    records += [rec(n, 0.2, 0.25, state="PRUNED") for n in range(3, 1290)]
    title = "fashion_mnist-evolution: accuracy vs latency"  # the title of this search (experiment-strategy)
    plot_pareto(records, tmp_path / "pareto.png", target_ms=0.305, title=title)
    (fig,) = saved
    ax = fig.axes[0]
    assert ax.get_title() == title
    assert "1287 pruned trials (not shown)" in [t.get_text() for t in ax.get_legend().get_texts()]
    canvas = FigureCanvasAgg(fig)  # the backend it was saved with (closed figures keep a bare canvas)
    canvas.draw()
    box = ax.title.get_window_extent(canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1  # not clipped (it was, with the count in the title)


def test_active_decisions_skip_blocks_past_the_depth():
    names = ["s0.depth", "s0.width", "s0.b0.kernel", "s0.b1.kernel", "s1.depth", "s1.b0.se", "s1.b1.se"]
    assert active_decisions({"s0.depth": 1, "s1.depth": 2}, names) == \
        ["s0.depth", "s0.width", "s0.b0.kernel", "s1.depth", "s1.b0.se", "s1.b1.se"]
