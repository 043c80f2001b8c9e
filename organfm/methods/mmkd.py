"""MMKD [0]: distil several teacher models into one student from their stored, projected targets (stage 2).

The teachers' features are computed once, offline (``organfm embed``, or the ``features`` source on the first
run), mapped into a shared D-dimensional space by a denoising auto-encoder projector and stored normalised;
each image comes with the projected targets of ONE of its available teachers, drawn at random
(``organfm.batches.features``). The student (any backbone) gives normalised embeddings of two modalities a, b:

    L = CLIP(s_a, s_b) + w_fd·[MSE(s_a, t_a) + MSE(s_b, t_b)] + ½[CE(c·s_a·t_bᵀ) + CE(c·s_b·t_aᵀ)]

(``organfm.losses.distill``; c a learnable scale initialised at ln(1/0.07), used as is; σ = exp(logit_scale),
the parameter clamped to [0, ln max_logit_scale] in place after each optimizer step, ``after_step``).

- With texts (``method.texts`` not ``none``; the seed's setting): a = the image, b = its text; the student has a
  text side (``student.text``, a :class:`~organfm.text.tower.JointText`, exported beside the backbone, optionally
  started from a stage-1 ``imagetext`` (CLIP) model with ``method.text_init``). t_a, t_b are the sampled teacher's image
  and text targets. A teacher without a text tower has no t_b: for those rows t_b is the student's own
  (detached) text embedding, so their text FD is 0 and their ICL row (student image vs. the batch's t_b) has a
  positive that is the student's own text; in a batch that mixes teachers, its negatives are the other rows'
  t_b, teacher targets for the rows whose teacher has text. So the row is not the CLIP term; it is only in a
  batch where no teacher has text.
- Images only (``texts=none``, the default): a, b = two views of the image, t_a = t_b = the teacher's image
  target, through a linear head.

[0] Wang et al., "Unifying Biomedical Vision-Language Expertise: Towards a Generalist Foundation Model via
    Multi-CLIP Knowledge Distillation", arXiv 2506.22567.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from organfm.batches.teachers import TEACHER_FILTERS
from organfm.losses.distill import DistillLoss, clamp_logit_scale
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.imagetext import TEXT_SOURCE_KEYS
from organfm.methods.registry import register_method
from organfm.monitor.signals import alignment, uniformity
from organfm.text.tower import JointText, create_text_tower, load_joint_text

__all__ = ["MMKD"]


@register_method("mmkd")
class MMKD(Method):
    """Multi-teacher feature distillation: task (CLIP between views) + w_fd·FD + w_icl·ICL.

    Args:
        backbone: the student encoder (any timm name or organfm backbone); it is what ``organfm export`` writes.
        teachers: ``NAME=SPEC`` per teacher (run folder, export, ``random:<arch>``, ``timm:<arch>:<file>``, or an
            ``organfm embed`` output folder). Read by the batch source; required to train.
        embed_dim: D, the shared space of student embeddings and projected teacher features.
        fd_weight: w_fd (the official recipe's ``kdweight`` = 50, with ``fd_scale=per_dim``).
        fd_scale: ``per_dim`` (FD is the elementwise mean over D, the reference: for unit vectors ||s - t||²/D,
            so a given w_fd weakens as embed_dim grows) or ``sum`` (summed over D: the same strength at any D;
            w_fd = 50 per_dim at D = 128 is w_fd ≈ 0.39 sum).
        icl_weight: w_icl.
        task_weight: weight of the CLIP task term between the two views.
        init_temp: initial temperature of both scales: logit_scale = ln(1/T), c = ln(1/T).
        max_logit_scale: the task's σ = exp(logit_scale) is kept at or below this value (the parameter is clamped
            in place after each optimizer step, not in the forward, so a scale above it still has a gradient).
        projector_hidden: width of the projector's shared MLPs.
        projector_noise: sigma of the projector's input noise.
        projector_dropout: dropout in the projector's MLPs.
        projector_steps: Adam steps of the projector fit.
        projector_lr: its learning rate.
        projector_contrastive: λ of the projector's optional NT-Xent term (positives: one image across teachers);
            0 trains it on reconstruction only (the seed's recommended default).
        teacher_filter: ``all`` (every teacher for every image), ``organ`` (keep a teacher for an image when
            its feature is nearest the image's organ prototype) or ``caption`` (keep a teacher with a text tower
            when it ranks the image's own text first in a reference batch) or ``column`` (each image's manifest
            ``teachers`` column lists them, e.g. "coda;rasd"; empty: all); ``organfm.batches.teachers``.
        features_dir: where teacher features are embedded (default: ``<run>/teacher_features``); a shared
            folder lets several runs reuse them.
        texts: ``none`` (images only), ``auto`` (a manifest's ``text_column``, else captions templated from organ
            and modality), ``column`` or ``captions``.
        text_column, caption_modality, caption_labels, text_tower, tokenizer_file, text_width: as for ``imagetext``.
        text_init: a model trained with texts (``imagetext`` run or export) whose text side starts the student's;
            pass its backbone too (``backbone.pretrained_file``) for the seed's stage 1 -> stage 2.
    """

    card_summary = "MMKD: distillation of several frozen teacher models into one student"

    batch_source = "features"
    source_keys = ("teachers", "embed_dim", "projector_hidden", "projector_noise", "projector_dropout",
                   "projector_steps", "projector_lr", "projector_contrastive", "teacher_filter", "features_dir",
                   "text_init") + TEXT_SOURCE_KEYS
    section_defaults = {"views.num_local_views": 0}  # two global views; no local crops
    export_prefix = "student.backbone.model."
    # the embedded default cannot know the user's teachers: two frozen random encoders make a small example
    smoke_overrides = ("method.teachers=[a=random:test_convnext,b=random:test_resnet]", "method.projector_steps=20")

    def __init__(self, backbone: nn.Module, *, teachers: list[str] = (), embed_dim: int = 128,
                 fd_weight: float = 50.0, fd_scale: str = "per_dim", icl_weight: float = 1.0,
                 task_weight: float = 1.0,
                 init_temp: float = 0.07, max_logit_scale: float = 100.0, projector_hidden: int = 256,
                 projector_noise: float = 0.01, projector_dropout: float = 0.2, projector_steps: int = 200,
                 projector_lr: float = 2e-3, projector_contrastive: float = 0.0, teacher_filter: str = "all",
                 features_dir: str = "",
                 texts: str = "none", text_column: str = "text", caption_modality: str = "medical",
                 caption_labels: bool = False, text_tower: str = "small", tokenizer_file: str = "",
                 text_width: int = 128, text_init: str = "") -> None:
        super().__init__()
        if teacher_filter not in TEACHER_FILTERS:
            raise ValueError(f"method.teacher_filter must be one of {', '.join(TEACHER_FILTERS)}, "
                             f"got {teacher_filter!r}")
        if init_temp <= 0 or max_logit_scale <= 1:
            raise ValueError(f"need init_temp > 0 and max_logit_scale > 1, got {init_temp}, {max_logit_scale}")
        self.teachers, self.with_texts = list(teachers), texts != "none"
        self.student = nn.ModuleDict({"backbone": backbone})
        if not self.with_texts:
            self.student["head"] = nn.Linear(backbone.num_features, embed_dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temp)))
        elif text_init:
            self.student["text"] = load_joint_text(text_init).train()
            if (self.student["text"].image_dim, self.student["text"].embed_dim) != (backbone.num_features, embed_dim):
                raise ValueError(f"method.text_init={text_init}: its text side maps {self.student['text'].image_dim}"
                                 f"-d image features to {self.student['text'].embed_dim}-d; the student backbone gives "
                                 f"{backbone.num_features}-d and method.embed_dim is {embed_dim}")
        else:
            tower = create_text_tower(text_tower, tokenizer_file=tokenizer_file, width=text_width)
            self.student["text"] = JointText(tower, image_dim=backbone.num_features, embed_dim=embed_dim,
                                             init_temp=init_temp)
        self.icl_scale = nn.Parameter(torch.tensor(math.log(1 / init_temp)))  # used as is (the official code)
        self.loss_fn = DistillLoss(fd_weight=fd_weight, icl_weight=icl_weight, task_weight=task_weight,
                                   max_logit_scale=max_logit_scale, fd_scale=fd_scale)

    def exported_text(self) -> JointText | None:
        return self.student["text"] if self.with_texts else None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) L2-normalised student image embeddings."""
        if self.with_texts:
            return self.student["text"].image(self.student["backbone"](images))
        return F.normalize(self.student["head"](self.student["backbone"](images)), dim=-1)

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``global`` [(B,C,H,W)] * V, ``teacher`` (B, D) normalised projected image targets of each
                image's sampled teacher; with texts also ``text`` [str] * B, ``text_id`` (B,), ``teacher_text``
                (B, D) and ``teacher_has_text`` (B,).
            state: the step (MMKD reads no schedule of its own).
        """
        if self.with_texts:
            return self._forward_texts(batch)
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
        logs["logit_scale"] = self.logit_scale.detach().exp()
        logs["icl_scale"] = self.icl_scale.detach()
        return StepOutput(loss=terms["loss"], logs=logs)

    def after_step(self, state: StepState) -> None:
        """The task's logit scale is clamped to [0, ln max_logit_scale] in place (the reference's clamp)."""
        scale = self.student["text"].logit_scale if self.with_texts else self.logit_scale
        clamp_logit_scale(scale, self.loss_fn.max_logit_scale)

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """Alignment of the student's embedding with its teacher target, and the student's uniformity."""
        s = self.embed(batch["global"][0])
        return {"alignment": alignment(s, batch["teacher"].to(s.dtype)), "uniformity": uniformity(s)}

    def _forward_texts(self, batch: dict) -> StepOutput:
        joint: JointText = self.student["text"]
        s_img = self.embed(batch["global"][0])
        s_txt = joint.text(joint.tower.tokenize(batch["text"])).to(s_img.dtype)
        t_img = batch["teacher"].to(s_img.dtype)
        if t_img.shape != s_img.shape:
            raise ValueError(f"teacher targets of shape {tuple(t_img.shape)} for student embeddings "
                             f"{tuple(s_img.shape)}: method.embed_dim must match the projected features")
        has = batch["teacher_has_text"].bool().unsqueeze(1)
        t_txt = torch.where(has, batch["teacher_text"].to(s_img.dtype), s_txt.detach())
        terms = self.loss_fn.terms(s_img, s_txt, t_img, t_txt, joint.logit_scale, self.icl_scale,
                                   groups=batch["text_id"])
        logs = {f"loss_{k}" if k != "loss" else k: v.detach() for k, v in terms.items()}
        logs["logit_scale"] = joint.logit_scale.detach().exp()
        logs["icl_scale"] = self.icl_scale.detach()
        logs["teacher_text_fraction"] = has.float().mean()
        return StepOutput(loss=terms["loss"], logs=logs)
