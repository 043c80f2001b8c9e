"""MMKD [0]: distil several teacher models into one student from their stored, projected features (stage 2).

The teachers' features are computed once, offline (``organfm embed``, or the ``features`` source on the first
run), mapped into a shared D-dimensional space by a denoising auto-encoder projector and stored normalised;
each image comes with the projected feature of ONE of its available teachers, drawn at random
(``organfm.batches.features``). The student (any backbone) plus a linear head gives normalised embeddings of
two views of each image, which play the two CLIP modalities of the seed when images carry no text:

    L = CLIP(s_1, s_2) + w_fd·[MSE(s_1, t) + MSE(s_2, t)] + ½[CE(c·s_1·tᵀ) + CE(c·s_2·tᵀ)]

(``organfm.losses.distill``; t the sampled teacher's target, c a learnable scale initialised at ln(1/0.07)).

[0] Wang et al., "Unifying Biomedical Vision-Language Expertise: Towards a Generalist Foundation Model via
    Multi-CLIP Knowledge Distillation", arXiv 2506.22567.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from organfm.losses.distill import DistillLoss
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.registry import register_method

__all__ = ["MMKD"]


@register_method("mmkd")
class MMKD(Method):
    """Multi-teacher feature distillation: task (CLIP between views) + w_fd·FD + w_icl·ICL.

    Args:
        backbone: the student encoder (any timm name or organfm backbone); it is what ``organfm export`` writes.
        teachers: ``NAME=SPEC`` per teacher (run folder, export, ``random:<arch>``, ``timm:<arch>:<file>``, or an
            ``organfm embed`` output folder). Read by the batch source; required to train.
        embed_dim: D, the shared space of student embeddings and projected teacher features.
        fd_weight: w_fd (the official recipe's ``kdweight`` = 50).
        icl_weight: w_icl.
        task_weight: weight of the CLIP task term between the two views.
        init_temp: initial temperature of both scales: logit_scale = ln(1/T), c = ln(1/T).
        max_logit_scale: the task's σ = exp(logit_scale) is clamped at this value.
        projector_hidden: width of the projector's shared MLPs.
        projector_noise: sigma of the projector's input noise.
        projector_dropout: dropout in the projector's MLPs.
        projector_steps: Adam steps of the projector fit.
        projector_lr: its learning rate.
        teacher_filter: ``all`` (every teacher for every image) or ``organ`` (keep a teacher for an image when
            its feature is nearest the image's organ prototype; see ``organfm.batches.features.organ_filter``).
        features_dir: where teacher features are embedded (default: ``<run>/teacher_features``); a shared
            folder lets several runs reuse them.
    """

    batch_source = "features"
    source_keys = ("teachers", "embed_dim", "projector_hidden", "projector_noise", "projector_dropout",
                   "projector_steps", "projector_lr", "teacher_filter", "features_dir")
    section_defaults = {"views.num_local_views": 0}  # two global views; no local crops
    export_prefix = "student.backbone.model."
    # the embedded default cannot know the user's teachers: two frozen random encoders make a small example
    smoke_overrides = ("method.teachers=[a=random:test_convnext,b=random:test_resnet]", "method.projector_steps=20")

    def __init__(self, backbone: nn.Module, *, teachers: list[str] = (), embed_dim: int = 128,
                 fd_weight: float = 50.0, icl_weight: float = 1.0, task_weight: float = 1.0,
                 init_temp: float = 0.07, max_logit_scale: float = 100.0, projector_hidden: int = 256,
                 projector_noise: float = 0.01, projector_dropout: float = 0.2, projector_steps: int = 200,
                 projector_lr: float = 2e-3, teacher_filter: str = "all", features_dir: str = "") -> None:
        super().__init__()
        if teacher_filter not in ("all", "organ"):
            raise ValueError(f"method.teacher_filter must be 'all' or 'organ', got {teacher_filter!r}")
        if init_temp <= 0 or max_logit_scale <= 1:
            raise ValueError(f"need init_temp > 0 and max_logit_scale > 1, got {init_temp}, {max_logit_scale}")
        self.teachers = list(teachers)
        self.student = nn.ModuleDict({"backbone": backbone, "head": nn.Linear(backbone.num_features, embed_dim)})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temp)))
        self.icl_scale = nn.Parameter(torch.tensor(math.log(1 / init_temp)))  # used as is (the official code)
        self.loss_fn = DistillLoss(fd_weight=fd_weight, icl_weight=icl_weight, task_weight=task_weight,
                                   max_logit_scale=max_logit_scale)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) L2-normalised student embeddings."""
        return F.normalize(self.student["head"](self.student["backbone"](images)), dim=-1)

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``global`` [(B,C,H,W)] * V with V >= 2, ``teacher`` (B, D) normalised projected features
                of each image's sampled teacher.
            state: the step (MMKD reads no schedule of its own).
        """
        views = batch["global"]
        if len(views) < 2:
            raise ValueError("MMKD needs two global views per image (views.num_global_views >= 2)")
        b = views[0].shape[0]
        s = self.embed(torch.cat(views[:2]))
        s_1, s_2 = s[:b], s[b:]
        t = batch["teacher"].to(s.dtype)
        if t.shape != s_1.shape:
            raise ValueError(f"teacher targets of shape {tuple(t.shape)} for student embeddings {tuple(s_1.shape)}: "
                             "method.embed_dim must match the projected features")
        terms = self.loss_fn.terms(s_1, s_2, t, t, self.logit_scale, self.icl_scale)
        logs = {f"loss_{k}" if k != "loss" else k: v.detach() for k, v in terms.items()}
        logs["logit_scale"] = self.logit_scale.detach().clamp(0, self.loss_fn.max_log_scale).exp()
        logs["icl_scale"] = self.icl_scale.detach()
        return StepOutput(loss=terms["loss"], logs=logs)
