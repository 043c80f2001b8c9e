"""SyntheticSubjects: seeded, MNAR missingness, a planted dominant-organ shortcut, 2D and 3D."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.synthesis.subjects import SyntheticSubjects


def test_items_are_a_pure_function_of_seed_and_index_and_missing_organs_are_zero():
    a, b = SyntheticSubjects(20, 4, 16, seed=3), SyntheticSubjects(20, 4, 16, seed=3)
    x, y = a[7], b[7]
    assert torch.equal(x["images"], y["images"]) and torch.equal(x["available"], y["available"])
    assert not torch.equal(SyntheticSubjects(20, 4, 16, seed=4)[7]["images"], x["images"])
    assert x["images"].shape == (4, 1, 16, 16) and x["labels"].shape == (2,)
    for i in range(20):
        item = a[i]
        assert item["available"].any()
        assert torch.all(item["images"][~item["available"]] == 0)
        assert float(item["images"].min()) >= 0 and float(item["images"].max()) <= 1
        labels, avail = a.labels_and_availability(i)
        assert np.array_equal(avail, item["available"].numpy())


def test_missingness_is_not_at_random():
    data = SyntheticSubjects(2000, 5, 16, mnar_strength=1.5, missing_prob=0.3)
    labels, avail = zip(*(data.labels_and_availability(i) for i in range(2000)))
    sick, avail = np.stack(labels)[:, 0] == 1, np.stack(avail)
    missing_sick, missing_well = 1 - avail[sick, 1:].mean(), 1 - avail[~sick, 1:].mean()
    assert missing_sick > missing_well + 0.2  # logit shift 3: ~0.66 vs ~0.09
    mcar = SyntheticSubjects(2000, 5, 16, mnar_strength=0.0, missing_prob=0.3)
    labels, avail = zip(*(mcar.labels_and_availability(i) for i in range(2000)))
    sick, avail = np.stack(labels)[:, 0] == 1, np.stack(avail)
    assert abs((1 - avail[sick, 1:].mean()) - (1 - avail[~sick, 1:].mean())) < 0.05


def test_the_dominant_organ_carries_the_easier_signal():
    """Mean-image difference between sick and healthy subjects is larger in the dominant organ."""
    data = SyntheticSubjects(300, 3, 16, dominant=1, missing_prob=1e-6, dominant_missing_prob=1e-6, mnar_strength=0)
    items = [data[i] for i in range(300)]
    images = torch.stack([it["images"] for it in items])[:, :, 0]  # (N, O, H, W)
    sick = torch.stack([it["labels"][0] for it in items]) == 1
    gap = (images[sick].mean(0) - images[~sick].mean(0)).abs().amax((-2, -1))  # (O,)
    assert gap[1] > 2 * gap[0] and gap[1] > 2 * gap[2]
    assert gap[0] > 0.03 and gap[2] > 0.03  # the other organs carry a subtle signal too


def test_3d_volumes_and_bad_settings():
    vol = SyntheticSubjects(4, 2, 8, dim=3)[0]
    assert vol["images"].shape == (2, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="dominant organ 5"):
        SyntheticSubjects(4, 3, 16, dominant=5)
    with pytest.raises(ValueError, match="dim"):
        SyntheticSubjects(4, 3, 16, dim=4)


def test_mednist_subjects_hold_real_region_images_with_the_planted_marks(mednist_archive):
    from organfm.synthesis.subjects import MedNISTSubjects

    data = MedNISTSubjects(str(mednist_archive), 60, 3, 32, per_region=20, missing_prob=1e-6,
                           dominant_missing_prob=1e-6, mnar_strength=0)
    assert data.organs == ["CXR", "AbdomenCT", "ChestCT"]
    item = data[0]
    assert item["images"].shape == (3, 1, 32, 32) and item["available"].all()
    assert torch.equal(data[0]["images"], item["images"])  # seeded
    pools = data._pools
    # with no disease the slot is one of that region's real images plus noise
    healthy = next(i for i in range(60) if data[i]["labels"].sum() == 0)
    img = data[healthy]["images"][1, 0].numpy()
    assert min(np.abs(img - p).mean() for p in pools["AbdomenCT"]) < 0.06
    items = [data[i] for i in range(60)]
    images = torch.stack([it["images"] for it in items])[:, :, 0]
    sick = torch.stack([it["labels"][0] for it in items]) == 1
    gap = (images[sick].mean(0) - images[~sick].mean(0)).abs().amax((-2, -1))
    assert gap[0] > gap[1] and gap[0] > gap[2]  # the dominant slot carries the strong mark


def test_an_index_offset_draws_other_subjects_of_the_same_world():
    base = SyntheticSubjects(20, 3, 16, seed=0)
    later = SyntheticSubjects(10, 3, 16, seed=0, index_offset=10)
    # the same world: item i of the offset set is subject 10 + i of the base set, pixels and all
    for i in range(10):
        a, b = base[10 + i], later[i]
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert base._anatomy[0][0].tolist() == later._anatomy[0][0].tolist()
    # another seed is another world (anatomy differs), which an offset is not
    assert base._anatomy[0][0].tolist() != SyntheticSubjects(20, 3, 16, seed=1)._anatomy[0][0].tolist()
    assert later.summary()["index_offset"] == 10
    with pytest.raises(ValueError, match="index_offset"):
        SyntheticSubjects(4, 3, 16, index_offset=-1)


def test_missingness_is_mnar_by_default_and_mcar_at_zero_strength():
    def rates(**kw):  # per-organ missing rate among subjects without / with disease 0
        data = SyntheticSubjects(4000, 3, 16, **kw)
        draws = [data.labels_and_availability(i) for i in range(len(data))]
        y = np.array([d[0][0] for d in draws]).astype(bool)
        missing = ~np.stack([d[1] for d in draws])
        return missing[~y].mean(0), missing[y].mean(0)

    healthy, sick = rates(missing_prob=0.3, dominant_missing_prob=0.1, mnar_strength=0.0)
    # MCAR: the base rates whatever the label (the dominant organ 0 has its own); 4000 draws: sd ~0.01
    np.testing.assert_allclose(healthy, [0.1, 0.3, 0.3], atol=0.04)
    np.testing.assert_allclose(sick, [0.1, 0.3, 0.3], atol=0.04)
    healthy, sick = rates(missing_prob=0.3, dominant_missing_prob=0.1, mnar_strength=1.0)
    # MNAR: logit(p) -/+ 1 for the healthy / sick
    np.testing.assert_allclose(sick[1:], 1 / (1 + np.exp(-(np.log(0.3 / 0.7) + 1))), atol=0.04)
    np.testing.assert_allclose(healthy[1:], 1 / (1 + np.exp(-(np.log(0.3 / 0.7) - 1))), atol=0.04)


@pytest.mark.parametrize("name", ["missing_prob", "dominant_missing_prob"])
def test_missing_probabilities_outside_0_1_are_refused(name):
    with pytest.raises(ValueError, match=name):
        SyntheticSubjects(4, 3, 16, **{name: 1.0})


def test_the_dominant_organ_can_be_fixed():
    data = SyntheticSubjects(8, 3, 16, dominant=2)
    assert data.summary()["dominant_organ"] == data.organs[2]


def test_the_dominant_gain_scales_whole_organs_by_disease_0_severity():
    plain = SyntheticSubjects(200, 3, 16, noise=0.0)
    gained = SyntheticSubjects(200, 3, 16, noise=0.0, dominant_gain=1.0, dominant_strength=0.4, subtle_strength=0.1)
    plain_marks = SyntheticSubjects(200, 3, 16, noise=0.0, dominant_strength=0.4, subtle_strength=0.1)
    ratios, severities = [], []
    for i in range(200):
        s = gained.severity(i)
        labels, avail = gained.labels_and_availability(i)
        assert (s > 0.5) == bool(labels[0])  # the label is the severity's threshold
        a, b = gained[i]["images"], plain_marks[i]["images"]
        for o, share in ((0, 1.0), (1, 0.25)):  # the other organs by the subtle / dominant strength ratio
            if avail[o]:
                # the same pixels as without the gain, times 1 + g share (s - 0.5), before the [0, 1] clip
                factor = 1.0 + share * (s - 0.5)
                expected = torch.clamp(b[o] * factor, 0, 1) if float(b[o].max()) * factor <= 1 else None
                if expected is not None:
                    assert torch.allclose(a[o], expected, atol=1e-5)
        if avail[0]:
            ratios.append(float(a[0].mean() / b[0].mean()))
            severities.append(s)
    assert np.corrcoef(ratios, severities)[0, 1] > 0.99
    assert torch.equal(plain[3]["images"], SyntheticSubjects(200, 3, 16, noise=0.0)[3]["images"])  # off by default
