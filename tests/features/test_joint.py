"""``organfm embed --joint/--texts``: joint-space image and text embeddings beside the features, reused on a
second call, refused early for a model without a text tower."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.data.errors import DataError
from organfm.features.store import embed_dataset, load_features
from organfm.features.joint import JOINT_IMAGES, JOINT_TEXTS, embed_joint
from tests.features.test_store import Images
from tests.evaluation.protocols.test_zeroshot import tiny_joint, write_export

TEXTS = ["fatty liver", "clear lung", "left kidney"]


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_joint_embeddings_equal_the_models_heads_and_are_reused(tmp_path):
    joint = tiny_joint(TEXTS, 96)
    export = write_export(tmp_path / "clip", joint=joint)
    folder = tmp_path / "feats"
    embed_dataset(str(export), Images(6), folder, shard_size=4)
    texts = [TEXTS[i % 3] for i in range(6)]
    assert embed_joint(folder, texts=texts)["reused"] is False
    feats, _ = load_features(folder)
    images = np.load(folder / JOINT_IMAGES)
    assert np.allclose(images, joint.image(feats).detach().numpy(), atol=1e-6)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(np.load(folder / JOINT_TEXTS), joint.embed_texts(texts).numpy())
    before = _mtimes(folder)
    assert embed_joint(folder, texts=texts)["reused"] is True and _mtimes(folder) == before
    # other texts rewrite the text file
    assert embed_joint(folder, texts=texts[::-1])["reused"] is False
    assert np.array_equal(np.load(folder / JOINT_TEXTS), joint.embed_texts(texts[::-1]).numpy())
    with pytest.raises(DataError, match="2 texts for 6 images"):
        embed_joint(folder, texts=texts[:2])


def test_a_model_without_a_text_tower_has_no_joint_space(tmp_path):
    folder = tmp_path / "feats"
    embed_dataset("random:test_resnet", Images(4), folder)
    with pytest.raises(ValueError, match="has no text tower"):
        embed_joint(folder)


def test_cli_refuses_joint_for_a_model_without_text_before_embedding(tmp_path, capsys):
    from organfm.cli.main import main

    out = tmp_path / "feats"
    rc = main(["embed", "--model", "random:test_resnet", "--out", str(out), "--joint", "--image-size", "32",
               "data=synthetic", "data.synthetic_images_per_organ=2"])
    assert rc != 0 and "has no text tower" in capsys.readouterr().err
    assert not (out / "index.json").exists()
    export = write_export(tmp_path / "clip", joint=tiny_joint([f"a medical image of the organ {i:02d}" for i in range(8)], 96))
    assert main(["embed", "--model", str(export), "--out", str(out), "--texts", "captions", "--quiet",
                 "data=synthetic", "data.synthetic_images_per_organ=2"]) == 0
    assert np.load(out / JOINT_TEXTS).shape == (16, 8) and torch.isfinite(torch.from_numpy(np.load(out / JOINT_IMAGES))).all()
