"""``health.png``: one panel per signal the records hold, in a fixed order, each curve the recorded values over
steps with its reference drawn beside it; nothing to draw gives no file."""
from __future__ import annotations

import pytest

from organfm.monitor.plot import plot_health


RECORDS = [
    {"step": 0, "knn": 0.3, "knn_majority": 0.25, "distance": 0.0, "teacher_entropy": 4.0,
     "teacher_batch_entropy": 4.1, "log_k": 4.16},
    {"step": 10, "knn": 0.6, "knn_majority": 0.25, "distance": 0.2, "teacher_entropy": 2.5,
     "teacher_batch_entropy": 3.9, "log_k": 4.16},
]


def test_one_panel_per_recorded_signal_with_its_values_and_reference(figures):
    png = plot_health(RECORDS, title="learning")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["monitor kNN accuracy",
                                                 "teacher entropy (per sample / batch mean) vs ln K",
                                                 "distance from initial weights"]
    assert fig._suptitle.get_text() == "training health: learning"
    knn, entropy, distance = ({line.get_label(): line for line in ax.lines} for ax in panels)
    assert knn["knn"].get_xdata().tolist() == [0, 10] and knn["knn"].get_ydata().tolist() == [0.3, 0.6]
    assert knn["knn_majority"].get_ydata().tolist() == [0.25, 0.25] and knn["knn_majority"].get_linestyle() == "--"
    assert entropy["batch mean"].get_ydata().tolist() == [4.1, 3.9] and "log_k" in entropy
    assert set(distance) == {"distance"}  # no reference line for the distance
    assert sum(ax.axison for ax in fig.axes) == 3 and len(fig.axes) == 3  # one row of three


def test_unused_grid_cells_are_blank_and_organ_entropy_is_shown_against_step_zero(figures):
    records = [{"step": 0, "rankme": 5.0, "uniformity": -1.0, "alignment": 0.5, "organ_entropy": 1.1},
               {"step": 4, "rankme": 6.0, "uniformity": -2.0, "alignment": 0.4, "organ_entropy": 0.7}]
    plot_health(records)
    axes = figures[0].axes
    assert len(axes) == 6 and [ax.axison for ax in axes] == [True, True, True, True, False, False]
    organ = next(ax for ax in axes if ax.get_title() == "organ-attention entropy")
    step0 = next(line for line in organ.lines if line.get_label() == "step 0 (fresh init)")
    assert list(step0.get_ydata()) == [1.1, 1.1]


def test_nothing_to_draw_gives_none():
    assert plot_health([]) is None
    assert plot_health([{"step": 0, "loss": 1.0}]) is None  # no monitor signal among the keys
