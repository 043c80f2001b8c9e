"""An export's data contract as code: ``organfm.load(path) -> (model, preprocess)``.

Every export (a run folder, an export folder, a ``.safetensors`` file with its ``backbone.json``) names what
its network must be fed (``backbone.json``): the input size, the intensity mode that maps an image to
[0, 1], and the mean/std applied after it. :class:`Preprocess` applies exactly that to a numpy array or an
image file, for 2D images, 3D volumes and organ sets alike::

    model, preprocess = organfm.load("runs/coda-x/export")
    x = preprocess("scan.png")                    # (1, H, W) float32 tensor
    emb = model(x[None])                          # (1, E)

A 3D export takes a (D, H, W) array or a NIfTI file / DICOM series folder and gives (1, D, H, W); an
organ-set export (Pan-FM) takes ``{organ: image or None}`` and gives (O, 1, *S), a missing organ all NaN.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from organfm.backbones.contract import BackboneContract

__all__ = ["Preprocess", "load"]


class Preprocess:
    """The contract of one export as a callable: array or file -> the tensor its network expects.

    Args:
        contract: the network's :class:`~organfm.backbones.contract.BackboneContract` (``model.contract``), or
            an export's ``backbone.json`` as a dict (``input_size``, ``mean``, ``std``, ``intensity``,
            ``interpolation``; ``organs`` for an organ set).
        organ_set: the network takes a set of organ images (``organ_set_vit``).

    Call it with:
        - a numpy array (H, W) or (C, H, W) (2D); (D, H, W) or (1, D, H, W) (3D); or a torch tensor;
        - a file path (any format organfm reads: PNG/JPEG/TIFF, DICOM, NIfTI, a DICOM series folder);
        - for an organ set, a mapping ``{organ: array | path | None}`` or a sequence in ``organs`` order.

    Returns:
        float32 tensor (C, H, W), (C, D, H, W), or (O, C, *S) for an organ set; add the batch axis yourself.
    """

    def __init__(self, contract: BackboneContract | Mapping[str, Any], *, organ_set: bool = False) -> None:
        if isinstance(contract, BackboneContract):
            contract = contract.to_dict()
        size = list(contract.get("input_size") or [])
        if len(size) not in (3, 4):
            raise ValueError(f"the contract's input_size {size} is not (C, H, W) or (C, D, H, W)")
        self.channels, self.size = int(size[0]), tuple(int(s) for s in size[1:])
        self.mean = torch.tensor([float(m) for m in contract.get("mean") or [0.0]])
        self.std = torch.tensor([float(s) for s in contract.get("std") or [1.0]])
        self.intensity = dict(contract.get("intensity") or {"mode": "minmax"})
        self.interpolation = contract.get("interpolation") or ("trilinear" if len(self.size) == 3 else "bilinear")
        self.organs = list(contract.get("organs") or [])
        self.organ_set = organ_set

    @property
    def spatial_dims(self) -> int:
        return len(self.size)

    def __call__(self, x: Any) -> torch.Tensor:
        if self.organ_set:
            return self._organ_set(x)
        return self._one(x)

    def __repr__(self) -> str:
        return (f"Preprocess(input_size={[self.channels, *self.size]}, intensity={self.intensity.get('mode')!r}, "
                f"mean={self.mean.tolist()}, std={self.std.tolist()})")

    def _one(self, x: Any) -> torch.Tensor:
        a = _read(x, self.spatial_dims) if isinstance(x, (str, Path)) else (x.detach().cpu().numpy() if torch.is_tensor(x)
                                                            else np.asarray(x))
        a = a.astype(np.float32, copy=False)
        want = self.spatial_dims
        if a.ndim == want:  # add the channel axis
            a = a[None]
        if a.ndim == want + 2 and a.shape[0] == 1:  # a (1, C, ...) batch of one
            a = a[0]
        if a.ndim != want + 1:
            raise ValueError(f"expected a {want}D image ({'D, ' if want == 3 else ''}H, W) or with a channel axis, "
                             f"got shape {tuple(a.shape)}")
        if a.shape[0] != self.channels:  # RGB -> gray as the readers do; a gray image for a C-channel model
            a = a.mean(axis=0, keepdims=True) if self.channels == 1 else np.repeat(a[:1], self.channels, axis=0)
        a = self._scale(a)
        t = torch.from_numpy(np.ascontiguousarray(a))
        if tuple(t.shape[1:]) != self.size:
            mode = self.interpolation if self.interpolation in ("bilinear", "bicubic", "trilinear", "nearest") \
                else ("trilinear" if want == 3 else "bilinear")
            t = F.interpolate(t[None], size=self.size, mode=mode, align_corners=False if mode != "nearest" else None,
                              **({"antialias": True} if want == 2 and mode in ("bilinear", "bicubic") else {}))[0]
            if self._scaled_to_unit():
                t = t.clamp(0.0, 1.0)
        mean = self.mean.view(-1, *([1] * want))
        std = self.std.view(-1, *([1] * want))
        return ((t - mean) / std).float()

    def _scaled_to_unit(self) -> bool:
        return self.intensity.get("mode", "minmax") != "none"

    def _scale(self, a: np.ndarray) -> np.ndarray:
        """The contract's intensity mode: the same mapping to [0, 1] the training data had."""
        from organfm.data.intensity import normalize_intensity

        mode = self.intensity.get("mode", "minmax")
        if mode == "percentile_minmax":  # Triad's volumes: clip to percentiles, then min-max
            mode = "percentile"
        return normalize_intensity(a, mode, window=self.intensity.get("window"),
                                   percentiles=self.intensity.get("percentiles") or (0.5, 99.5))

    def _organ_set(self, x: Any) -> torch.Tensor:
        if isinstance(x, Mapping):
            unknown = [k for k in x if k not in self.organs]
            if unknown:
                raise ValueError(f"unknown organ(s) {unknown}; this model's organs: {self.organs}")
            items = [x.get(organ) for organ in self.organs]
        elif isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
            items = list(x)
        else:
            a = np.asarray(x)
            items = list(a)
        if len(items) != len(self.organs):
            raise ValueError(f"{len(items)} organ images for {len(self.organs)} organs ({', '.join(self.organs)})")
        missing = torch.full((self.channels, *self.size), float("nan"))
        return torch.stack([missing if item is None else self._one(item) for item in items])


