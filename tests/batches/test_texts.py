"""Texts of training images (manifest column or templated captions), the run tokenizer, and the text side of
the ``features`` source: teacher text targets, the caption filter, exact resume."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from organfm.batches import create_batch_source
from organfm.batches.teachers import caption_filter, teacher_text
from organfm.batches.texts import dataset_texts, run_tokenizer
from organfm.data import build_dataset
from organfm.data.errors import DataError
from organfm.synthesis import SyntheticOrgans
from organfm.text.tokenizer import WordTokenizer
from tests.batches.test_features import _ctx, stored_targets
from tests.evaluation.protocols.test_zeroshot import tiny_joint, write_export, write_manifest

TEXTS = {0: "left kidney cyst", 1: "fatty liver", 2: "clear lung", 3: "left kidney cyst", 4: "fatty liver",
         5: "clear lung"}


def test_manifest_column_captions_and_their_errors(tmp_path):
    with_col = build_dataset(write_manifest(tmp_path / "a", per_class=2, texts=TEXTS), split=None)
    plain = build_dataset(write_manifest(tmp_path / "b", per_class=2), split=None)
    by_path = {r.path: r.meta["text"] for r in with_col.records}
    assert dataset_texts(with_col, mode="auto") == [by_path[r.path] for r in with_col.records]
    # no column: auto falls back to captions templated from organ and modality; column mode is an error
    assert dataset_texts(plain, mode="auto", modality="CT") == [f"a CT image of the {r.organ}" for r in plain.records]
    assert dataset_texts(with_col, mode="captions")[0].startswith("a medical image of the ")
    assert dataset_texts(plain, mode="none") is None
    with pytest.raises(DataError, match="no record has a 'text' column"):
        dataset_texts(plain, mode="column")
    with pytest.raises(ValueError, match="method.texts must be one of"):
        dataset_texts(plain, mode="some")
    # synthetic organs have no records: captions from the organ names
    synth = SyntheticOrgans(num_organs=2, images_per_organ=2, size=32)
    assert dataset_texts(synth, mode="auto") == [f"a medical image of the organ {o:02d}" for o in synth.organ_ids]
    assert len(set(synth.organ_ids)) == 2


def test_an_empty_text_is_an_error_naming_the_file(tmp_path):
    texts = dict(TEXTS)
    texts[4] = " "
    ds = build_dataset(write_manifest(tmp_path, per_class=2, texts=texts), split=None)
    with pytest.raises(DataError, match=r"imgs/4\.png: its 'text' text is empty"):
        dataset_texts(ds, mode="auto")


def test_run_tokenizer_is_built_once_and_kept_on_resume(tmp_path):
    path = run_tokenizer(tmp_path, ["a ct of the liver"])
    assert WordTokenizer.load(path).vocab[2:] == ["a", "ct", "liver", "of", "the"]
    assert run_tokenizer(tmp_path, ["other words entirely"]) == path
    assert "liver" in WordTokenizer.load(path).vocab  # the run's vocabulary never changes under it


def test_caption_filter_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    images, texts = F.normalize(torch.randn(20, 4, generator=g), dim=1), F.normalize(torch.randn(5, 4, generator=g), dim=1)
    text_ids = torch.randint(5, (20,), generator=g)
    keep = caption_filter(images, texts, text_ids, batch_size=6, seed=1)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1)).tolist()
    for start in range(0, 20, 6):
        batch = order[start:start + 6]
        for i in batch:
            own = float(images[i] @ texts[text_ids[i]])
            best = max(float(images[i] @ texts[text_ids[j]]) for j in batch)
            assert bool(keep[i]) == (own >= best - 1e-6)
    # a teacher whose images sit on their own texts passes everywhere
    assert caption_filter(texts[text_ids], texts, text_ids, batch_size=6).all()


def test_teacher_text_targets_and_their_errors(tmp_path):
    texts = ["fatty liver", "clear lung"]
    joint = tiny_joint(texts, 96)
    export = write_export(tmp_path / "clip", joint=joint)
    feats = torch.randn(3, 96)
    images, text_emb = teacher_text("c", str(export), {"model": {}}, feats, texts)
    assert torch.allclose(images, joint.image(feats), atol=1e-6) and torch.equal(text_emb, joint.embed_texts(texts))
    # a teacher without a text tower, and one whose features come from another model
    assert teacher_text("r", "random:test_resnet", {"model": {}}, feats, texts) is None
    assert teacher_text("p", str(write_export(tmp_path / "plain")), {"model": {}}, feats, texts) is None
    with pytest.raises(ValueError, match=r"teacher c: its text tower .* maps 96-d image features.*8-d"):
        teacher_text("c", str(export), {"model": {}}, torch.randn(3, 8), texts)


def _text_ctx(tmp_path, run, **options):
    texts = [f"a medical image of the organ {o:02d}" for o in range(2)]
    export = tmp_path / "clip-export"
    if not export.exists():
        write_export(export, joint=tiny_joint(texts, 96))
    ctx = _ctx(run, teachers=(f"clip={export}", "r=random:test_convnext"))
    ctx.options.update({"texts": "captions", "text_column": "text", "caption_modality": "medical",
                        "caption_labels": False, "text_tower": "small", "text_init": "", **options})
    return ctx


def test_text_batches_carry_the_sampled_teachers_text_target_and_resume_exactly(tmp_path):
    src = create_batch_source("features", _text_ctx(tmp_path, tmp_path / "run"))
    assert src.method_kwargs["tokenizer_file"].endswith("text/tokenizer.json")
    stream = iter(src.batches)
    b = [next(stream) for _ in range(3)][2]
    stored = stored_targets(tmp_path / "run" / "teacher_features", ["clip", "r"])
    assert stored["has_text"].tolist() == [True, False] and stored["projected_text"].shape == (2, 2, 8)
    assert b["text"] == [f"a medical image of the organ {int(o):02d}" for o in b["organ"]]
    has = b["teacher_id"] == 0
    assert torch.equal(b["teacher_has_text"], has)
    assert torch.equal(b["teacher_text"][has], stored["projected_text"][0, b["text_id"][has]])
    assert (b["teacher_text"][~has] == 0).all()
    ctx = _text_ctx(tmp_path, tmp_path / "run")
    ctx.start_batch = 2
    resumed = next(iter(create_batch_source("features", ctx).batches))
    for key in ("teacher", "teacher_text", "teacher_id", "index", "text_id"):
        assert torch.equal(resumed[key], b[key])
    assert resumed["text"] == b["text"]


def test_caption_filter_needs_texts_and_a_teacher_with_a_text_tower(tmp_path):
    ctx = _text_ctx(tmp_path, tmp_path / "a", teacher_filter="caption", texts="none")
    with pytest.raises(ValueError, match="teacher_filter=caption ranks each image's text"):
        create_batch_source("features", ctx)
    ctx = _ctx(tmp_path / "b")
    ctx.options.update({"texts": "captions", "teacher_filter": "caption", "text_tower": "small"})
    with pytest.raises(ValueError, match="no teacher has a text tower"):
        create_batch_source("features", ctx)
    src = create_batch_source("features", _text_ctx(tmp_path, tmp_path / "c", teacher_filter="caption"))
    stored = stored_targets(tmp_path / "c" / "teacher_features", ["clip", "r"])
    assert stored["available"][:, 1].all() and stored["available"].any(1).all()  # the text-less teacher stays
    b = next(iter(src.batches))
    assert b["available"][torch.arange(4), b["teacher_id"]].all()
