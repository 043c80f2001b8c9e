"""The organ_sets source: synthetic by default, exact resume, manifest input, and the backbone it fixes."""
from __future__ import annotations

import itertools

import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.config import DataConfig, ViewsConfig


def _source(start_batch: int = 0, **data):
    data = DataConfig(**{"synthetic_organs": 3, "synthetic_images_per_organ": 12, "synthetic_size": 16, **data})
    return create_batch_source("organ_sets", SourceContext(data=data, views=ViewsConfig(), batch_size=4, seed=1,
                                                           start_batch=start_batch))


def test_batches_shapes_contract_and_resume():
    src = _source()
    batches = list(itertools.islice(iter(src.batches), 5))
    b = batches[0]
    assert b["images"].shape == (4, 3, 1, 16, 16) and b["available"].dtype == torch.bool
    assert b["labels"].shape == (4, 6) and src.steps_per_epoch == 3
    assert torch.all(b["images"][~b["available"]] == 0)
    assert src.backbone_kwargs == {"num_organs": 3, "image_size": 16, "spatial_dims": 2}
    assert src.contract["organs"] == ["heart", "brain", "liver"] and src.contract["input_size"] == [1, 16, 16]
    resumed = list(itertools.islice(iter(_source(start_batch=2).batches), 3))
    for a, r in zip(batches[2:], resumed):
        assert torch.equal(a["images"], r["images"]) and torch.equal(a["index"], r["index"])


def test_a_manifest_feeds_the_same_batches(tmp_path):
    import numpy as np
    from PIL import Image

    rows = ["subject,organ,path,disease"]
    for i in range(4):
        for organ in ("heart", "liver")[: 1 + i % 2]:
            Image.fromarray((np.random.default_rng(i).random((12, 12)) * 255).astype(np.uint8)).save(
                tmp_path / f"{i}{organ}.png")
            rows.append(f"s{i},{organ},{i}{organ}.png,{i % 2}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    src = _source(source=str(tmp_path / "m.csv"), split=None)
    b = next(iter(src.batches))
    assert b["images"].shape == (4, 2, 1, 16, 16) and src.contract["organs"] == ["heart", "liver"]
    assert b["available"].sum() == 6


def test_a_manifest_with_a_non_label_column_and_no_split_column_trains_with_label_columns(tmp_path):
    import numpy as np
    from PIL import Image

    rows = ["subject,organ,path,disease,age"]
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((12, 12)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"s{i},heart,{i}.png,{i % 2},{40 + i}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    # data.split keeps its default (train): a manifest without a split column gives all its subjects
    src = _source(source=str(tmp_path / "m.csv"), label_columns=["disease"])
    b = next(iter(src.batches))
    assert b["labels"].shape == (4, 1) and sorted(b["labels"][:, 0].tolist()) == [0, 0, 1, 1]
    assert src.summary(0)["labels"] == ["disease"] and "synthetic_subjects" not in src.contract


def test_the_synthetic_contract_records_the_world_and_an_offset_draws_other_subjects():
    src = _source()
    assert src.contract["synthetic_subjects"] == {"seed": 0, "index_offset": 0, "num_subjects": 12, "dominant": 0,
                                                  "dominant_strength": 0.35, "subtle_strength": 0.12, "noise": 0.05,
                                                  "dominant_gain": 0.0, "missing_prob": 0.2,
                                                  "dominant_missing_prob": 0.1, "mnar_strength": 1.0}
    later = _source(synthetic_index_offset=12)
    assert later.contract["synthetic_subjects"]["index_offset"] == 12
    from organfm.synthesis.subjects import SyntheticSubjects

    assert torch.equal(later.batches.dataset.subjects[0]["images"], SyntheticSubjects(24, 3, 16, 6)[12]["images"])


def test_the_shortcut_strengths_reach_the_generator_and_the_contract():
    from organfm.synthesis.subjects import SyntheticSubjects

    src = _source(synthetic_dominant_strength=0.9, synthetic_subtle_strength=0.0, synthetic_noise=0.0,
                  synthetic_dominant_gain=0.5)
    world = src.contract["synthetic_subjects"]
    assert (world["dominant_strength"], world["subtle_strength"], world["noise"], world["dominant_gain"]) == (
        0.9, 0.0, 0.0, 0.5)
    expected = SyntheticSubjects(12, 3, 16, 6, dominant_strength=0.9, subtle_strength=0.0, noise=0.0,
                                 dominant_gain=0.5)[0]["images"]
    assert torch.equal(src.batches.dataset.subjects[0]["images"], expected)
    assert not torch.equal(expected, SyntheticSubjects(12, 3, 16, 6)[0]["images"])


def test_the_missingness_settings_reach_the_generator_and_the_contract():
    src = _source(synthetic_images_per_organ=64, synthetic_missing_prob=0.0, synthetic_dominant_missing_prob=0.0,
                  synthetic_mnar_strength=0.0)
    world = src.contract["synthetic_subjects"]
    assert (world["missing_prob"], world["dominant_missing_prob"], world["mnar_strength"]) == (0.0, 0.0, 0.0)
    subjects = src.batches.dataset.subjects
    assert all(bool(subjects[i]["available"].all()) for i in range(len(subjects)))  # no organ ever missing
    assert not all(bool(_source(synthetic_images_per_organ=64).batches.dataset.subjects[i]["available"].all())
                   for i in range(64))  # the defaults do drop organs


def test_the_monitor_label_combines_the_first_labels():
    from organfm.batches.organ_sets import label_combination

    labels = torch.tensor([[0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.float32)
    assert label_combination(labels).tolist() == [4, 5, 2, 7]  # bits 0..2; the fourth label is left out
    assert label_combination(labels[:, :1]).tolist() == [0, 1, 0, 1]
    src = _source(synthetic_labels=2, synthetic_images_per_organ=40)
    batch = src.monitor(40)
    y = batch["labels"]
    assert batch["monitor_label"].tolist() == (y[:, 0] + 2 * y[:, 1]).long().tolist()
    assert len(batch["monitor_label"].unique()) == 4
