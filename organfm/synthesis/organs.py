"""SyntheticOrgans: the embedded default data set, built on the RaSD synthesis engine.

An organ is one fixed label-field template; its images are random warps and appearances of
that template, so same-organ images share anatomy and differ in detail (inter-organ
diversity, intra-organ consistency). Nothing is downloaded or stored: every item is computed
from (seed, index) on demand.

Why organs also own tissue intensities: with RaSD's fully random per-image intensities, every
label's expected intensity is the same, so an organ's mean image is flat and only the label
geometry tells organs apart. Real organs keep their contrast within a modality, and an
intensity-level signal is what lets quick sanity checks (nearest centroid, kNN on a barely
trained encoder) beat chance. ``intensity_jitter=None`` restores the RaSD appearance.
"""
from __future__ import annotations

import hashlib
import operator
import struct
from typing import Any

import torch
from torch.utils.data import Dataset

from organfm.data.sample import IMAGE, INDEX, ORGAN
from organfm.synthesis.appearance import labels_to_image
from organfm.synthesis.fields import (
    _default_num_labels,
    argmax_labels,
    draw_label_fields,
    draw_smooth_field,
    warp,
)

__all__ = ["SyntheticOrgans", "LABEL_MAP"]

LABEL_MAP = "label_map"
"""Extra item key (only with ``return_labels=True``): int64 label map (1, *S)."""


