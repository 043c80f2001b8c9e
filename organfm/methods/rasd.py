"""RaSD [0]: pretraining on randomly synthesised image/label pairs with prototype disentanglement.

No real image is used: the ``synthetic_pairs`` batch source feeds this method from a ``SyntheticBuffer``
(RaSD's online FIFO of synthetic pairs; sized by ``data.synthetic_dim``, ``data.synthetic_size`` and
``data.synthetic_refresh``) instead of a multi-view loader. The network's dense features are pulled towards their
region's prototype and the prototypes pushed apart (``PrototypeDisentanglementLoss``).

[0] Wei et al., "Free Lunch in Medical Image Foundation Model Pre-training via Randomized Synthesis and
    Disentanglement", arXiv 2602.12317; code: github.com/yweibs/RaSD.
"""
from __future__ import annotations

import torch
from torch import nn

from organfm.losses import PrototypeDisentanglementLoss
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.registry import register_method

__all__ = ["RaSD"]


@register_method("rasd")
class RaSD(Method):
    """Prototype disentangling learning on a dense backbone: ``L = w_seg · L_seg + w_proto · L_proto``.

    Args:
        backbone: A dense backbone: ``forward_features(x)["dense"]`` is (B, E, *S) (``unet_small``,
            ``swin_unetr``).
        num_labels: K, the number of labels of the synthetic label maps (the reference's S//32 in 2D,
            S//16 in 3D: 2 at the default 64 px).
        temp: Temperature of both softmaxes.
        eps: Floor of a region's pixel count (absent labels only).
        reduction: Cross-entropy normalisation, ``"mean"`` or ``"elementwise_mean"`` (the reference's).
        seg_weight: Weight of the pull (prototype segmentation) term.
        proto_weight: Weight of the push (prototype separation) term.
    """

    card_summary = "RaSD: pretraining on procedurally synthesised images and label fields (student exported)"

    export_prefix = "student.backbone.model."
    batch_source = "synthetic_pairs"
    source_keys = ("num_labels",)  # the generator draws label maps with this many labels
    # the paper's optimiser: AdamW, lr 1e-5, weight decay 0.01, no schedule (min_lr = lr, no warmup), no clipping
    section_defaults = {
        "backbone.name": "unet_small",
        "optim.lr": 1e-5, "optim.min_lr": 1e-5, "optim.warmup_epochs": 0.0,
        "optim.weight_decay": 0.01, "optim.weight_decay_end": 0.01,
        "optim.clip_grad": None, "optim.freeze_last_layer_epochs": 0.0,
        "trainer.batch_size": 16, "trainer.steps_per_epoch": 200,  # the reference's "epoch" of 200 iterations
    }

    def __init__(self, backbone: nn.Module, *, num_labels: int = 2, temp: float = 0.07, eps: float = 1e-6,
                 reduction: str = "mean", seg_weight: float = 1.0, proto_weight: float = 1.0) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        self.num_labels = num_labels
        self.seg_weight, self.proto_weight = seg_weight, proto_weight
        self.student = nn.ModuleDict({"backbone": backbone})
        self.loss_fn = PrototypeDisentanglementLoss(temp=temp, eps=eps, reduction=reduction)

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``image`` (B, 1, *S) in [0, 1], ``label_map`` int64 (B, 1, *S) in [0, K).
            state: the step (RaSD reads no schedule of its own).
        """
        feats = self.student["backbone"].forward_features(batch["image"])
        if "dense" not in feats:
            raise ValueError("RaSD needs a dense backbone whose forward_features returns 'dense' per-pixel "
                             "features (backbone.name=unet_small or swin_unetr)")
        terms = self.loss_fn.terms(feats["dense"], batch["label_map"], num_labels=self.num_labels)
        loss = self.seg_weight * terms["seg"] + self.proto_weight * terms["proto"]
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "loss_seg": terms["seg"].detach(),
                                           "loss_proto": terms["proto"].detach()})

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """Both loss terms on the fixed monitor pairs (the curves; the verdict reads the generic signals and the
        kNN of the synthetic-organ monitor images)."""
        feats = self.student["backbone"].forward_features(batch["image"])
        terms = self.loss_fn.terms(feats["dense"], batch["label_map"], num_labels=self.num_labels)
        return {"rasd_seg": float(terms["seg"]), "rasd_proto": float(terms["proto"])}
