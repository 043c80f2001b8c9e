"""3D segmentation: slabs, 3D U-Net with sliding windows, labelled volumes by the contract, the protocol's input size."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from organfm.backbones import create_backbone
from organfm.data.labelled import volume_input
from organfm.evaluation.protocols.segmentation3d import Segmentation3DConfig, load_volume, train_segmentation3d
from tests.evaluation.conftest import model_run, run_protocol

PERCENTILE_CONTRACT = {"mean": [0.0], "std": [1.0], "model_hash": "x", "input_size": [1, 16, 16, 16],
                       "intensity": {"mode": "percentile_minmax", "percentiles": [0.5, 99.5], "window": None,
                                     "spacing": None}}


def test_3d_unet_with_sliding_windows_segments_a_bright_block():
    # labels: a bright block through every slab; the test slab is larger than nothing but the patch covers parts
    image = torch.rand(40, 20, 20) * 0.3
    target = torch.zeros(40, 20, 20, dtype=torch.long)
    image[:, 6:14, 6:14] += 0.6
    target[:, 6:14, 6:14] = 1
    s = Segmentation3DConfig(classes=["block"], patch_size=8, iterations=40, val_every=20, batch_size=2, lr=3e-3,
                             gap=1)
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    out = train_segmentation3d(make, lambda x: x, image, target, 2, s, seed=0)
    assert out["slabs"] == [22, 7, 9]
    assert out["metrics"]["dice"][1] > 0.8


def test_training_goes_through_the_engines_param_groups_and_warmup_cosine_schedule():
    # a plain AdamW at a constant lr (the old loop) fails every check below
    image, target = torch.rand(24, 12, 12), torch.zeros(24, 12, 12, dtype=torch.long)
    target[:, 3:9, 3:9] = 1
    s = Segmentation3DConfig(classes=["block"], patch_size=8, iterations=20, val_every=10, batch_size=2, lr=1e-2,
                             weight_decay=0.1, layer_decay=0.5, gap=1)
    made: list[torch.nn.Module] = []

    def make() -> torch.nn.Module:
        made.append(create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2]))
        return made[-1]

    steps: list[list[tuple[bool, bool, float, float]]] = []

    def on_step(step: int, optimizer: torch.optim.Optimizer) -> None:
        backbone_ids = {id(p) for p in made[0].parameters()}
        steps.append([(id(g["params"][0]) in backbone_ids, g["params"][0].ndim >= 2, g["lr"], g["weight_decay"])
                      for g in optimizer.param_groups])

    out = train_segmentation3d(make, lambda x: x, image, target, 2, s, seed=0, on_step=on_step)
    assert len(steps) == 20 and len(out["history"]) == 2 and out["best_iteration"] in (10, 20)
    decoder_lr = [max(lr for in_backbone, _, lr, _ in groups if not in_backbone) for groups in steps]
    # warmup over min(val_every, 10% of steps) = 2 steps from 0, then cosine from 1e-2 down to 1e-4
    np.testing.assert_allclose(decoder_lr[:3], [0.0, 5e-3, 1e-2], rtol=1e-6)
    np.testing.assert_allclose(decoder_lr[-1], 1e-4, rtol=1e-6)
    assert all(a >= b for a, b in zip(decoder_lr[2:], decoder_lr[3:]))
    for groups in steps[1:]:
        head = max(lr for in_backbone, _, lr, _ in groups if not in_backbone)
        # layer decay: every encoder group below the decoder's lr, the deepest encoder layer at lr * 0.5
        encoder = sorted({lr for in_backbone, _, lr, _ in groups if in_backbone})
        assert encoder and encoder[-1] == pytest.approx(head * 0.5) and all(lr < head for lr in encoder)
        # weight decay only on weights (ndim >= 2), none on biases and norm scales
        assert {wd for _, is_weight, _, wd in groups if is_weight} == {0.1}
        assert {wd for _, is_weight, _, wd in groups if not is_weight} == {0.0}


def test_batch_size_1_is_a_config_error_naming_the_key():
    s = Segmentation3DConfig(classes=["block"], patch_size=8, batch_size=1)
    with pytest.raises(ValueError, match="segmentation3d.batch_size must be >= 2"):
        train_segmentation3d(lambda: None, lambda x: x, torch.rand(24, 12, 12),
                             torch.zeros(24, 12, 12, dtype=torch.long), 2, s, seed=0)


def _mr_case(tmp_path):
    """An MR-like volume (no HU: tissue at 300-1500, a bright organ) with its label map and class map."""
    import json

    import nibabel as nib

    rng = np.random.default_rng(0)
    image = rng.gamma(4.0, 150.0, (24, 20, 20)).astype(np.float32)  # stored (X, Y, Z), 1 x 1 x 2 mm
    labels = np.zeros(image.shape, np.uint8)
    labels[6:14, 6:14, 4:20] = 1
    image[labels == 1] += 800
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "mr.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "mr_seg.nii.gz")
    (tmp_path / "classes.json").write_text(json.dumps({"1": "liver"}))
    from organfm.evaluation.task import load_task

    return load_task(None, ["protocols=[segmentation3d]", f"data.source={tmp_path / 'mr.nii.gz'}",
                            f"data.label_map={tmp_path / 'mr_seg.nii.gz'}",
                            f"data.class_map={tmp_path / 'classes.json'}",
                            "segmentation3d.classes=[liver]", "segmentation3d.iterations=2",
                            "segmentation3d.val_every=1", "segmentation3d.gap=1"])


def test_an_mr_volume_gets_the_contracts_intensity_and_cube_not_a_ct_window(tmp_path):
    task = _mr_case(tmp_path)
    s = task.segmentation3d
    image, target, names = load_volume(task.data, s, volume_input(PERCENTILE_CONTRACT))
    assert names == ["background", "liver"]
    # no spacing in the contract: pretraining resized each whole volume to its cube, so does the evaluation
    assert image.shape == target.shape == (16, 16, 16) and int(target.max()) == 1
    assert float((image >= 0.999).float().mean()) < 0.02  # only the clipped top percentile is white
    # the old CT window (40 +- 200 HU) would have whitened most of an MR volume
    windowed, _, _ = load_volume(task.data, s, volume_input(PERCENTILE_CONTRACT, window=[40, 400]))
    assert float((windowed >= 0.999).float().mean()) > 0.38
    # a contract spacing: resampled to it (display D, H, W spacing of the file is 2 x 1 x 1 mm)
    resampled, _, _ = load_volume(
        task.data, s, volume_input({**PERCENTILE_CONTRACT, "intensity": {"mode": "percentile", "spacing": [2, 2, 2]}}))
    assert resampled.shape == (20, 10, 12)


def test_segmentation3d_feeds_the_model_inputs_of_its_contracts_size(tmp_path):
    from organfm.features.extraction import FeatureCache

    task = _mr_case(tmp_path)
    seen: list[tuple[int, ...]] = []

    def make() -> torch.nn.Module:
        backbone = create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])
        conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv3d))
        conv.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[2:])))
        return backbone

    run = model_run("m", make, PERCENTILE_CONTRACT, task, "cpu", FeatureCache(tmp_path / "cache"))
    (row,) = run_protocol("segmentation3d", run, task)
    assert row["patch_size"] == 16 and row["image_shape"] == [16, 16, 16]
    assert row["input"] == {"intensity": "percentile", "window": None, "spacing": None, "cube": 16}
    assert seen and set(seen) == {(16, 16, 16)}  # training patches and sliding windows alike


def test_synthetic_subjects_are_disjoint_subjects_of_one_anatomy():
    from organfm.evaluation.protocols.segmentation3d import synthetic_subjects

    s = Segmentation3DConfig(subjects="synthetic", num_subjects=[3, 2, 2], num_labels=3, subject_seed=5)
    train, val, test = synthetic_subjects(s, 16)
    assert [len(v) for v in (train, val, test)] == [3, 2, 2]
    volumes = train + val + test
    assert all(x.shape == y.shape == (16, 16, 16) and y.dtype == torch.long for x, y in volumes)
    # every subject is its own warp and rendering of the template: no two images or label maps are equal
    assert all(not torch.equal(a[1], b[1]) and not torch.equal(a[0], b[0])
               for i, a in enumerate(volumes) for b in volumes[i + 1:])
    # one anatomy: a label covers mostly the same voxels in every subject (a new template per subject would not)
    overlap = [(train[0][1] == k) & (test[0][1] == k) for k in range(3)]
    assert sum(int(o.sum()) for o in overlap) / 16 ** 3 > 0.6
    again = synthetic_subjects(s, 16)[2]  # a pure function of the world's seed
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(test, again))
    with pytest.raises(ValueError, match=r"num_subjects must be \[train, val, test\]"):
        synthetic_subjects(Segmentation3DConfig(subjects="synthetic", num_subjects=[3, 0, 2]), 16)
    with pytest.raises(ValueError, match="subjects must be 'synthetic' or null"):
        synthetic_subjects(Segmentation3DConfig(subjects="mri"), 16)


def test_subjects_mode_trains_on_some_subjects_and_scores_every_label_on_others(tmp_path):
    from organfm.evaluation.protocols.segmentation3d import synthetic_subjects
    from organfm.evaluation.task import load_task
    from organfm.features.extraction import FeatureCache

    task = load_task(None, ["protocols=[segmentation3d]", "segmentation3d.subjects=synthetic",
                            "segmentation3d.num_subjects=[6,2,3]", "segmentation3d.num_labels=3",
                            "segmentation3d.iterations=60", "segmentation3d.val_every=30", "segmentation3d.lr=3e-3",
                            "segmentation3d.subject_seed=5"])
    contract = {"mean": [0.0], "std": [1.0], "model_hash": "x", "input_size": [1, 16, 16, 16]}
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    run = model_run("m", make, contract, task, "cpu", FeatureCache(tmp_path / "cache"))
    (row,) = run_protocol("segmentation3d", run, task)
    assert row["subjects"] == [6, 2, 3] and row["classes"] == ["label_0", "label_1", "label_2"]
    assert row["world"] == {"generator": "SyntheticOrgans", "seed": 5, "size": 16, "num_labels": 3}
    assert "6/2/3 synthetic subjects" in row["setting"] and row["patch_size"] == 16
    dice = row["values"]["mean_dice"][0]
    # label 0 is a tissue too, so it is scored; predicting the largest label everywhere scores at most
    # 2 p / (1 + p) for that label and 0 for the others
    _, _, test = synthetic_subjects(task.segmentation3d, 16)
    share = max(float(torch.cat([y.flatten() for _, y in test]).eq(k).float().mean()) for k in range(3))
    assert dice > 2 * share / (1 + share) / 3 + 0.2
    assert len(row["values"]["dice_label_0"]) == 1 and not math.isnan(row["values"]["dice_label_0"][0])
