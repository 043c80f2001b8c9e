"""Generated from the protocol registry: every registered protocol runs on a tiny task and writes its rows.

A new protocol without a tiny case here fails ``test_every_registered_protocol_has_a_tiny_case``, so the registry
and this file cannot drift apart.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from organfm.backbones import TimmBackbone, create_backbone
from organfm.data.records import Record
from organfm.evaluation.protocol import list_protocols
from organfm.evaluation.report import markdown_tables, to_json
from organfm.evaluation.task import load_task
from organfm.evaluation.task_data import SplitData, TaskData
from organfm.features.extraction import FeatureCache
from tests.evaluation.conftest import model_run, run_protocol

# (task overrides, model) per protocol; every setting shrunk to seconds on one busy core
Case = Callable[[Path], tuple[Any, Any, Any]]  # tmp_path -> (run, task, data)

_FEATURE_SETTINGS = ("knn.k=[2]", "linear.epochs=2", "linear.lrs=[0.1]", "linear.weight_decays=[0.0]",
                     "fewshot.fractions=[0.5]", "fewshot.shots=[1]", "fewshot.seeds=1", "fewshot.methods=[linear]",
                     "finetune.epochs=1", "finetune.batch_size=4", "finetune.augment=false",
                     "clusters.embeddings=[tsne]", "clusters.k=2", "clusters.perplexity=2", "retrieval.k=[1]")


def _image_task(tmp_path: Path, protocol: str) -> tuple[Any, Any, Any]:
    """Six 2x2 images of 3 classes per split, a flattening model with a text tower (zero-shot, retrieval)."""
    from tests.evaluation.protocols.test_zeroshot import CLASSES, tiny_joint

    from organfm.text.tower import save_joint_text

    folder = save_joint_text(tiny_joint(["a b"], image_dim=4), tmp_path / "text")
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    splits = {}
    for k, name in enumerate(("train", "val", "test")):
        images = torch.zeros(len(labels), 1, 2, 2)
        images.view(len(labels), 4)[torch.arange(len(labels)), labels] = 1.0
        images += 0.05 * torch.rand(images.shape, generator=torch.Generator().manual_seed(k))
        records = [Record(path=f"{name}/{i}.png", reader="png", key=f"{name}/{i}.png", organ=CLASSES[int(y)])
                   for i, y in enumerate(labels)]
        splits[name] = SplitData(images=images, labels=labels, records=records, identity=f"tiny-{name}", name=name)
    data = TaskData(splits=splits, class_names=CLASSES)
    task = load_task(None, ["data.source=x", f"protocols=[{protocol}]", *_FEATURE_SETTINGS])
    contract = {"mean": [0.0], "std": [1.0], "model_hash": "flatten", "text": str(folder), "spec": "flatten"}
    return model_run("tiny", nn.Flatten, contract, task, "cpu", FeatureCache(tmp_path / "cache")), task, data


def _segmentation(tmp_path: Path) -> tuple[Any, Any, Any]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    image = rng.normal(0, 30, (32, 32, 24)).astype(np.float32)  # stored (X, Y, Z): 24 axial slices of 32 x 32
    labels = np.zeros(image.shape, np.uint8)
    labels[8:20, 8:20, :] = 1
    image[labels == 1] += 150
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "seg.nii.gz")
    task = load_task(None, ["protocols=[segmentation]", f"data.root={tmp_path}", "data.source=ct.nii.gz",
                            "data.label_map=seg.nii.gz", "segmentation.classes=null", "segmentation.image_size=32",
                            "segmentation.block_size=4", "segmentation.epochs=1", "segmentation.batch_size=4"])
    contract = {"mean": [0.5], "std": [0.5], "model_hash": "r"}
    return model_run("tiny", lambda: TimmBackbone("test_resnet"), contract, task, "cpu",
                     FeatureCache(tmp_path / "cache")), task, None


def _finetune3d(tmp_path: Path) -> tuple[Any, Any, Any]:
    from tests.evaluation.protocols.test_finetune3d import _npz

    task = load_task(None, ["protocols=[finetune3d]", f"data.source={_npz(tmp_path, n=6)}", "finetune3d.epochs=1",
                            "finetune3d.batch_size=4", "finetune3d.image_size=8"])
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    contract = {"mean": [0.0], "std": [1.0], "model_hash": "x"}
    return model_run("tiny", make, contract, task, "cpu", FeatureCache(tmp_path / "cache")), task, None


def _segmentation3d(tmp_path: Path) -> tuple[Any, Any, Any]:
    from tests.evaluation.protocols.test_segmentation3d import PERCENTILE_CONTRACT, _mr_case

    task = _mr_case(tmp_path)
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    return model_run("tiny", make, PERCENTILE_CONTRACT, task, "cpu", FeatureCache(tmp_path / "cache")), task, None


def _subjects(tmp_path: Path) -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", num_organs=3, image_size=16, patch_size=8, embed_dim=16, depth=1,
                         num_heads=2)
    task = load_task("configs/tasks/panfm_synthetic.yaml", ["subjects.repeats=1", "subjects.num_subjects=40",
                                                            "subjects.drops=[dominant]"])
    contract = {"mean": [0.5], "std": [0.5], "backbone_args": dict(bb.backbone_args), "input_size": [1, 16, 16],
                "organs": ["heart", "brain", "liver"]}
    return model_run("tiny", lambda: bb, contract, task, "cpu", FeatureCache(tmp_path / "cache")), task, None


CASES: dict[str, Case] = {
    **{name: (lambda tmp, name=name: _image_task(tmp, name))
       for name in ("clusters", "fewshot", "finetune", "knn", "linear", "retrieval", "zeroshot")},
    "segmentation": _segmentation, "finetune3d": _finetune3d, "segmentation3d": _segmentation3d,
    "subjects": _subjects,
}


def test_every_registered_protocol_has_a_tiny_case():
    assert sorted(CASES) == list_protocols()


@pytest.mark.parametrize("name", list_protocols())
def test_the_protocol_runs_on_a_tiny_task_and_writes_its_rows(name: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[3])  # task files named relative to the checkout
    run, task, data = CASES[name](tmp_path)
    rows = run_protocol(name, run, task, data)
    assert rows, f"{name} returned no rows"
    for row in rows:
        assert row["model"] == "tiny" and row["protocol"].startswith(name) and isinstance(row["setting"], str)
        assert row["metrics"] and set(row["metrics"]) == set(row["values"])
        for metric, summary in row["metrics"].items():
            assert summary["n"] == len(row["values"][metric]) >= 1
    written = json.loads(json.dumps(to_json({"rows": rows})))  # what results.json holds
    assert [r["protocol"] for r in written["rows"]] == [r["protocol"] for r in rows]
    assert f"## {rows[0]['protocol']}" in markdown_tables({"rows": rows})
