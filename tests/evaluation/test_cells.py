"""One result as text: a cell (``0.812 ± 0.010``, a dash for NaN), a row's headline line with the scores an
imbalanced test set cannot inflate, and a model's training-health cell."""
from __future__ import annotations

from organfm.evaluation.cells import format_cell, headline, health_cell


def _row(protocol, **means):
    return {"model": "m", "protocol": protocol, "setting": "s",
            "metrics": {k: {"mean": v, "sd": 0.0, "n": 1} for k, v in means.items()}}


def test_a_cell_shows_the_sd_only_for_repeats_and_a_dash_for_no_number():
    assert format_cell({"mean": 0.8125, "sd": 0.0125, "n": 3}) == "0.812 ± 0.013"
    assert format_cell({"mean": 0.8125, "sd": 0.5, "n": 1}) == "0.812"  # one value: its sd means nothing
    assert format_cell({"mean": 0.5}) == "0.500" and format_cell({"mean": 2 / 3, "n": 2}, digits=1) == "0.7 ± 0.0"
    for empty in ({"mean": float("nan"), "n": 3}, {"mean": None}, {}, {"mean": float("inf")}):
        assert format_cell(empty) == "–"


def test_a_classification_headline_shows_auc_balanced_accuracy_and_the_majority_rate():
    row = _row("finetune3d", accuracy=0.768, balanced_accuracy=0.5, auc=0.612, f1=0.43, majority_accuracy=0.768)
    assert headline(row) == "accuracy 0.768 (majority 0.768), balanced accuracy 0.500, AUC 0.612"
    assert headline(_row("knn", accuracy=0.9)) == "accuracy 0.900"  # only the scores the row has
    assert headline(_row("segmentation", mean_dice=0.81, dice_liver=0.9)) == "mean_dice 0.810"
    assert headline(_row("retrieval", **{"i2t_R@1": 0.25, "t2i_R@1": 0.5})) == "i2t_R@1 0.250"
    assert headline(_row("clusters", nmi=0.3)) == "" and headline({}) == ""


def test_health_cell_tells_a_verdict_from_random_init_from_an_unmonitored_model():
    assert health_cell({"spec": "runs/coda", "health": {"verdict": "not learning yet", "step": 20}}) == \
        "not learning yet (step 20)"
    assert health_cell({"spec": "random:test_convnext"}) == "random init"
    assert health_cell({"spec": "old/export"}) == "not monitored"
