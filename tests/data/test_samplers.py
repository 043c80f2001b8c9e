import itertools

import pytest

from organfm.data.samplers import ResumableBatchSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_epochs_are_permutations_and_seeds_are_distinct():
    s = ResumableBatchSampler(20, 5, seed=1)
    batches = take(s, 8)  # two epochs
    for epoch in (batches[:4], batches[4:]):
        ids = [i for b in epoch for i, _ in b]
        assert sorted(ids) == list(range(20))
    seeds = [sd for b in batches for _, sd in b]
    assert len(set(seeds)) == len(seeds)  # the same image gets new augmentations in a new epoch
    assert [i for i, _ in batches[0]] != [i for i, _ in batches[4]]


def test_resume_continues_the_same_stream():
    full = take(ResumableBatchSampler(23, 4, seed=7), 12)
    resumed = take(ResumableBatchSampler(23, 4, seed=7, start_batch=7), 5)
    assert resumed == full[7:12]


def test_ranks_split_each_epoch_without_overlap():
    r0 = take(ResumableBatchSampler(16, 4, seed=0, rank=0, world_size=2), 2)
    r1 = take(ResumableBatchSampler(16, 4, seed=0, rank=1, world_size=2), 2)
    ids0 = {i for b in r0 for i, _ in b}
    ids1 = {i for b in r1 for i, _ in b}
    assert not ids0 & ids1 and len(ids0 | ids1) == 16


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fill one batch"):
        ResumableBatchSampler(3, 4)
