"""Frozen features: extract once per model x dataset x split, cache on disk, reuse in every frozen protocol.

The cache key hashes the model (its weights-file hash), the data (which items, their content, the split,
the image size and intensity mode) and the preprocessing (mean/std): change any of them and the
features are extracted again; change none and the model is never run (DINO's and DINOv2's "extract
once, then run pure protocols on tensors").
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["FeatureCache", "extract_features", "normalize_images"]


def normalize_images(images: torch.Tensor, mean: Sequence[float] | float,
                     std: Sequence[float] | float) -> torch.Tensor:
    """``(images - mean) / std`` per channel.

    Args:
        images: (N, C, H, W) float in [0, 1].
        mean, std: one value, or one per channel (a contract's lists).

    Returns:
        (N, C, H, W) float32, a new tensor.
    """
    c = images.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    m, s = m.expand(c) if m.numel() == 1 else m, s.expand(c) if s.numel() == 1 else s
    shape = (1, c) + (1,) * (images.ndim - 2)
    return (images.float() - m.reshape(shape)) / s.reshape(shape)


@torch.inference_mode()
def extract_features(backbone: nn.Module, data: torch.Tensor | Dataset, *, batch_size: int = 256,
                     device: str | torch.device = "cpu", mean: Sequence[float] | float = 0.5,
                     std: Sequence[float] | float = 0.5, num_workers: int = 0) -> torch.Tensor:
    """Pooled embeddings of every image, in order, with the backbone in eval mode.

    Args:
        backbone: ``forward(x) -> (B, E)`` (the backbone contract).
        data: images (N, C, H, W) in [0, 1], or a dataset whose items hold ``"image"`` in [0, 1].
        batch_size: images per forward pass.
        device: where the backbone runs; features come back on the CPU.
        mean, std: the model's normalisation (its contract), applied per batch.
        num_workers: DataLoader workers when ``data`` is a dataset.

    Returns:
        (N, E) float32 features on the CPU.
    """
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    if isinstance(data, torch.Tensor):
        batches = (data[i:i + batch_size] for i in range(0, len(data), batch_size))
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        batches = (batch["image"] for batch in loader)
    for images in batches:
        x = normalize_images(images, mean, std).to(device, non_blocking=True)
        out.append(backbone(x).float().cpu())
    backbone.train(was_training)
    if not out:
        return torch.zeros(0, int(getattr(backbone, "num_features", 0)))
    return torch.cat(out)


class FeatureCache:
    """Features on disk, one file per key (``<root>/<key>.pt``), written atomically.

    Args:
        root: the cache folder (e.g. ``<out_dir>/cache``), created on first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts: Any) -> str:
        """A stable hex key from JSON-serialisable parts (model hash, data identity, preprocessing)."""
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def path(self, key: str) -> Path:
        """Where the features of ``key`` live."""
        return self.root / f"{key}.pt"

    def get_or_extract(self, key: str, extract: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached features of ``key``, or ``extract()``'s result, saved for next time.

        Args:
            key: from :meth:`key`.
            extract: runs the model; called only on a miss.

        Returns:
            (N, E) float32 features.
        """
        path = self.path(key)
        if path.is_file():
            try:
                feats = torch.load(path, map_location="cpu", weights_only=True)
                self.hits += 1
                return feats
            except Exception:  # a damaged file (disk full, killed writer): extract again and replace it
                path.unlink(missing_ok=True)
        self.misses += 1
        feats = extract()
        from organfm.outputs.atomic import write_atomic

        # concurrent writers of one key both write whole files: the last one wins
        write_atomic(path, lambda f: torch.save(feats.contiguous(), f))
        return feats
