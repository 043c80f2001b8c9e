"""SyntheticSubjects: multi-organ subjects with a planted dominant-organ shortcut and MNAR missing organs.

Pan-FM's embedded default (issue 13; seed-systems.md §2, P5). A subject has one image per organ it has and
``num_diseases`` binary labels. Every disease leaves a mark in every organ, but of two strengths:

- the *dominant* organ carries a strong, easy mark (a bright blob): the shortcut a naive model latches on;
- every other organ carries a subtle mark (a faint blob at an organ-specific place), informative only
  when several organs are read together;
- optionally (``dominant_gain`` > 0), disease 0 also has a graded severity that scales the dominant organ's whole
  intensity (and, by the subtle-to-dominant strength ratio, every other organ's): an organ-wide shortcut that
  a self-distilled encoder picks up within a short run, where a blob of a few pixels is not.

Organs are missing not at random: an organ's chance of being absent rises with disease 0
(``mnar_strength``), as sicker UK-Biobank participants skip more imaging visits. Every subject keeps at
least one organ. Items are a pure function of (seed, index_offset + index): labels and availability come
from one random stream and pixels from another, so :meth:`labels_and_availability` never renders an image.
The seed fixes the *world* (organ anatomy, disease-mark places); ``index_offset`` picks other subjects of the
same world, so held-out evaluation subjects (same seed, indices past the pretraining range) are new draws from
the distribution the model was pretrained on rather than from another world.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["MEDNIST_REGIONS", "MedNISTSubjects", "ORGAN_NAMES", "SyntheticSubjects", "WORLD", "organ_names"]

# UK Biobank's imaged organs (Pan-FM); the paper found adipose and heart dominant, so heart comes first
ORGAN_NAMES = ("heart", "brain", "liver", "kidney", "spleen", "pancreas", "adipose")
# the generator arguments an evaluation must match to draw subjects of the pretraining world: how strong the
# planted shortcut is and how organs go missing
WORLD = ("dominant_strength", "subtle_strength", "noise", "dominant_gain", "missing_prob", "dominant_missing_prob",
         "mnar_strength")


def organ_names(num_organs: int) -> list[str]:
    """The first ``num_organs`` UK Biobank organ names, then ``organ7``, ``organ8``, ..."""
    return [ORGAN_NAMES[i] if i < len(ORGAN_NAMES) else f"organ{i}" for i in range(num_organs)]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class SyntheticSubjects(Dataset):
    """Seeded synthetic subjects; item ``i`` -> ``{"images", "available", "labels", "organ_ids", "index"}``.

    Args:
        num_subjects: N subjects.
        num_organs: O organ slots (names from :func:`organ_names`).
        size: S, image side in pixels.
        num_diseases: D binary labels per subject.
        dim: 2 (images) or 3 (volumes).
        seed: the generator seed (the world: anatomy and mark places, and every subject's draws).
        index_offset: item ``i`` is the world's subject ``index_offset + i`` (disjoint ranges: disjoint subjects).
        dominant: index of the dominant organ.
        dominant_strength: amplitude of the dominant organ's disease blob (intensities are in [0, 1]).
        subtle_strength: amplitude of every other organ's disease blob.
        noise: standard deviation of the pixel noise.
        missing_prob: base probability that an organ is missing.
        mnar_strength: logit shift of an organ's missingness for a subject with disease 0 (0: MCAR).
        dominant_missing_prob: base missingness of the dominant organ (so robustness to its loss is testable).
        dominant_gain: g; disease 0's severity s in (0, 1] (s > 0.5 exactly for the subjects that have it) scales
            the dominant organ's image by 1 + g (s - 0.5) and every other organ's by
            1 + g (s - 0.5) subtle_strength / dominant_strength. 0 (the default): no such signal.

    Item shapes: ``images`` float32 (O, 1, *S) in [0, 1], zeros for missing organs; ``available`` bool (O,);
    ``labels`` float32 (D,); ``organ_ids`` int64 (O,); ``index`` int.
    """

    def __init__(self, num_subjects: int = 256, num_organs: int = 5, size: int = 32, num_diseases: int = 2, *,
                 dim: int = 2, seed: int = 0, index_offset: int = 0, dominant: int = 0, dominant_strength: float = 0.35,
                 subtle_strength: float = 0.12, noise: float = 0.05, missing_prob: float = 0.2,
                 mnar_strength: float = 1.0, dominant_missing_prob: float = 0.1, dominant_gain: float = 0.0) -> None:
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if num_subjects < 1 or num_organs < 1 or num_diseases < 1:
            raise ValueError(f"need >= 1 subject, organ and disease; got {num_subjects}, {num_organs}, {num_diseases}")
        if not 0 <= dominant < num_organs:
            raise ValueError(f"dominant organ {dominant} is not one of the {num_organs} organs")
        if index_offset < 0:
            raise ValueError(f"index_offset must be >= 0, got {index_offset}")
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        for name, p in (("missing_prob", missing_prob), ("dominant_missing_prob", dominant_missing_prob)):
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.num_subjects, self.num_organs, self.size, self.num_diseases = num_subjects, num_organs, size, num_diseases
        self.dim, self.seed, self.index_offset, self.dominant = dim, seed, index_offset, dominant
        self.dominant_strength, self.subtle_strength, self.noise = dominant_strength, subtle_strength, noise
        self.missing_prob, self.mnar_strength = missing_prob, mnar_strength
        self.dominant_missing_prob, self.dominant_gain = dominant_missing_prob, dominant_gain
        self.organs = organ_names(num_organs)
        axes = [np.linspace(-1, 1, size, dtype=np.float32)] * dim
        self._grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # (dim, *S)
        # fixed anatomy per organ: centre, radii, tissue intensity, and where each disease leaves its mark
        self._anatomy = []
        for o in range(num_organs):
            rng = np.random.default_rng([seed, 0, o])
            centre = rng.uniform(-0.2, 0.2, dim)
            radii = rng.uniform(0.45, 0.75, dim)
            marks = centre + rng.uniform(-0.3, 0.3, (num_diseases, dim)) * radii
            self._anatomy.append((centre, radii, 0.35 + 0.3 * rng.random(), marks))

    def __len__(self) -> int:
        return self.num_subjects

    def labels_and_availability(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Subject ``index``'s labels (D,) float32 and available organs (O,) bool, without rendering pixels."""
        if not 0 <= index < self.num_subjects:
            raise IndexError(f"subject {index} out of range [0, {self.num_subjects})")
        rng = np.random.default_rng([self.seed, 1, self.index_offset + index])
        labels = (rng.random(self.num_diseases) < 0.5).astype(np.float32)
        shift = self.mnar_strength * (2.0 * labels[0] - 1.0)
        base = np.full(self.num_organs, self.missing_prob)
        base[self.dominant] = self.dominant_missing_prob
        p_missing = np.array([_sigmoid(math.log(p / (1 - p)) + shift) if 0 < p < 1 else p for p in base])
        available = rng.random(self.num_organs) >= p_missing
        if not available.any():  # every subject keeps one organ (drawn, so it is not always the same)
            available[rng.integers(self.num_organs)] = True
        return labels, available

    def severity(self, index: int) -> float:
        """Disease 0's graded severity s in (0, 1] of subject ``index``: 1 - u for the uniform draw u that gave its
        label (label 1 exactly when u < 0.5, i.e. s > 0.5)."""
        return float(1.0 - np.random.default_rng([self.seed, 1, self.index_offset + index]).random(self.num_diseases)[0])

    def _gain(self, o: int, severity: float) -> float:
        """Organ ``o``'s intensity factor under ``dominant_gain`` (1 without it)."""
        if not self.dominant_gain:
            return 1.0
        share = 1.0 if o == self.dominant else (self.subtle_strength / self.dominant_strength
                                                 if self.dominant_strength else 0.0)
        return 1.0 + self.dominant_gain * share * (severity - 0.5)

    def _base_image(self, o: int, rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
        """The healthy organ: an ellipse (ellipsoid) of the organ's tissue intensity on a dark background."""
        tissue = self._anatomy[o][2]
        shape = np.array(centre, dtype=np.float32).reshape((-1,) + (1,) * self.dim)
        scale = np.array(radii, dtype=np.float32).reshape((-1,) + (1,) * self.dim)
        inside = (((self._grid - shape) / scale) ** 2).sum(0) <= 1.0
        return np.where(inside, tissue + rng.uniform(-0.05, 0.05), 0.1).astype(np.float32)

    def _organ_image(self, o: int, labels: np.ndarray, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
        centre, radii, _, marks = self._anatomy[o]
        g = self._grid
        shape = lambda c: np.array(c, dtype=np.float32).reshape((-1,) + (1,) * self.dim)  # noqa: E731
        jitter_c = centre + rng.uniform(-0.08, 0.08, self.dim)
        jitter_r = radii * rng.uniform(0.9, 1.1, self.dim)
        img = self._base_image(o, rng, jitter_c, jitter_r)
        amplitude = self.dominant_strength if o == self.dominant else self.subtle_strength
        for d in np.flatnonzero(labels):
            offset = marks[d] + jitter_c - centre  # the mark moves with the organ
            img += amplitude * np.exp(-(((g - shape(offset)) ** 2).sum(0)) / (2 * 0.18 ** 2))
        img *= gain
        img += rng.normal(0.0, self.noise, img.shape).astype(np.float32)
        return np.clip(img, 0.0, 1.0)

    def __getitem__(self, index: int) -> dict:
        labels, available = self.labels_and_availability(index)
        images = np.zeros((self.num_organs, 1) + (self.size,) * self.dim, dtype=np.float32)
        severity = self.severity(index) if self.dominant_gain else 0.5
        for o in np.flatnonzero(available):
            rng = np.random.default_rng([self.seed, 2, self.index_offset + index, int(o)])
            images[o, 0] = self._organ_image(int(o), labels, rng, self._gain(int(o), severity))
        return {"images": torch.from_numpy(images), "available": torch.from_numpy(available),
                "labels": torch.from_numpy(labels), "organ_ids": torch.arange(self.num_organs), "index": index}

    def summary(self) -> dict:
        """Generator settings and counts, for the run's ``data.json``."""
        avail = np.stack([self.labels_and_availability(i)[1] for i in range(self.num_subjects)])
        return {"source": "synthetic_subjects", "procedural": True, "num_subjects": self.num_subjects, "organs": self.organs,
                "dominant_organ": self.organs[self.dominant], "dim": self.dim, "size": self.size,
                "num_diseases": self.num_diseases, "seed": self.seed, "index_offset": self.index_offset,
                "missing_prob": self.missing_prob, "dominant_missing_prob": self.dominant_missing_prob,
                "mnar_strength": self.mnar_strength, "dominant_gain": self.dominant_gain,
                "organ_availability": dict(zip(self.organs, avail.mean(0).round(3).tolist()))}


# MedNIST regions used as organ slots; the first is the dominant one
MEDNIST_REGIONS = ("CXR", "AbdomenCT", "ChestCT", "HeadCT", "Hand", "BreastMRI")
_POOLS: dict = {}


def _mednist_pools(archive: str, regions: tuple[str, ...], per_region: int, size: int) -> dict[str, np.ndarray]:
    """The first ``per_region`` images of each region in the archive, grey, resized to ``size``, in [0, 1]."""
    key = (str(archive), regions, per_region, size)
    if key not in _POOLS:
        import io
        import tarfile

        from PIL import Image

        pools: dict[str, list] = {r: [] for r in regions}
        with tarfile.open(archive, "r|gz") as tar:  # one streaming pass (the archive is sorted by region)
            for member in tar:
                parts = member.name.split("/")
                if len(parts) != 3 or parts[1] not in pools or len(pools[parts[1]]) >= per_region:
                    continue
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                    pools[parts[1]].append(np.asarray(img.convert("L").resize((size, size), Image.BILINEAR),
                                                      dtype=np.float32) / 255.0)
        missing = [r for r, v in pools.items() if not v]
        if missing:
            raise ValueError(f"{archive}: no images of region(s) {', '.join(missing)} "
                             "(expected MedNIST/<region>/*.jpeg)")
        _POOLS[key] = {r: np.stack(v) for r, v in pools.items()}
    return _POOLS[key]


class MedNISTSubjects(SyntheticSubjects):
    """Semi-real subjects: organ slot o holds real MedNIST images of region o (``MEDNIST_REGIONS``), with the
    disease marks of :class:`SyntheticSubjects` planted on top (strong in slot 0, subtle in the others) and the
    same MNAR missingness. 2D only.

    Args:
        archive: ``MedNIST.tar.gz``.
        num_subjects: N.
        num_organs: O <= 6 region slots.
        per_region: images read per region (a subject draws one of them per organ).
        **kwargs: the other :class:`SyntheticSubjects` arguments (size, num_diseases, seed, strengths, ...).
    """

    def __init__(self, archive: str, num_subjects: int = 256, num_organs: int = 5, size: int = 32,
                 num_diseases: int = 2, *, per_region: int = 500, subtle_strength: float = 0.12, **kwargs) -> None:
        if not 1 <= num_organs <= len(MEDNIST_REGIONS):
            raise ValueError(f"MedNIST has {len(MEDNIST_REGIONS)} regions; num_organs={num_organs}")
        super().__init__(num_subjects, num_organs, size, num_diseases, dim=2, subtle_strength=subtle_strength, **kwargs)
        self.organs = list(MEDNIST_REGIONS[:num_organs])
        self.archive, self.per_region = str(archive), per_region
        self._pools = _mednist_pools(archive, tuple(self.organs), per_region, size)

    def summary(self) -> dict:
        return {**super().summary(), "source": "mednist_subjects", "procedural": False, "archive": self.archive,
                "images_per_region": self.per_region}

    def _base_image(self, o: int, rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
        pool = self._pools[self.organs[o]]
        return pool[rng.integers(len(pool))].copy()