class SyntheticOrgans(Dataset):
    """Procedural multi-organ images: a few anatomies, many random acquisitions of each.

    Organ o is a template drawn from a generator seeded by (seed, o): the K warped label fields
    of ``draw_label_fields`` and K tissue intensities μ_o ~ U(0, 1). Item i belongs to organ
    ``i % num_organs`` (interleaved, so every prefix and every contiguous shard is balanced
    across organs). Its image is the template warped by a per-image smooth displacement,
    argmaxed into a label map, and rendered by ``labels_to_image`` with intensities
    clip(μ_o + N(0, intensity_jitter²), 0, 1), all drawn from a generator seeded by (seed, i).
    Hence ``ds[i]`` is a pure function of the constructor arguments and i: identical across
    calls, processes and DataLoader workers, and independent of the global RNG.

    Templates are computed lazily and cached per process (num_organs · K · S^dim floats, e.g.
    33 MB for 8 organs at 64³ with K = 4); the cache is not pickled.

    Args:
        num_organs: Number of organs (templates).
        images_per_organ: Number of images of each organ; the length is their product.
        size: Side length S of the square / cubic images.
        dim: 2 for (1, S, S) images, 3 for (1, S, S, S) volumes.
        num_labels: Labels K per template; ``None`` gives RaSD's S//16 (3D) or S//32 (2D),
            at least 2.
        seed: Seed of the whole data set.
        warp_std: Upper bound, in voxels, of the per-scale sd of the per-image displacement
            (coarse grids of 8 and 4 points); its per-axis RMS is about 0.8 · ``warp_std``.
            ``None`` gives 4% of ``size``.
        intensity_jitter: Per-image sd of the organ's tissue intensities. ``None`` draws
            them afresh for every image, μ ~ U(0, 1) as in RaSD, so only shape identifies
            the organ.
        return_labels: Also return each image's label map under ``"label_map"``.

    Items:
        ``{"image": float32 (1, S, S[, S]) in [0, 1], "organ": int, "index": int}``, plus
        ``"label_map"``: int64 (1, S, S[, S]) when ``return_labels``.
    """

    def __init__(
        self,
        *,
        num_organs: int = 8,
        images_per_organ: int = 256,
        size: int = 64,
        dim: int = 2,
        num_labels: int | None = None,
        seed: int = 0,
        warp_std: float | None = None,
        intensity_jitter: float | None = 0.1,
        return_labels: bool = False,
    ) -> None:
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if num_organs < 1 or images_per_organ < 1 or size < 2:
            raise ValueError(
                "num_organs and images_per_organ must be >= 1 and size >= 2, got "
                f"{num_organs}, {images_per_organ}, {size}"
            )
        self.num_organs = num_organs
        self.images_per_organ = images_per_organ
        self.size = size
        self.dim = dim
        self.shape = (size,) * dim
        self.num_labels = _default_num_labels(self.shape) if num_labels is None else num_labels
        if self.num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {self.num_labels}")
        self.seed = seed
        self.warp_std = 0.04 * size if warp_std is None else float(warp_std)
        self.intensity_jitter = intensity_jitter
        self.return_labels = return_labels
        self.organs = [f"organ_{o:02d}" for o in range(num_organs)]
        self._templates: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.num_organs * self.images_per_organ

    @property
    def organ_ids(self) -> list[int]:
        """Per item: the organ id returned in ``item["organ"]``."""
        return [self.organ_of(i) for i in range(len(self))]

    @property
    def labels(self) -> list[int]:
        """Per item: its class label, the organ id (a synthetic image has no other label)."""
        return self.organ_ids

    def organ_of(self, index: int) -> int:
        """Organ id of item ``index``, without generating it."""
        return index % self.num_organs

    def template(self, organ: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An organ's label fields (K, *S), whose argmax is its template label map, and its
        tissue intensities (K,)."""
        if not 0 <= organ < self.num_organs:
            raise IndexError(f"organ {organ} out of range [0, {self.num_organs})")
        template = self._templates.get(organ)
        if template is None:
            generator = _seeded_generator(self.seed, "template", organ)
            fields = draw_label_fields(self.shape, self.num_labels, generator)
            means = torch.rand(self.num_labels, generator=generator)
            template = self._templates[organ] = (fields, means)
        return template

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)  # numpy and tensor integers too, but never floats
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        organ = self.organ_of(index)
        generator = _seeded_generator(self.seed, "image", index)
        # One displacement shared by all label fields keeps the anatomy coherent: the image
        # is a deformed copy of the template, not a new RaSD draw.
        side = self.size
        flow = draw_smooth_field(
            self.shape, self.dim, (max(1, side // 8), max(1, side // 4)), self.warp_std, generator
        )
        template_fields, template_means = self.template(organ)
        fields = warp(template_fields.unsqueeze(0), flow.unsqueeze(0))
        label_map = argmax_labels(fields[0])
        means = None
        if self.intensity_jitter is not None:
            jitter = torch.randn(self.num_labels, generator=generator) * self.intensity_jitter
            means = (template_means + jitter).clamp_(0.0, 1.0)
        image = labels_to_image(label_map, self.num_labels, generator, means=means)
        item: dict[str, Any] = {IMAGE: image, ORGAN: organ, INDEX: index}
        if self.return_labels:
            item[LABEL_MAP] = label_map
        return item

    def summary(self) -> dict[str, Any]:
        """Counts and generator settings for logs (same leading keys as ``OrganDataset``)."""
        return {
            "source": "synthetic",
            "procedural": True,
            "n_items": len(self),
            "organs": {name: self.images_per_organ for name in self.organs},
            "image_shape": (1, *self.shape),
            "dim": self.dim,
            "num_labels": self.num_labels,
            "warp_std": self.warp_std,
            "intensity_jitter": self.intensity_jitter,
            "seed": self.seed,
        }

    def __getstate__(self) -> dict[str, Any]:
        # Workers rebuild templates on demand; shipping them would only cost pickling time.
        state = self.__dict__.copy()
        state["_templates"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"SyntheticOrgans(num_organs={self.num_organs}, images_per_organ="
            f"{self.images_per_organ}, size={self.size}, dim={self.dim}, num_labels="
            f"{self.num_labels}, seed={self.seed}, warp_std={self.warp_std:g}, intensity_jitter="
            f"{self.intensity_jitter})"
        )


def _seeded_generator(seed: int, stream: str, number: int) -> torch.Generator:
    """A CPU generator whose seed hashes (seed, stream, number).

    A cryptographic hash, unlike ``hash()``, is the same in every process and Python version,
    and keeps streams for neighbouring (seed, number) pairs unrelated.
    """
    key = struct.pack("<q", seed) + stream.encode() + struct.pack("<q", number)
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
