"""``views.png``: the first batch's augmented views, as the network sees them (what LightlyTrain users look at).

The batch's structure is discovered, not declared, so every batch source is drawn without knowing its
method: every floating tensor of ``2 + spatial_dims`` dimensions, ``(B, C, *S)``, is one view of each item
(a global or local crop, a volume); every one of ``3 + spatial_dims``, ``(B, O, C, *S)``, is a set of images
per item (Pan-FM's organs of one subject), each member drawn as a view. A 3D view is drawn as its three
orthogonal mid-slices (axial, coronal, sagittal). Integer tensors (label maps, masks, ids) and vectors
(text or teacher embeddings) are not images and are left out.

Drawing only reads the batch (copies of a few items, on the CPU) and draws no random number, so a run
with ``trainer.views_png=false`` trains the same weights.
"""
from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["VIEWS_FILE", "ViewStack", "ViewsSnapshot", "find_view_stacks", "plot_views"]

VIEWS_FILE = "views.png"
_PLANES = ("axial", "coronal", "sagittal")


@dataclasses.dataclass
class ViewStack:
    """One image-valued tensor of a batch.

    Attributes:
        name: its path in the batch (``global[0]``, ``images``).
        tensor: (B, C, *S) for a view, (B, O, C, *S) for a set of O images per item; float, on the CPU.
        is_set: whether dim 1 indexes the members of a set (O) rather than channels.
        present: (B, O) bool, which members of a set exist (a boolean tensor of that shape in the same batch,
            Pan-FM's ``available``); None: every finite member.
    """

    name: str
    tensor: torch.Tensor
    is_set: bool
    present: torch.Tensor | None = None


def find_view_stacks(batch: Any, spatial_dims: int, max_items: int | None = None) -> list[ViewStack]:
    """Every image-valued tensor of ``batch`` (a dict, dataclass, list or tuple, nested), in batch order.

    Args:
        batch: one training batch as the loop receives it.
        spatial_dims: 2 or 3 (the run's images).
        max_items: keep only the first this many items of each tensor (copied to the CPU); None: all.

    Returns:
        The stacks whose leading (batch) size equals the first stack's, so every row of the grid is one item.
    """
    found: list[ViewStack] = []
    flags: list[torch.Tensor] = []

    def visit(value: Any, name: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bool and value.dim() == 2:
                flags.append(value[:max_items].cpu() if max_items is not None else value.cpu())
            elif value.is_floating_point() and value.dim() in (2 + spatial_dims, 3 + spatial_dims):
                part = value[:max_items] if max_items is not None else value
                found.append(ViewStack(name, part.detach().float().cpu(), value.dim() == 3 + spatial_dims))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{name}.{key}" if name else str(key))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name), f"{name}.{f.name}" if name else f.name)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{name}[{i}]")

    visit(batch, "")
    if not found:
        return []
    size = found[0].tensor.shape[0]
    stacks = [s for s in found if s.tensor.shape[0] == size]
    for s in stacks:
        if s.is_set:
            s.present = next((f for f in flags if tuple(f.shape) == tuple(s.tensor.shape[:2])), None)
    return stacks


