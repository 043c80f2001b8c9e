"""Log-ratio loss [0]: make the ratios of distances between image embeddings follow those of text embeddings.

Triad [1] uses it to constrain the geometry of pooled encoder features by the embeddings of acquisition
descriptions: a geometric constraint, not contrastive alignment, so the two spaces may differ in scale
and dimension.

[0] Kim et al., "Deep Metric Learning Beyond Binary Supervision", CVPR 2019.
[1] Wang et al., Triad, arXiv 2502.14064 (``LogRatioLoss`` in ``simmim_advanced.py``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LogRatioLoss"]


class LogRatioLoss(nn.Module):
    """``mean_a (log d_f(a,i_a) - log d_f(a,j_a) - [log d_t(a,i_a) - log d_t(a,j_a)])²``.

    ``i`` and ``j`` are two random permutations of the batch; ``d(a,b) = sqrt(‖x_a - x_b‖² + eps / B)``,
    clamped at ``1e-6``. Two kinds of anchor are left out, because their text distance is the ``eps`` floor
    rather than a distance:

    - an anchor paired with itself by ``i`` or ``j`` (the reference keeps them; with B = 8 a fixed point
      occurs in about 2 of 3 batches);
    - an anchor paired by ``i`` or ``j`` with a volume of the *same description* (equal text embeddings, or the
      same ``groups`` id). The reference keeps these too: its target ``log d_t`` is then ``log sqrt(eps / B)``,
      about -6, so the loss is dominated by these pairs (26.9 against 0.016 on a batch of 8 with 2 descriptions)
      and is lowered by collapsing every volume of a description onto one point. Descriptions say nothing about
      how two volumes of one protocol differ, so these pairs get no target at all.

    Args:
        eps: the reference's 1e-4 (divided by the batch size), keeps the square root differentiable.
        same_text_tol: text embeddings closer than this, relative to their mean norm, are the same description.
    """

    def __init__(self, eps: float = 1e-4, same_text_tol: float = 1e-6) -> None:
        super().__init__()
        self.eps, self.same_text_tol = eps, same_text_tol

    def _log_dist(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        sq = (x - other).pow(2).sum(dim=1)
        return torch.sqrt(sq + self.eps / x.shape[0]).clamp_min(1e-6).log()

    def same_description(self, text: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """(B, B) bool: which volumes share a description (the same ``groups`` id, else equal text embeddings)."""
        if groups is not None:
            groups = groups.to(text.device)
            return groups[:, None] == groups[None, :]
        txt = text.detach().float()
        scale = txt.norm(dim=1).mean().clamp_min(1e-12)
        return torch.cdist(txt, txt) <= self.same_text_tol * scale

    def forward(self, image: torch.Tensor, text: torch.Tensor, perms: tuple[torch.Tensor, torch.Tensor] | None = None,
                generator: torch.Generator | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            image: (B, E) image embeddings.
            text: (B, T) text embeddings (any T).
            perms: the two permutations (i, j), each (B,) int64; drawn with ``generator`` when None.
            generator: source of the permutations (the global RNG when None).
            groups: (B,) description ids; None: volumes with equal text embeddings share a description.

        Returns:
            Scalar loss over the anchors whose two partners are other volumes of other descriptions (a zero
            that keeps the graph when there is none, e.g. when every volume has the same description).
        """
        if image.dim() != 2 or text.dim() != 2 or image.shape[0] != text.shape[0]:
            raise ValueError(f"expected (B, E) image and (B, T) text embeddings, got {tuple(image.shape)} and "
                             f"{tuple(text.shape)}")
        b = image.shape[0]
        if perms is None:
            i = torch.randperm(b, generator=generator).to(image.device)
            j = torch.randperm(b, generator=generator).to(image.device)
        else:
            i, j = (p.to(image.device) for p in perms)
        anchors = torch.arange(b, device=image.device)
        same = self.same_description(text.to(image.device), groups)  # the diagonal too: self-pairs go with them
        keep = ~same[anchors, i] & ~same[anchors, j]
        if not keep.any():
            return image.sum() * 0.0
        a, i, j = anchors[keep], i[keep], j[keep]
        img, txt = image.float(), text.float().to(image.device)
        img_ratio = self._log_dist(img[a], img[i]) - self._log_dist(img[a], img[j])
        txt_ratio = self._log_dist(txt[a], txt[i]) - self._log_dist(txt[a], txt[j])
        return (img_ratio - txt_ratio).pow(2).mean()
