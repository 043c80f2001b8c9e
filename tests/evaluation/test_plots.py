"""The evaluation's PNG plots: one bar chart per protocol whose bars are the rows' headline means (sd error bars
for repeats, the majority rate as a line), few-shot as curves, and one scatter per (map, colour column)."""
from __future__ import annotations

import numpy as np
import pytest

from organfm.evaluation.plots import plot_embeddings, plot_results


def _row(model, protocol, setting, n=1, **metrics):
    return {"model": model, "protocol": protocol, "setting": setting,
            "metrics": {k: {"mean": m, "sd": s, "n": n} for k, (m, s) in metrics.items()}}


def test_bars_are_the_headline_means_per_model_and_setting(tmp_path, figures):
    rows = [_row("a", "knn", "k=10", accuracy=(0.5, 0.0), auc=(0.9, 0.0), majority_accuracy=(0.4, 0.0)),
            _row("b", "knn", "k=10", accuracy=(0.7, 0.0), majority_accuracy=(0.4, 0.0)),
            _row("a", "knn", "k=20", accuracy=(0.6, 0.0)),
            _row("a", "segmentation", "4/2/2 slices", n=3, mean_dice=(0.8, 0.05), dice_liver=(0.9, 0.0))]
    paths = plot_results(rows, tmp_path / "plots")
    assert paths == {"knn": tmp_path / "plots" / "knn.png", "segmentation": tmp_path / "plots" / "segmentation.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths.values())
    knn, seg = (fig.axes[0] for fig in figures)
    heights = [round(bar.get_height(), 6) for bar in knn.patches]
    # model a at k=10, k=20, then model b at k=10 and (no row) k=20: a missing row is a NaN bar, not a zero
    assert heights[:3] == [0.5, 0.6, 0.7] and np.isnan(heights[3])
    assert knn.get_ylabel() == "accuracy" and [t.get_text() for t in knn.get_xticklabels()] == ["k=10", "k=20"]
    assert [line.get_ydata()[0] for line in knn.lines if line.get_linestyle() == "--"] == [0.4]  # the majority rate
    assert [round(bar.get_height(), 6) for bar in seg.patches] == [0.8] and seg.get_ylabel() == "mean_dice"
    # three repeats: the sd is drawn as an error bar from mean - sd to mean + sd
    (caps, bars) = next(c for c in seg.containers if hasattr(c, "lines")).lines[1:]
    segment = bars[0].get_segments()[0]
    np.testing.assert_allclose([segment[0][1], segment[1][1]], [0.75, 0.85])


def test_few_shot_is_a_curve_over_the_settings_and_names_are_file_safe(tmp_path, figures):
    rows = [_row("m", "fewshot/linear", s, accuracy=(v, 0.0)) for s, v in (("1%", 0.3), ("10%", 0.6))]
    paths = plot_results(rows, tmp_path)
    assert list(paths) == ["fewshot/linear"] and paths["fewshot/linear"].name == "fewshot_linear.png"
    (ax,) = figures[0].axes
    curve = next(line for line in ax.lines if line.get_marker() == "o")
    assert curve.get_ydata().tolist() == [0.3, 0.6] and not ax.patches


def test_one_scatter_per_map_and_column_with_one_colour_per_category(tmp_path, figures):
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    paths = plot_embeddings("coda run", {"tsne": coords}, {"class": ["b", "a", "b", ""], "split": ["t"] * 4},
                            tmp_path)
    assert list(paths) == ["coda run-tsne-class", "coda run-tsne-split"]
    assert paths["coda run-tsne-class"].name == "coda_run-tsne-class.png" and paths["coda run-tsne-class"].is_file()
    ax = figures[0].axes[0]
    groups = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert groups == {"(none)": [[3.0, 3.0]], "a": [[1.0, 1.0]], "b": [[0.0, 0.0], [2.0, 2.0]]}
    assert len(figures[1].axes[0].collections) == 1
