"""Triad [0]: SimMIM-style masked-volume pretraining of a 3D encoder, with a text-geometry constraint.

``L = L_rec + text_weight · L_logratio``:

- ``L_rec``: ``ceil(cells · mask_ratio)`` cells of the cube are hidden (``SimMIMMask3D``, from the batch
  source), the encoder replaces their voxels by its learnable mask value, a light decoder reconstructs the
  volume from the bottleneck, and L1 is taken on hidden voxels only (``MaskedL1Loss``);
- ``L_logratio``: every encoder stage is average-pooled, the poolings concatenated and mapped by a 3-layer
  MLP (BatchNorm without affine or running stats) to the text size; ``LogRatioLoss`` makes the ratios of
  distances between these embeddings follow those between the embeddings of each volume's acquisition
  description (built from metadata only, embedded by a frozen text encoder in the batch source).
  ``text_weight=0`` is the no-text ablation (no MLP is built).

[0] Wang et al., "Triad: Vision Foundation Model for 3D Magnetic Resonance Imaging", arXiv 2502.14064;
    code: github.com/wangshansong1/Triad (``simmim_advanced.py``, ``main_pretrain.py``).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from organfm.backbones.swin3d import Swin3DBackbone
from organfm.losses.log_ratio import LogRatioLoss
from organfm.losses.masked_l1 import MaskedL1Loss
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.registry import register_method
from organfm.views.mask3d import SimMIMMask3D

__all__ = ["Triad", "TriadDecoder", "TextProjector"]


class TriadDecoder(nn.Module):
    """Triad's light decoder: 1x1 adapter to ``dim``, then per x2 level [conv3³ → InstanceNorm → LeakyReLU →
    x2 trilinear], widths dim/2, dim/4, dim/8, dim/16, dim/16 (at least 1), then a 1x1 conv to the input channels.

    Args:
        in_channels: bottleneck width.
        dim: decoder width (the reference's U-Net path uses 24: 320 → 24 → 12 → 6 → 3 → 1 → 1).
        num_up: x2 upsamplings (log2 of the encoder's total stride).
        out_channels: channels of the reconstruction.
        out_range: ``(low, high)``: the reconstruction's values are held in the input's intensity range (a clamp in
            the forward pass whose gradient passes straight through, so a voxel predicted outside still learns);
            None: unbounded, as the reference.
    """

    def __init__(self, in_channels: int, dim: int, num_up: int, out_channels: int = 1,
                 out_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        if out_range is not None and not (len(out_range) == 2 and float(out_range[0]) < float(out_range[1])):
            raise ValueError(f"reconstruction_range must be [low, high] with low < high, got {list(out_range)}")
        self.out_range = None if out_range is None else (float(out_range[0]), float(out_range[1]))
        self.adapter = nn.Conv3d(in_channels, dim, 1) if in_channels != dim else nn.Identity()
        widths = [dim] + [max(1, dim // 2 ** min(i + 1, 4)) for i in range(num_up)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv3d(a, b, 3, padding=1), nn.InstanceNorm3d(b), nn.LeakyReLU(0.01, inplace=True))
            for a, b in zip(widths, widths[1:]))
        self.head = nn.Conv3d(widths[-1], out_channels, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """(B, C_bottleneck, d, h, w) -> reconstruction (B, out_channels, *size)."""
        x = self.adapter(x)
        for block in self.blocks:
            x = F.interpolate(block(x), scale_factor=2, mode="trilinear", align_corners=False)
        x = self.head(x)
        # an input that is not a multiple of the total stride: bring the map to the input grid
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        if self.out_range is not None:
            x = x + (x.clamp(*self.out_range) - x).detach()
        return x


class TextProjector(nn.Sequential):
    """Linear → BN(no affine, no running stats) → ReLU, twice, then Linear: pooled image features -> text size."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        def bn() -> nn.BatchNorm1d:
            return nn.BatchNorm1d(hidden, affine=False, track_running_stats=False)

        super().__init__(nn.Linear(in_dim, hidden), bn(), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), bn(), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


@register_method("triad")
class Triad(Method):
    """Masked-volume reconstruction plus the log-ratio text constraint (module docstring).

    Args:
        backbone: a 3D encoder whose ``forward_skips(x, mask=...)`` applies the voxel mask (``plainconv3d``).
        cube: edge of the training cube in voxels (the paper: 96).
        mask_patch_size: edge of a masked cell (the paper: 16).
        model_patch_size: edge of the model patch the mask is upsampled to (the paper: 2).
        mask_ratio: fraction of cells hidden (ceil count).
        flip_prob: probability of a random flip along each axis.
        spacing: resample volumes to this voxel size in mm (D, H, W) and centre-crop/pad to the cube;
            None resizes the whole volume to the cube (the paper).
        synthetic_volumes: RaSD synthetic 3D volumes added to the user's volumes.
        decoder_dim: width of the light decoder; None: the reference's per encoder, the Swin bottleneck width
            (``swin3d``: embed·16, the spec's 768, so the adapter is the identity) or 24 (the U-Net path).
        reconstruction_range: ``[low, high]`` the reconstruction is held in (``TriadDecoder``'s ``out_range``;
            the volumes are in [0, 1]); None: unbounded, as the reference. On sparse volumes (binary masks) an
            unbounded output pays L1 for its noise over the whole background and stays above predicting each
            volume's median (the health monitor's bar); held in [0, 1] it goes below it.
        text_weight: weight of the log-ratio term; 0 switches the text constraint off.
        text_encoder: the frozen text encoder of the descriptions (``hash``).
        text_dim: size of the text embedding.
        text_hidden: hidden width of the projection MLP (the paper: 2048).
        log_ratio_eps: the log-ratio distance floor (divided by the batch size).
        encoder_channels: stage widths given to the backbone (None: its default; the paper:
            [32, 64, 128, 256, 320, 320]); passed by the batch source, as the config has no backbone-args section.
        encoder_strides: first-conv stride per stage given to the backbone (None: its default).
    """

    card_summary = "Triad: 3D masked-image modelling (SimMIM) with organ-aware volume encoders"

    batch_source = "volumes"
    source_keys = ("cube", "mask_patch_size", "model_patch_size", "mask_ratio", "flip_prob", "spacing",
                   "synthetic_volumes", "text_encoder", "text_dim", "encoder_channels", "encoder_strides",
                   "text_weight")
    export_prefix = "student.backbone.model."
    # the reference's optimiser: AdamW (0.9, 0.95), weight decay 0.05, lr 1e-4, warmup then half-cycle cosine
    section_defaults = {
        "backbone.name": "plainconv3d",
        "optim.lr": 1e-4, "optim.min_lr": 0.0, "optim.warmup_epochs": 1.0,
        "optim.weight_decay": 0.05, "optim.weight_decay_end": 0.05, "optim.betas": [0.9, 0.95],
        "optim.clip_grad": None, "optim.freeze_last_layer_epochs": 0.0,
        "trainer.batch_size": 8, "trainer.epochs": 10.0,
    }
    smoke_overrides = ("method.cube=16", "method.mask_patch_size=4")

    def __init__(self, backbone: nn.Module, *, cube: int = 32, mask_patch_size: int = 8, model_patch_size: int = 2,
                 mask_ratio: float = 0.6, flip_prob: float = 0.2, spacing: list[float] | None = None,
                 synthetic_volumes: int = 0, decoder_dim: int | None = None,
                 reconstruction_range: list[float] | None = None, text_weight: float = 0.1,
                 text_encoder: str = "hash", text_dim: int = 256, text_hidden: int = 512,
                 log_ratio_eps: float = 1e-4, encoder_channels: list[int] | None = None,
                 encoder_strides: list[int] | None = None) -> None:
        super().__init__()
        if int(getattr(backbone, "spatial_dims", 2)) != 3:
            raise ValueError("Triad pretrains a 3D encoder: backbone.spatial_dims must be 3 "
                             "(backbone.name=plainconv3d)")
        if "mask" not in inspect.signature(backbone.forward_skips).parameters:
            raise ValueError(f"Triad needs a backbone that masks its input voxels (forward_skips(x, mask=...)); "
                             f"{type(backbone).__name__} does not (use backbone.name=plainconv3d)")
        if text_weight < 0:
            raise ValueError(f"text_weight must be >= 0, got {text_weight}")
        self.masks = SimMIMMask3D(cube, mask_patch_size, model_patch_size, mask_ratio)
        self.text_weight = text_weight
        total = int(getattr(backbone, "total_stride", 2 ** (len(backbone.skip_channels) - 1)))
        num_up = total.bit_length() - 1
        if decoder_dim is None:
            decoder_dim = int(backbone.skip_channels[-1]) if isinstance(backbone, Swin3DBackbone) else 24
        if 2 ** num_up != total:
            raise ValueError(f"the encoder's total stride {total} must be a power of 2")
        student = nn.ModuleDict({"backbone": backbone,
                                 "decoder": TriadDecoder(backbone.skip_channels[-1], decoder_dim, num_up,
                                                         int(getattr(backbone, "in_chans", 1)),
                                                         out_range=reconstruction_range)})
        if text_weight > 0:
            student["text_head"] = TextProjector(sum(backbone.skip_channels), text_hidden, text_dim)
            self.text_loss = LogRatioLoss(eps=log_ratio_eps)
        self.student = student
        self.rec_loss = MaskedL1Loss()

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``image`` (B, 1, S, S, S) in [0, 1], ``mask`` (B, G, G, G) on the model-patch grid (1 =
                hidden), ``text`` (B, T) description embeddings, ``index`` (B,) volume ids (seed the pairing).
            state: the step (Triad reads no schedule of its own).
        """
        x = batch["image"]
        mask = self.masks.voxels(batch["mask"]).unsqueeze(1).to(x.dtype)  # (B, 1, S, S, S)
        skips = self.student["backbone"].forward_skips(x, mask=mask)
        rec = self.student["decoder"](skips[-1], tuple(x.shape[2:]))
        loss_rec = self.rec_loss(rec, x, mask)
        loss, logs = loss_rec, {"loss_rec": loss_rec.detach()}
        if self.text_weight > 0:
            pooled = torch.cat([s.mean(dim=tuple(range(2, s.dim()))) for s in skips], dim=1)
            # the two permutations are a pure function of (step, batch) rather than of the global RNG, which a
            # DataLoader draws from when it starts iterating, so a resumed run pairs exactly as an uninterrupted one
            key = state.step * 1_000_003 + int(batch["index"].sum()) if "index" in batch else state.step
            generator = torch.Generator().manual_seed(int(key))
            loss_text = self.text_loss(self.student["text_head"](pooled), batch["text"], generator=generator)
            loss = loss + self.text_weight * loss_text
            logs["loss_text"] = loss_text.detach()
        logs["loss"] = loss.detach()
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """Masked-voxel L1 on the fixed monitor volumes and masks, against filling every hidden voxel with one
        constant per volume from its visible voxels: their mean, and their median (the L1-optimal constant: on
        sparse binary masks such as AdrenalMNIST3D's it is 0 and beats the mean). A network that learned nothing
        does no better than the better of the two."""
        x = batch["image"]
        mask = self.masks.voxels(batch["mask"]).unsqueeze(1).to(x.dtype)
        rec = self.student["decoder"](self.student["backbone"].forward_skips(x, mask=mask)[-1], tuple(x.shape[2:]))
        visible = 1 - mask
        dims = tuple(range(1, x.dim()))
        mean = (x * visible).sum(dims, keepdim=True) / visible.sum(dims, keepdim=True).clamp(min=1)
        shown = torch.where(visible.bool(), x, torch.nan).flatten(1)
        median = shown.nanmedian(dim=1).values.nan_to_num(0.0).view(-1, *([1] * (x.dim() - 1)))
        return {"masked_loss": float(self.rec_loss(rec, x, mask)),
                "mean_baseline_loss": float(self.rec_loss(mean.expand_as(x), x, mask)),
                "median_baseline_loss": float(self.rec_loss(median.expand_as(x), x, mask))}
