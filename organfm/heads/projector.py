"""Teacher-feature projector: several teachers' features into one shared space, trained as a denoising AE.

MMKD-CLIP [0] (``open_clip/models_ae.py``, ``MultiCLIP_AE``): teacher k's feature (d_k) goes through its own
``Linear(d_k -> D)`` and a shared encoder MLP to a shared code (D); a shared decoder MLP and a per-teacher
``Linear(D -> d_k)`` reconstruct it. Training adds Gaussian noise (sigma 0.01) to the input and dropout (0.2)
in the MLPs; the loss is the reconstruction MSE against the L2-normalised original. The stored teacher
targets are the L2-normalised codes (:meth:`TeacherProjector.project`).

Option (the seed's NT-Xent helper, unverified in its code): ``contrastive_weight`` λ adds λ·NT-Xent (τ = 0.07)
over the codes of one batch of images from every teacher, positives = the same image across teachers, so the
teachers' codes of one image agree and a student drawing a different teacher per epoch is pulled one way.

The encoder's last layer is linear (no ReLU after it), so codes can point anywhere on the sphere; with a final
ReLU every code would lie in the positive orthant and cosine similarities would all be >= 0.

[0] Wang et al., "Unifying Biomedical Vision-Language Expertise: Towards a Generalist Foundation Model via
    Multi-CLIP Knowledge Distillation", arXiv 2506.22567.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TeacherProjector", "fit_projector", "nt_xent"]


def _mlp(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class TeacherProjector(nn.Module):
    """Per-teacher input/output maps around a shared encoder/decoder.

    Args:
        teacher_dims: d_k of each teacher, in teacher order.
        embed_dim: D, the shared space (the student's embedding size).
        hidden_dim: width of the shared MLPs.
        noise_std: sigma of the Gaussian noise added to the (normalised) input while training.
        dropout: dropout probability inside the shared MLPs.
    """

    def __init__(self, teacher_dims: Sequence[int], *, embed_dim: int = 128, hidden_dim: int = 256,
                 noise_std: float = 0.01, dropout: float = 0.2) -> None:
        super().__init__()
        if not teacher_dims:
            raise ValueError("TeacherProjector needs at least one teacher dimension")
        self.teacher_dims, self.noise_std = list(teacher_dims), noise_std
        self.inputs = nn.ModuleList(nn.Linear(d, embed_dim) for d in teacher_dims)
        self.encoder = _mlp(embed_dim, hidden_dim, dropout)
        self.decoder = _mlp(embed_dim, hidden_dim, dropout)
        self.outputs = nn.ModuleList(nn.Linear(embed_dim, d) for d in teacher_dims)

    def encode(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        """(N, d_k) teacher-k features -> (N, D) codes (not normalised); noise only in training mode."""
        x = F.normalize(feats.float(), dim=-1)
        if self.training and self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return self.encoder(self.inputs[k](x))

    def forward(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        """(N, d_k) -> (N, d_k) reconstruction of the normalised input."""
        return self.outputs[k](self.decoder(self.encode(feats, k)))

    def reconstruction_loss(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        """MSE between the reconstruction and the L2-normalised teacher-k features (scalar)."""
        return F.mse_loss(self(feats, k), F.normalize(feats.float(), dim=-1))

    @torch.no_grad()
    def project(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        """(N, d_k) -> (N, D) L2-normalised codes, in eval mode (no noise, no dropout)."""
        was = self.training
        self.eval()
        out = F.normalize(self.encode(feats, k), dim=-1)
        self.train(was)
        return out


def nt_xent(codes: torch.Tensor, sample: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """NT-Xent over (M, D) codes: each code's positives are the other codes of the same ``sample`` id (M,).

    Per anchor: mean over its positives p of -log(exp(z·z_p/τ) / Σ_{j≠anchor} exp(z·z_j/τ)), codes L2-normalised;
    averaged over the anchors that have a positive.
    """
    z = F.normalize(codes, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = logits.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    positive = (sample[:, None] == sample[None, :]) & ~self_mask
    has = positive.any(1)
    return -(log_prob.masked_fill(~positive, 0.0).sum(1)[has] / positive.sum(1)[has]).mean()


def fit_projector(projector: TeacherProjector, feats: Sequence[torch.Tensor], *, steps: int = 200,
                  batch_size: int = 128, lr: float = 2e-3, seed: int = 0, contrastive_weight: float = 0.0,
                  paired_rows: int = 0, temperature: float = 0.07) -> list[float]:
    """Train ``projector`` on every teacher's features (one minibatch per teacher per step, losses summed).

    Deterministic for a given seed: batches and noise are drawn from a forked, seeded RNG, so the caller's
    random state is untouched.

    Args:
        projector: the model, trained in place.
        feats: per teacher, (N_k, d_k) features.
        steps: Adam steps.
        batch_size: rows per teacher per step (all rows when N_k is smaller).
        lr: Adam learning rate.
        seed: seed of batches, noise and dropout.
        contrastive_weight: λ of the NT-Xent term (0: reconstruction only, the default).
        paired_rows: the first ``paired_rows`` rows of every teacher are the same samples, in the same order
            (the images); the NT-Xent term draws one batch of them for all teachers. Needed when λ > 0.
        temperature: τ of the NT-Xent term.

    Returns:
        the summed loss of each step.
    """
    if len(feats) != len(projector.teacher_dims):
        raise ValueError(f"{len(feats)} feature sets for a projector of {len(projector.teacher_dims)} teachers")
    if contrastive_weight > 0 and (paired_rows < 2 or any(len(f) < paired_rows for f in feats)):
        raise ValueError(f"the projector's NT-Xent term needs >= 2 paired rows in every teacher, got {paired_rows}")
    opt = torch.optim.Adam(projector.parameters(), lr=lr)
    losses = []
    projector.train()
    threads = torch.get_num_threads()
    # matrices this small gain nothing from threads, and on a busy CPU the thread hand-offs cost ~10x (measured)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(steps):
                loss = sum(projector.reconstruction_loss(f[torch.randint(len(f), (min(batch_size, len(f)),))], k)
                           for k, f in enumerate(feats))
                if contrastive_weight > 0:
                    rows = torch.randperm(paired_rows)[:batch_size]
                    codes = torch.cat([projector.encode(f[rows], k) for k, f in enumerate(feats)])
                    loss = loss + contrastive_weight * nt_xent(codes, rows.repeat(len(feats)), temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    projector.eval()
    return losses