def load(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocess]:
    """An export's network (eval mode, weights loaded) and the preprocessing its contract asks for.

    Args:
        path: a run folder (its ``export/``, exported first if missing), an export folder, or a
            ``.safetensors`` file with its contract JSON beside it; 2D timm, 3D and organ-set exports alike.
        device: where the network lives.

    Returns:
        ``(model, preprocess)``: ``model`` carries its contract (``model.contract``); ``model(x)`` maps a batch (B, C, H, W) / (B, C, D, H, W) / (B, O, C, *S) to
        pooled features (B, E); ``preprocess`` (a :class:`Preprocess`) maps one array or file to one input.

    Raises:
        FileNotFoundError: no export there. ValueError: an unreadable contract or unknown architecture.
    """
    from organfm.features.encoders import load_encoder

    make, _ = load_encoder(str(path))
    model = make().to(device).eval()
    return model, Preprocess(model.contract, organ_set=model.contract.architecture.startswith("organ_set"))


def _read(path: str | Path, spatial_dims: int) -> np.ndarray:
    """The pixels of one image file (2D) or volume (3D: NIfTI, DICOM series folder), as organfm reads them."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if spatial_dims == 3:
        from organfm.data.volume_set import _path_loader

        return np.asarray(_path_loader(p, str(p))()[0])
    from organfm.data.readers import create_reader, find_reader

    with open(p, "rb") as f:
        head = f.read(512)
    name = find_reader(p.name, head)
    if name is None:
        raise ValueError(f"{p}: not an image format organfm reads")
    array, _ = create_reader(name).read(str(p))
    array = np.asarray(array)
    return array[:, 0] if array.ndim == 4 else array  # a multi-frame file: its first frame
