"""The kNN protocol: one row per k not larger than the training set, scored on test; a case where the nearest
neighbour and the three nearest disagree gives the accuracies known by hand."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.evaluation.protocols.knn import knn
from tests.evaluation.conftest import feature_task


def _deg(d: float) -> list[float]:
    return [math.cos(math.radians(d)), math.sin(math.radians(d))]


# class 0 at 0 and near 90 degrees, class 1 at +-10 and -90 degrees (cosine similarity: only the angle counts)
TRAIN = (torch.tensor([_deg(0), _deg(10), _deg(-10), _deg(90), _deg(95), _deg(-90)]), torch.tensor([0, 1, 1, 0, 0, 1]))
# test 0 (class 0) sits at 1 degree: its nearest is the class-0 point at 0, its next two are the class-1 points at
# +-10, so k=1 is right and k=3 wrong (weights exp(sim / 0.07) differ by less than 2x); test 1 (class 0) at 88
# degrees has two class-0 neighbours among its three: right for both k
TEST = (torch.tensor([_deg(1), [3 * c for c in _deg(88)]]), torch.tensor([0, 0]))  # a row's length plays no part


def test_the_nearest_and_the_three_nearest_give_the_accuracies_known_by_hand(tmp_path):
    run, data, task = feature_task(tmp_path, {"train": TRAIN, "test": TEST}, ["a", "b"], "knn.k=[1,3,50]")
    rows = knn(run, data, task.knn)
    assert [r["setting"] for r in rows] == ["k=1", "k=3"]  # k=50 > 6 training images: left out, no warning
    assert [r["metrics"]["accuracy"]["mean"] for r in rows] == [1.0, 0.5]
    assert all(r["protocol"] == "knn" and r["model"] == "points" and r["metrics"]["accuracy"]["n"] == 1
               for r in rows)


def test_a_temperature_high_enough_makes_the_vote_a_plain_count(tmp_path):
    # at T = 100 every one of the six votes weighs the same: test 1 still has 3 of its 5 nearest in class 0
    run, data, task = feature_task(tmp_path, {"train": TRAIN, "test": TEST}, ["a", "b"], "knn.k=[5]",
                                   "knn.temperature=100")
    (row,) = knn(run, data, task.knn)
    assert row["metrics"]["accuracy"]["mean"] == 0.5  # test 0: 2 of class 0 against 3 of class 1


def test_every_k_larger_than_the_training_set_votes_with_all_of_it_and_says_so(tmp_path):
    run, data, task = feature_task(tmp_path, {"train": TRAIN, "test": TEST}, ["a", "b"], "knn.k=[10,20]")
    with pytest.warns(UserWarning, match=r"knn.k=\[10, 20\] is larger than the 6 training images: using k=6"):
        (row,) = knn(run, data, task.knn)
    assert row["setting"] == "k=6"
