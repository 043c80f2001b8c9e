"""``imagetext``: CLIP [0] pretraining, MMKD-CLIP's stage 1 [1]: an image backbone and a text tower trained on
image-text pairs. (Not named ``clip``: the engine's gradient clipping owns that word.)

    L = ½[CE(σ·I·Tᵀ, P) + CE(σ·T·Iᵀ, P)],  σ = exp(logit_scale)

with logit_scale clamped to [0, ln 100] in place after each optimizer step (as CLIP does; a clamp in the
forward would stop its gradient above ln 100, and it could never come back down),
I, T the L2-normalised joint embeddings of a batch and P the positives: the diagonal, or, with
``repeated_positives`` (the default), every pair of items whose texts are identical. Captions templated
from organ names repeat within a batch; plain CLIP would push a liver image away from another liver image's
identical caption (the UniCL fix). With distinct texts both are the seed's symmetric InfoNCE.

The text side (tower, heads, logit scale; :class:`organfm.text.tower.JointText`) lives at ``student.text``
and is exported beside the backbone (``export/text/``), so ``organfm evaluate`` can run zero-shot
classification and retrieval and ``mmkd`` can use the model as a teacher with texts, or as its student's
starting point (``method.text_init``).

[0] Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
[1] Wang et al., "Unifying Biomedical Vision-Language Expertise ... Multi-CLIP Knowledge Distillation",
    arXiv 2506.22567 (stage 1: ``train_one_epoch_ex``, ``ClipLoss``).
"""
from __future__ import annotations

import torch
from torch import nn

from organfm.losses.distill import clamp_logit_scale, clip_loss
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.registry import register_method
from organfm.monitor.signals import alignment, uniformity
from organfm.text.tower import JointText, create_text_tower

__all__ = ["ImageText", "TEXT_SOURCE_KEYS"]

# the method.* keys that say where texts come from (read by the batch source)
TEXT_SOURCE_KEYS = ("texts", "text_column", "caption_modality", "caption_labels", "text_tower")


@register_method("imagetext")
class ImageText(Method):
    """Symmetric InfoNCE between images and their texts, learnable logit scale.

    Args:
        backbone: the image encoder (any timm name or organfm backbone).
        texts: where texts come from: ``auto`` (the manifest's ``text_column`` where the data has one, else
            captions templated from organ and modality), ``column``, ``captions``.
        text_column: the manifest column of each image's text.
        caption_modality: modality word of templated captions ("CT", "X-ray"; a manifest ``modality`` column wins).
        caption_labels: add each image's label to its templated caption.
        text_tower: ``small`` (a Transformer over the corpus tokenizer) or a local Hugging Face model folder.
        tokenizer_file: the corpus tokenizer of a ``small`` tower (set by the batch source).
        text_width: width of a ``small`` tower.
        embed_dim: D, the joint space.
        init_temp: initial temperature (logit_scale = ln(1/T)).
        max_logit_scale: σ is kept at or below this value (the parameter is clamped after each step).
        repeated_positives: identical texts in a batch are positives of each other.
    """

    card_summary = "image-text contrastive pretraining (CLIP-style; text tower in text/)"

    batch_source = "captioned"
    source_keys = TEXT_SOURCE_KEYS
    section_defaults = {"views.num_global_views": 1, "views.num_local_views": 0}

    def __init__(self, backbone: nn.Module, *, texts: str = "auto", text_column: str = "text",
                 caption_modality: str = "medical", caption_labels: bool = False, text_tower: str = "small",
                 tokenizer_file: str = "", text_width: int = 128, embed_dim: int = 128, init_temp: float = 0.07,
                 max_logit_scale: float = 100.0, repeated_positives: bool = True) -> None:
        super().__init__()
        if texts == "none":
            raise ValueError("method.texts=none: CLIP trains on image-text pairs; use auto, column or captions")
        if init_temp <= 0 or max_logit_scale <= 1:
            raise ValueError(f"need init_temp > 0 and max_logit_scale > 1, got {init_temp}, {max_logit_scale}")
        tower = create_text_tower(text_tower, tokenizer_file=tokenizer_file, width=text_width)
        self.student = nn.ModuleDict({"backbone": backbone, "text": JointText(
            tower, image_dim=backbone.num_features, embed_dim=embed_dim, init_temp=init_temp)})
        self.max_logit_scale, self.repeated_positives = max_logit_scale, repeated_positives

    def exported_text(self) -> JointText:
        return self.student["text"]

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``global`` [(B,C,H,W)] * V (the first view is used), ``text`` [str] * B, ``text_id`` (B,).
            state: the step (CLIP reads no schedule of its own).
        """
        joint: JointText = self.student["text"]
        images = joint.image(self.student["backbone"](batch["global"][0]))
        texts = joint.text(joint.tower.tokenize(batch["text"]))
        sigma = joint.logit_scale.exp()
        groups = batch["text_id"] if self.repeated_positives else None
        loss = clip_loss(images, texts.to(images.dtype), sigma, groups)
        with torch.no_grad():  # a caption ranks its own image's text first (ties with identical texts count)
            sims = images @ texts.to(images.dtype).T
            own = sims.diagonal()
            top1 = (sims.max(1).values <= own + 1e-6).float().mean()
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "logit_scale": sigma.detach(),
                                           "i2t_top1": top1})

    def after_step(self, state: StepState) -> None:
        """σ stays in [1, max_logit_scale]: the parameter is clamped in place after the step."""
        clamp_logit_scale(self.student["text"].logit_scale, self.max_logit_scale)

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """Image-text alignment of each pair in the joint space and the uniformity of the image side."""
        joint: JointText = self.student["text"]
        images = joint.image(self.student["backbone"](batch["monitor_input"]))
        texts = joint.text(joint.tower.tokenize(batch["text"])).to(images.dtype)
        return {"alignment": alignment(images, texts), "uniformity": uniformity(images)}
