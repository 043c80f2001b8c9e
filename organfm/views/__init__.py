"""Augmentations and multi-view recipes (what the network sees)."""
from organfm.views.intensity import RandomBrightnessContrast, RandomGamma, RandomGaussianBlur
from organfm.views.recipes import GlobalLocalViews

__all__ = ["GlobalLocalViews", "RandomBrightnessContrast", "RandomGamma", "RandomGaussianBlur"]
from organfm.views.multiview import MultiViewDataset  # noqa: E402

__all__ += ["MultiViewDataset"]
