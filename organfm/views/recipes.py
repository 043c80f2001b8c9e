"""Multi-view recipes: what the student and the teacher see of one image."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torchvision.transforms import v2

from organfm.views.intensity import RandomBrightnessContrast, RandomGamma, RandomGaussianBlur

__all__ = ["GlobalLocalViews", "resolve_view_arguments"]


class GlobalLocalViews:
    """Global and local crops of a 2D grayscale image, DINO-style, with medical-appropriate augmentation.

    Each view: random resized crop → flips (only where anatomy allows: horizontal by default, vertical
    off) → small rotation → brightness/contrast → gamma → Gaussian blur → ``(x - mean) / std``.
    No hue, saturation or solarisation: they have no meaning for one-channel radiology.
    Blur probabilities follow DINO's asymmetry: ``blur_probs = (global 1, other globals, locals)``.

    Args:
        num_global_views: global crops (Coda: view-1 for the student, view-2 for the teacher).
        global_size: side of global crops in pixels.
        global_scale: area fraction range of global crops.
        num_local_views: local crops (Coda: 12 crops of 96 px at scale 0.4–0.7).
        local_size: side of local crops in pixels.
        local_scale: area fraction range of local crops.

    Returns (from ``__call__``):
        ``{"global": [tensor (C, global_size, global_size)] * num_global_views,
        "local": [tensor (C, local_size, local_size)] * num_local_views}``.
    """

    def __init__(self, *, num_global_views: int = 2, global_size: int = 64,
                 global_scale: tuple[float, float] = (0.4, 1.0), num_local_views: int = 12,
                 local_size: int = 32, local_scale: tuple[float, float] = (0.4, 0.7),
                 hflip_prob: float = 0.5, vflip_prob: float = 0.0, rotation_degrees: float = 10.0,
                 brightness: float = 0.4, contrast: float = 0.4, gamma: tuple[float, float] = (0.7, 1.5),
                 blur_probs: tuple[float, float, float] = (1.0, 0.1, 0.5),
                 blur_sigma: tuple[float, float] = (0.1, 2.0), mean: float = 0.5, std: float = 0.5) -> None:
        if num_global_views < 1:
            raise ValueError("num_global_views must be >= 1")
        self.num_global_views, self.num_local_views = num_global_views, num_local_views

        def pipeline(size: int, scale, blur_p: float) -> v2.Compose:
            steps = [v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True)]
            if hflip_prob > 0:
                steps.append(v2.RandomHorizontalFlip(hflip_prob))
            if vflip_prob > 0:
                steps.append(v2.RandomVerticalFlip(vflip_prob))
            if rotation_degrees > 0:
                steps.append(v2.RandomRotation(rotation_degrees))
            steps += [RandomBrightnessContrast(brightness, contrast), RandomGamma(tuple(gamma)),
                      RandomGaussianBlur(tuple(blur_sigma), p=blur_p), v2.Normalize([mean], [std])]
            return v2.Compose(steps)

        self.global_first = pipeline(global_size, global_scale, blur_probs[0])
        self.global_other = pipeline(global_size, global_scale, blur_probs[1])
        self.local = pipeline(local_size, local_scale, blur_probs[2])

    def __call__(self, image: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        if image.ndim != 3:
            raise ValueError(f"GlobalLocalViews takes a 2D image (C, H, W), got shape {tuple(image.shape)}")
        globals_ = [self.global_first(image)]
        globals_ += [self.global_other(image) for _ in range(self.num_global_views - 1)]
        return {"global": globals_, "local": [self.local(image) for _ in range(self.num_local_views)]}


def resolve_view_arguments(**kwargs: Any) -> dict[str, Any]:
    """Every :class:`GlobalLocalViews` argument: ``kwargs`` where given, the recipe's default elsewhere.

    For recipes that draw from the same distribution another way (``organfm.views.device.DeviceViews``), so the
    defaults stay written once, in ``GlobalLocalViews.__init__``.

    Args:
        **kwargs: any of ``GlobalLocalViews``' keyword arguments.

    Returns:
        ``{name: value}`` for every argument, in signature order.

    Raises:
        TypeError: an argument ``GlobalLocalViews`` does not take.
    """
    bound = _SIGNATURE.bind(None, **kwargs)  # None stands for ``self``
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "self"}


_SIGNATURE = inspect.signature(GlobalLocalViews.__init__)
