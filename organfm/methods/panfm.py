"""Pan-FM [0]: masked self-distillation over a subject's set of organs, with Saliency-Guided Masking.

The full text is not public; this follows the reconstruction of seed-systems.md §2 (iBOT [1] + AttMask [2]):
the EMA teacher encodes every available organ, the student the same set with some organs replaced by
[MASK] tokens; the loss is iBOT's: a CLS term (teacher CLS -> student CLS) plus a masked-token term
(teacher tokens -> student predictions at the masked organs), each with DINO/iBOT centring and
temperatures. SGM picks the organs to mask from the teacher's last-layer [CLS] attention, which the
teacher pass already produced, so it costs no extra forward (``organfm.views.organ_masking``).

[0] Wu, McIlvain, Yu, Wen, "A Pan-Organ Foundation Model with Saliency-Guided Masking for Missing
    Robustness", arXiv 2605.07055.
[1] Zhou et al., "iBOT", ICLR 2022.  [2] Kakogeorgiou et al., "What to Hide from Your Students: AttMask", ECCV 2022.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from organfm.heads import DINOHead
from organfm.losses import DINOLoss
from organfm.losses.ibot import MaskedTokenLoss
from organfm.methods.base import StepOutput, StepState
from organfm.methods.registry import register_method
from organfm.methods.teacher import EMATeacherMethod, build_ema_teacher, prototype_health
from organfm.views.organ_masking import (MASKING_RULES, organ_entropy, organ_saliency, organ_token_mask,
                                         random_tokens, select_organs, sgm_organ_mask)

__all__ = ["PanFM"]

MASKING = ("sgm", "random", "none")


@register_method("panfm")
class PanFM(EMATeacherMethod):
    """Pan-FM: ``L = cls_weight · L_cls + token_weight · L_token`` on organ sets.

    Args:
        backbone: an organ-set encoder (``organ_set_vit``): ``forward_features(x, available, token_mask)``
            returns ``cls``, ``tokens`` and ``cls_attention``; a fresh copy becomes the teacher.
        masking: ``"sgm"`` (saliency-guided), ``"random"`` (uniform over available organs) or ``"none"``
            (the student sees what the teacher sees; only the CLS term remains).
        p_sgm: probability that a sample is masked by saliency rather than at random (AttMask's 0.5).
        sgm_rule: ``"proportional"`` (to saliency^(1/sgm_temp)), ``"topk"`` or ``"random"``.
        sgm_temp: T_sgm.
        saliency_per_token: divide an organ's attention by its token count before normalising.
        num_masked_organs: organs masked per sample (fewer when fewer are available).
        min_visible_organs: available organs that always stay visible (>= 1).
        organ_mask_ratio: share of a selected organ's tokens hidden, drawn at random within it (seed-systems.md
            §2: "the whole organ, or a high fraction of its tokens"); 1 (the default): the whole organ.
        token_ratio: fraction of every available organ's tokens that the student also sees as [MASK], each token
            drawn at random (iBOT's masking unit), on top of the whole organs ``masking`` selects; 0 (the
            default): whole organs only. ``masking="none"`` with ``token_ratio > 0`` is token masking alone.
        cls_weight: weight of the CLS term.
        token_weight: weight of the masked-token term (0: the DINO-only variant with organ masking).
        out_dim: prototypes K of the shared head (iBOT shares one head for CLS and tokens).
        hidden_dim: head MLP width.
        bottleneck_dim: head bottleneck.
        norm_last_layer: freeze the weight-norm gain of the prototype layer.
        student_temp: student temperature of both terms.
        center_momentum: momentum of both centers.
    """

    card_summary = "Pan-FM: organ-set pretraining of a shared encoder across a subject's organs"

    batch_source = "organ_sets"
    export_prefix = "teacher.backbone.model."
    # CPU-sized: 5 organs x 32 px, 256 subjects, 2 diseases; paper settings in configs/panfm_paper.yaml
    section_defaults = {"backbone.name": "organ_set_vit", "trainer.batch_size": 16, "data.synthetic_organs": 5,
                        "data.synthetic_size": 32, "data.synthetic_images_per_organ": 256,
                        "data.synthetic_labels": 2, "optim.warmup_epochs": 0.0, "optim.freeze_last_layer_epochs": 0.0,
                        "teacher.warmup_temp_epochs": 0.0}

    def __init__(self, backbone: nn.Module, *, masking: str = "sgm", p_sgm: float = 0.5,
                 sgm_rule: str = "proportional", sgm_temp: float = 1.0, saliency_per_token: bool = False,
                 num_masked_organs: int = 1, min_visible_organs: int = 1, organ_mask_ratio: float = 1.0,
                 token_ratio: float = 0.0, cls_weight: float = 1.0, token_weight: float = 1.0, out_dim: int = 1024,
                 hidden_dim: int = 256, bottleneck_dim: int = 128, norm_last_layer: bool = True,
                 student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if masking not in MASKING:
            raise ValueError(f"masking must be one of {MASKING}, got {masking!r}")
        if sgm_rule not in MASKING_RULES:
            raise ValueError(f"sgm_rule must be one of {MASKING_RULES}, got {sgm_rule!r}")
        if min_visible_organs < 1:
            raise ValueError(f"min_visible_organs must be >= 1 (never mask every available organ), got "
                             f"{min_visible_organs}")
        if not 0 < organ_mask_ratio <= 1:
            raise ValueError(f"organ_mask_ratio must be in (0, 1] (a share of a selected organ's tokens), got "
                             f"{organ_mask_ratio}")
        if not 0 <= token_ratio < 1:
            raise ValueError(f"token_ratio must be in [0, 1) (a share of every organ's tokens), got {token_ratio}")
        if not hasattr(backbone, "tokens_per_organ"):
            raise ValueError(f"Pan-FM needs an organ-set encoder (backbone.name=organ_set_vit), got "
                             f"{type(backbone).__name__}")
        self.masking, self.p_sgm, self.sgm_rule, self.sgm_temp = masking, p_sgm, sgm_rule, sgm_temp
        self.saliency_per_token = saliency_per_token
        self.num_masked, self.min_visible = num_masked_organs, min_visible_organs
        self.organ_mask_ratio, self.token_ratio = organ_mask_ratio, token_ratio
        self.cls_weight, self.token_weight = cls_weight, token_weight
        self.student = nn.ModuleDict({"backbone": backbone, "head": DINOHead(
            backbone.num_features, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
            norm_last_layer=norm_last_layer)})
        self.teacher = build_ema_teacher(self.student)
        self.cls_loss = DINOLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum)
        self.token_loss = MaskedTokenLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum)
        # masks are a pure function of (this seed, step, rank, micro-batch): the seed is drawn at construction
        # under the run seed and saved with the method, so a resumed run draws exactly the masks of an
        # uninterrupted one
        self.register_buffer("mask_seed", torch.randint(0, 2**62, ()))

    def mask_generator(self, state: StepState) -> torch.Generator:
        """The generator of this micro-batch's masks: a pure function of (mask seed, step, rank, micro-batch), so
        DDP ranks and accumulation micro-batches draw different masks and a resumed run draws the same ones."""
        key = [int(self.mask_seed), state.step, state.rank, state.micro_batch]
        words = np.random.SeedSequence(key).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)

    def choose_masks(self, saliency: torch.Tensor, available: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Organs the student does not see, (B, O) bool, and which samples SGM masked, (B,) bool."""
        if self.masking == "none":
            return torch.zeros_like(available), torch.zeros_like(available[:, 0])
        if self.masking == "random":
            mask = select_organs(None, available, rule="random", num_masked=self.num_masked,
                                 min_visible=self.min_visible, generator=generator)
            return mask, torch.zeros_like(available[:, 0])
        return sgm_organ_mask(saliency, available, p_sgm=self.p_sgm, rule=self.sgm_rule, temp=self.sgm_temp,
                              num_masked=self.num_masked, min_visible=self.min_visible, generator=generator)

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``images`` (B, O, 1, *S), ``available`` (B, O) bool.
            state: the step; ``state["teacher_temp"]`` is the teacher temperature of both terms.
        """
        images, available = batch["images"], batch["available"].bool()
        n = self.student["backbone"].tokens_per_organ
        with torch.no_grad():
            t = self.teacher["backbone"].forward_features(images, available)
            saliency = organ_saliency(t["cls_attention"], available, n, per_token=self.saliency_per_token)
        generator = self.mask_generator(state)
        organ_mask, guided = self.choose_masks(saliency, available, generator)
        valid = organ_token_mask(available, n)
        token_mask = organ_token_mask(organ_mask, n)
        if self.organ_mask_ratio < 1:  # a high fraction of each selected organ's tokens rather than all of them
            token_mask = random_tokens(token_mask, self.organ_mask_ratio, generator)
        if self.token_ratio:  # iBOT's unit: random tokens of every available organ, drawn after the organs
            token_mask = token_mask | random_tokens(valid, self.token_ratio, generator)
        s = self.student["backbone"].forward_features(images, available, token_mask=token_mask)
        temp = state["teacher_temp"]
        with torch.no_grad():
            teacher_cls = self.teacher["head"](t["cls"]).unsqueeze(0)  # (1, B, K)
        cls_term = self.cls_loss(teacher_cls, self.student["head"](s["cls"]).unsqueeze(0), teacher_temp=temp,
                                 skip_same_view=False)
        loss = self.cls_weight * cls_term
        logs = {"loss_cls": cls_term.detach()}
        if self.token_weight:
            with torch.no_grad():
                teacher_tokens = self.teacher["head"](t["tokens"])  # (B, O*n, K)
            # the student head runs only where the loss reads it: the masked tokens
            student_tokens = teacher_tokens.new_zeros(teacher_tokens.shape).index_put(
                token_mask.nonzero(as_tuple=True), self.student["head"](s["tokens"][token_mask]))
            token_term = self.token_loss(teacher_tokens, student_tokens, token_mask, teacher_temp=temp)
            self.token_loss.update(teacher_tokens, valid)
            loss = loss + self.token_weight * token_term
            logs["loss_token"] = token_term.detach()
        self.cls_loss.update(teacher_cls)
        logs.update(self._diagnostics(saliency, available, organ_mask, guided))
        logs["masked_tokens"] = token_mask.sum() / valid.sum().clamp(min=1)
        logs["loss"] = loss.detach()
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def _diagnostics(self, saliency: torch.Tensor, available: torch.Tensor, organ_mask: torch.Tensor,
                     guided: torch.Tensor) -> dict[str, torch.Tensor]:
        """Organ-attention entropy, per-organ mean saliency (over subjects that have the organ), masking counts."""
        logs = {"organ_entropy": organ_entropy(saliency, available).mean(),
                "masked_organs": organ_mask.sum(-1).float().mean(), "sgm_fraction": guided.float().mean()}
        counts = available.sum(0).clamp(min=1)
        for o, mean in enumerate((saliency * available).sum(0) / counts):
            logs[f"saliency_organ{o}"] = mean
        return logs

    def monitor_embeddings(self, batch: dict) -> torch.Tensor:
        """The exported (teacher) encoder's subject embedding of every available organ."""
        return self.exported_backbone()(batch["images"], batch["available"].bool())

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """The teacher's organ-attention entropy and per-organ saliency (the step-0 record is the fresh-init
        reference) and its CLS prototype entropies."""
        images, available = batch["images"], batch["available"].bool()
        n = self.teacher["backbone"].tokens_per_organ
        t = self.teacher["backbone"].forward_features(images, available)
        saliency = organ_saliency(t["cls_attention"], available, n, per_token=self.saliency_per_token)
        out = {"organ_entropy": float(organ_entropy(saliency, available).mean())}
        counts = available.sum(0).clamp(min=1)
        out.update({f"saliency_organ{o}": float(v) for o, v in enumerate((saliency * available).sum(0) / counts)})
        out.update(prototype_health(self.cls_loss, self.teacher["head"](t["cls"]), state["teacher_temp"]))
        return out

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.student["head"].last_layer.parameters() if p.requires_grad]
