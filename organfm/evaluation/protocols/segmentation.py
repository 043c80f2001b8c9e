"""CT organ segmentation: U-Net fine-tuning on axial slices of a volume, Dice/IoU per organ on test slices."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from organfm.evaluation.protocol import ModelRun, make_row, register_protocol

__all__ = ["SegmentationConfig", "segmentation"]


@dataclass
class SegmentationConfig:
    """Slices (``load_segmentation_split``) and U-Net fine-tuning (``finetune_segmentation``)."""

    image: str | None = None  # default: data.source
    label_map: str | None = None  # default: data.label_map
    classes: list[str] | None = None  # organ names, ids 1..C in this order; None: every class present
    window: list[float] = field(default_factory=lambda: [40.0, 400.0])
    image_size: int = 64
    block_size: int = 8
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    gap: int = 1
    min_foreground: int = 10
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    seeds: int = 1


@register_protocol("segmentation", config=SegmentationConfig, inputs="own", splits=())
def segmentation(run: ModelRun, data: Any = None) -> list[dict[str, Any]]:
    """One row: mean and per-organ Dice/IoU over ``segmentation.seeds`` fits (NaN where an organ is absent)."""
    from organfm.evaluation.segmentation import finetune_segmentation, load_segmentation_split

    task, s = run.task, run.task.segmentation
    split = load_segmentation_split(task)
    train, val, test = ((run.normalized(x), y) for x, y in (split.train, split.val, split.test))
    names = split.class_names
    values: dict[str, list[float]] = {}
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # classes absent from a small test block: NaN below
            out = finetune_segmentation(run.make_backbone, train, val, test, num_classes=len(names), epochs=s.epochs,
                                        batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                                        patience=s.patience, seed=task.seed + k, device=run.device)
        m = out["metrics"]
        flat = {"mean_dice": m["mean_dice"], "mean_iou": m["mean_iou"]}
        for c in range(1, len(names)):
            flat[f"dice_{names[c]}"] = m["dice"].get(c, float("nan"))
            flat[f"iou_{names[c]}"] = m["iou"].get(c, float("nan"))
        for key, value in flat.items():
            values.setdefault(key, []).append(value)
    sizes = split.sizes
    return [make_row(run.name, "segmentation", f"{'/'.join(map(str, sizes))} slices", values,
                     classes=names[1:], slices=sizes)]