def _panels(stacks: list[ViewStack], item: int, spatial_dims: int) -> list[tuple[str, torch.Tensor | None]]:
    """(column title, (H, W) image or None for a missing set member) for every panel of one item's row."""
    out: list[tuple[str, torch.Tensor | None]] = []
    for stack in stacks:
        members = ([(f"{stack.name}[{o}]", stack.tensor[item, o],
                     True if stack.present is None else bool(stack.present[item, o]))
                    for o in range(stack.tensor.shape[1])]
                   if stack.is_set else [(stack.name, stack.tensor[item], True)])
        for name, view, present in members:  # view: (C, *S); the first channel is what a 1-channel network sees
            image = view[0]
            missing = not present or not torch.isfinite(image).any()  # an absent organ may also be all-NaN
            size = "x".join(str(s) for s in image.shape)
            if spatial_dims == 2:
                out.append((f"{name}\n{size}", None if missing else image))
                continue
            d, h, w = image.shape
            slices = (image[d // 2], image[:, h // 2, :], image[:, :, w // 2])
            for plane, cut in zip(_PLANES, slices):
                out.append((f"{name} {plane}\n{size}", None if missing else cut))
    return out


def plot_views(batch: Any, *, spatial_dims: int = 2, max_items: int = 4, max_panels: int = 24,
               title: str = "") -> bytes | None:
    """PNG bytes of a grid of the batch's views: one row per item (per subject for sets), one column per view.

    Every view of an item is shown (global crops before local ones, in the batch's order; a 3D view as three
    mid-slices), all on one grey range, so the intensity augmentations stay visible between views.

    Args:
        batch: a training batch (see :func:`find_view_stacks`).
        spatial_dims: 2 or 3.
        max_items: rows drawn (the first items of the batch).
        max_panels: columns drawn at most (a run with many local crops is cut, and the title says so).
        title: appended to the figure's title (e.g. the method's name).

    Returns:
        The PNG, or None when the batch holds no image-valued tensor.
    """
    stacks = find_view_stacks(batch, spatial_dims, max_items=max_items)
    if not stacks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_items = stacks[0].tensor.shape[0]
    rows = [_panels(stacks, i, spatial_dims) for i in range(num_items)]
    num_panels = len(rows[0])
    cols = min(num_panels, max_panels)
    shown = [img for row in rows for _, img in row[:cols] if img is not None]
    finite = torch.cat([img[torch.isfinite(img)].flatten() for img in shown]) if shown else torch.zeros(1)
    low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    if not high > low:
        high = low + 1.0
    is_set = any(s.is_set for s in stacks)
    fig, axes = plt.subplots(num_items, cols, figsize=(1.45 * cols + 0.6, 1.55 * num_items + 0.7), squeeze=False)
    for r, row in enumerate(rows):
        for c, (name, image) in enumerate(row[:cols]):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7, color="grey",
                        transform=ax.transAxes)
            else:
                ax.imshow(image.nan_to_num(low).numpy(), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{'subject' if is_set else 'item'} {r}", fontsize=7)
    cut = f"; first {cols} of {num_panels} panels" if cols < num_panels else ""
    fig.suptitle(f"first batch as the network sees it{': ' + title if title else ''} ({num_items} items{cut}; "
                 f"grey range [{low:.2f}, {high:.2f}])", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


class ViewsSnapshot:
    """Writes ``views.png`` of the first batch a run trains on, and logs the same image (e.g. to TensorBoard).

    Called once, with the first batch, before that batch reaches the method (a method may change its batch
    in place). A failure to draw is a warning on stderr: it never stops a run.

    Args:
        run_dir: the run folder (``views.png`` goes there).
        spatial_dims: 2 or 3 (the run's images).
        step: the step the batch is trained at (the image's step in the logger).
        log_image: ``log_image(tag, (H, W, 3) uint8 array, step)``, or None.
        title: shown in the figure's title (the method's name).
    """

    def __init__(self, run_dir: str | Path, *, spatial_dims: int = 2, step: int = 0,
                 log_image: Callable[[str, Any, int], None] | None = None, title: str = "") -> None:
        self.path = Path(run_dir) / VIEWS_FILE
        self.spatial_dims, self.step, self.log_image, self.title = spatial_dims, step, log_image, title

    def __call__(self, batch: Any) -> Path | None:
        """Draw ``batch``; returns the written path, or None (nothing to draw, or a warned failure)."""
        from organfm.outputs.atomic import write_atomic

        try:
            png = plot_views(batch, spatial_dims=self.spatial_dims, title=self.title)
            if png is None:
                return None
            write_atomic(self.path, png)
            if self.log_image is not None:
                import numpy as np
                from PIL import Image

                rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                self.log_image("views", rgb, self.step)
            return self.path
        except Exception as e:  # a picture is never worth a run
            print(f"organfm pretrain: warning: could not draw {self.path.name}: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            return None

