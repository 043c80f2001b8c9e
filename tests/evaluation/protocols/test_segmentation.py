"""U-Net segmentation on a pretrained encoder: shapes, gradients, learning, loss, real CT slices and splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from organfm.backbones import TimmBackbone
from organfm.evaluation.metrics import segmentation_metrics
from organfm.data.labelled import load_ct_segmentation_slices
from organfm.data.slabs import split_slabs
from organfm.evaluation.protocols.segmentation import finetune_segmentation
from organfm.heads.decoders import BackboneUNet, UNetDecoder
from tests.data.test_labelled import ORGANS


def _squares(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with a bright square (class 1) and a dark square (class 2; drawn last, on top)."""
    g = torch.Generator().manual_seed(seed)
    images = 0.2 * torch.randn(n, 1, size, size, generator=g)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for cls in (1, 2):
            side = int(torch.randint(6, 12, (1,), generator=g))
            r, c = torch.randint(0, size - side, (2,), generator=g).tolist()
            masks[i, r:r + side, c:c + side] = cls
    images[:, 0] += 1.5 * (masks == 1) - 1.5 * (masks == 2)
    return images, masks


@pytest.mark.parametrize("name", ["test_convnext", "test_resnet"])
@pytest.mark.parametrize("size", [32, 64])
def test_unet_output_shape_and_gradients(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = BackboneUNet(TimmBackbone(name), num_classes=3)
    x = torch.randn(2, 1, size, size)
    logits = model(x)
    assert logits.shape == (2, 3, size, size)
    logits.square().mean().backward()
    for pname, p in model.named_parameters():
        if pname.startswith("backbone.model.head."):  # the pooled-embedding head is not part of the U-Net
            continue
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    stem = "backbone.model.stem.0.weight" if name == "test_convnext" else "backbone.model.conv1.0.weight"
    grads = dict(model.named_parameters())
    assert grads[stem].grad.abs().sum() > 0  # reaches the encoder's first layer ...
    assert grads["decoder.classifier.weight"].grad.abs().sum() > 0  # ... and the decoder


def test_decoder_builds_3d() -> None:
    decoder = UNetDecoder([8, 16], num_classes=2, spatial_dims=3)
    skips = [torch.randn(1, 8, 4, 8, 8), torch.randn(1, 16, 2, 4, 4)]
    assert decoder(skips, torch.randn(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetDecoder([8, 16], num_classes=2, spatial_dims=4)


class _Planted(torch.nn.Module):
    """A "segmenter" that outputs the class map planted in channel 0 of its input, as confident logits."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * torch.nn.functional.one_hot(x[:, 0].long(), self.num_classes).movedim(-1, 1).float()


def test_scoring_pools_dice_over_every_evaluation_batch() -> None:
    from organfm.evaluation.protocols.segmentation import _EVAL_BATCH, _score_segmentation

    n = _EVAL_BATCH + 6  # two evaluation batches
    masks = torch.zeros(n, 4, 4, dtype=torch.long)
    masks[:, :2, :2] = 1  # 4 px of class 1 in every slice; class 2 never in the masks; class 3 nowhere
    planted = masks.clone()
    planted[_EVAL_BATCH:] = 0  # the second batch misses class 1 entirely ...
    planted[-1, 3, 3] = 2  # ... and calls one pixel class 2
    metrics, loss = _score_segmentation(_Planted(4), (planted[:, None].float(), masks), 4, "cpu")
    # class 1 pooled: I = P = 4 * 64, T = 4 * 70; class 2: P = 1, T = I = 0; class 3 has no score
    assert metrics["dice"] == pytest.approx({1: 2 * 256 / (256 + 280), 2: 0.0}, abs=1e-12)
    assert metrics["iou"] == pytest.approx({1: 256 / 280, 2: 0.0}, abs=1e-12)
    assert metrics["mean_dice"] == pytest.approx((64 / 67 + 0.0) / 2, abs=1e-12)
    assert np.isfinite(loss) and loss > 0


@pytest.fixture(scope="module")
def squares_run() -> dict:
    train, val, test = _squares(48, 0), _squares(16, 1), _squares(32, 2)
    kwargs = dict(num_classes=3, epochs=4, batch_size=8, lr=1e-3, augment=False, seed=0)
    return {"test": test,
            "first": finetune_segmentation(lambda: TimmBackbone("test_resnet"), train, val, test, **kwargs),
            "second": finetune_segmentation(lambda: TimmBackbone("test_resnet"), train, val, test, **kwargs)}


def test_unet_learns_squares(squares_run: dict) -> None:
    masks = squares_run["test"][1]
    # trivial baseline: every pixel called the most frequent foreground class
    frequent = int(torch.bincount(masks.flatten(), minlength=3)[1:].argmax()) + 1
    baseline = segmentation_metrics(torch.full_like(masks, frequent), masks, 3)["mean_dice"]
    result = squares_run["first"]
    assert result["metrics"]["mean_dice"] > 0.6 > baseline + 0.3
    assert set(result["metrics"]["dice"]) == {1, 2}
    assert 1 <= result["best_epoch"] <= result["epochs_run"] == len(result["history"])
    best = result["history"][result["best_epoch"] - 1]
    assert best["mean_dice"] == max(h["mean_dice"] for h in result["history"])
    assert result["val_metrics"]["mean_dice"] == pytest.approx(best["mean_dice"], abs=1e-12)


def test_segmentation_same_seed_same_numbers(squares_run: dict) -> None:
    assert squares_run["first"]["metrics"] == squares_run["second"]["metrics"]
    assert squares_run["first"]["history"] == squares_run["second"]["history"]


def test_segmentation_convnext_runs_and_rejects_bad_masks() -> None:
    train, val = _squares(8, 3), _squares(4, 4)
    result = finetune_segmentation(lambda: TimmBackbone("test_convnext"), train, val, val, num_classes=3,
                                   epochs=1, batch_size=4)
    m = result["metrics"]
    # documented: a class scores when it is in the test masks or the predictions; the mean is over those
    assert {1, 2} <= set(m["dice"]) <= {1, 2} and m["mean_dice"] == pytest.approx(np.mean(list(m["dice"].values())))
    with pytest.raises(ValueError, match="0..1"):
        finetune_segmentation(lambda: TimmBackbone("test_convnext"), train, val, val, num_classes=2, epochs=1)


def test_ct_short_finetune_is_sensible_and_reproducible(ct_files: dict) -> None:
    images, masks, names = load_ct_segmentation_slices(ct_files["image"], ct_files["labels"],
                                                       class_map=ct_files["map"], classes=ORGANS, size=32)
    train, val, test = split_slabs(len(images), fractions=(0.6, 0.2, 0.2), gap=1, block_size=8)
    images = (images - images[train].mean()) / images[train].std()
    kwargs = dict(num_classes=len(names), epochs=2, batch_size=8, seed=0)
    splits = [(images[i], masks[i]) for i in (train, val, test)]
    runs = [finetune_segmentation(lambda: TimmBackbone("test_resnet"), *splits, **kwargs) for _ in range(2)]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    metrics = runs[0]["metrics"]
    # every organ present in the test masks gets a Dice (absent from both masks and predictions: no entry)
    present = set(np.unique(splits[2][1].numpy()).tolist()) - {0}
    assert present and present <= set(metrics["dice"]) <= {1, 2, 3, 4}
    assert len(runs[0]["history"]) == 2 and runs[0]["history"][1]["train_loss"] < runs[0]["history"][0]["train_loss"]


def test_load_segmentation_split_is_the_task_sequence(ct_files: dict, tmp_path: Path) -> None:
    """``load_segmentation_split(task)`` = slices of the task's volume, split in the task's slice blocks."""
    from organfm.evaluation.protocols.segmentation import load_segmentation_split
    from organfm.evaluation.task import load_task

    image, labels = Path(ct_files["image"]), Path(ct_files["labels"])
    task = load_task(None, [f"data.root={image.parent}", f"data.source={image.name}", f"data.label_map={labels.name}",
                            "protocols=[segmentation]", "segmentation.classes=null", "segmentation.image_size=32",
                            "segmentation.block_size=4"])
    split = load_segmentation_split(task.data, task.segmentation)
    images, masks, names = load_ct_segmentation_slices(image, labels, class_map=None, classes=None, size=32)
    parts = split_slabs(len(images), fractions=(0.6, 0.2, 0.2), gap=1, block_size=4)
    assert split.class_names == names and split.sizes == [len(p) for p in parts]
    for (x, y), p in zip((split.train, split.val, split.test), parts):
        assert torch.equal(x, images[p]) and torch.equal(y, masks[p])
    with pytest.raises(FileNotFoundError, match="segmentation label map .*missing.nii.gz not found"):
        missing = load_task(None, [f"data.root={image.parent}", f"data.source={image.name}",
                                   "data.label_map=missing.nii.gz", "protocols=[segmentation]"])
        load_segmentation_split(missing.data, missing.segmentation)
