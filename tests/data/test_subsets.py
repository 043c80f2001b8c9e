"""Class-stratified subsets: per-class counts, deterministic per seed, independent of the caller, errors named."""
from __future__ import annotations

import numpy as np
import pytest

from organfm.data.subsets import stratified_subset


def test_fraction_subsets_are_stratified_and_deterministic():
    labels = np.repeat(np.arange(3), [100, 50, 10])
    idx = stratified_subset(labels, fraction=0.1, seed=4)
    assert np.bincount(labels[idx], minlength=3).tolist() == [10, 5, 1]
    assert np.array_equal(idx, stratified_subset(labels, fraction=0.1, seed=4))
    assert not np.array_equal(idx, stratified_subset(labels, fraction=0.1, seed=5))
    assert np.all(np.diff(idx) > 0)


def test_shot_subsets_take_k_per_class_or_all_of_a_small_class():
    labels = np.repeat(np.arange(4), [30, 30, 30, 3])
    idx = stratified_subset(labels, shots=5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 5, 3]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="exactly one"):
        stratified_subset([0, 1], fraction=0.5, shots=1)
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset([0, 1], fraction=0.0)


    with pytest.raises(ValueError, match="shots must be >= 1"):
        stratified_subset([0, 1], shots=0)


def test_a_tiny_fraction_still_keeps_one_item_per_class_and_rounds_half_to_even():
    labels = np.repeat(np.arange(3), [10, 5, 30])
    idx = stratified_subset(labels, fraction=0.01, seed=0)
    assert np.bincount(labels[idx]).tolist() == [1, 1, 1]
    # round(0.5 * 5) = 2 (Python rounds half to even), round(0.5 * 30) = 15
    idx = stratified_subset(labels, fraction=0.5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 2, 15]


def test_string_labels_list_input_and_empty_labels():
    labels = ["liver", "lung", "liver", "lung", "liver"]
    idx = stratified_subset(labels, shots=1, seed=3)
    assert sorted(labels[i] for i in idx) == ["liver", "lung"] and idx.dtype == np.int64
    assert stratified_subset([], shots=2).tolist() == []


def test_the_subset_depends_only_on_labels_and_seed_not_on_the_global_rng():
    labels = np.repeat(np.arange(2), 40)
    np.random.seed(0)
    first = stratified_subset(labels, fraction=0.25, seed=7)
    np.random.seed(123)
    np.random.rand(10)
    assert np.array_equal(first, stratified_subset(labels, fraction=0.25, seed=7))
