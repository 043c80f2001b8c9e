"""Multi-view crops made on the accelerator: one batched pass per view group, no per-sample Python loop.

``DeviceViews`` is the batched twin of :class:`organfm.views.GlobalLocalViews`: the same steps with the same
parameter distributions (random resized crop with torchvision's 10-try rejection rule, flips, rotation with
zero fill, brightness/contrast, gamma, Gaussian blur with per-sample sigma, normalisation), applied to a whole
batch of cached uint8 images with ``affine_grid``/``grid_sample`` and grouped convolutions.

Its randomness is not torch's generator: every draw is a counter-based hash of (item seed, view, slot), so a
view depends only on its item's seed (the sampler's (seed, epoch, index) seed), never on batch composition,
device or what ran before. CPU and CUDA draw the same crop boxes; pixels agree to float rounding.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F

from organfm.views.recipes import GlobalLocalViews, resolve_view_arguments

__all__ = ["DeviceViews", "crop_boxes", "seeded_uniforms"]

_M32 = 0xFFFFFFFF
_SLOTS = 32  # uniforms per (item, view): 10 scale tries, 10 ratio tries, then one per remaining draw
_S_SCALE, _S_RATIO, _S_I, _S_J, _S_HFLIP, _S_VFLIP, _S_ANGLE = 0, 10, 20, 21, 22, 23, 24
_S_BC, _S_B, _S_C, _S_GAMMA_ON, _S_GAMMA, _S_BLUR_ON, _S_SIGMA = 25, 26, 27, 28, 29, 30, 31


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 in int64 without overflow: split c into 16-bit halves (x < 2**32)
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (lowbias32) on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def seeded_uniforms(seeds: torch.Tensor, num_views: int, slots: int = _SLOTS) -> torch.Tensor:
    """Uniform draws in [0, 1) that are a pure function of (seed, view, slot).

    Args:
        seeds: (B,) int64 non-negative item seeds (63-bit).
        num_views: views per item.
        slots: draws per view.

    Returns:
        (B, num_views, slots) float32 on ``seeds.device``.
    """
    seeds = seeds.to(torch.int64)
    base = _hash32((seeds & _M32) ^ _hash32((seeds >> 32) & _M32)).view(-1, 1, 1)
    counter = torch.arange(num_views * slots, device=seeds.device, dtype=torch.int64).view(1, num_views, slots)
    x = _hash32(base ^ _hash32((counter * 0x9E3779B9 + 0x2545F491) & _M32))
    x = _hash32(x ^ base)
    return (x >> 8).to(torch.float32) * (1.0 / (1 << 24))  # 24 bits: exact in float32


def crop_boxes(u: torch.Tensor, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop.get_params``, batched: the first of 10 tries that fits, else centre.

    Args:
        u: (..., 22) uniforms: 10 scale tries, 10 log-ratio tries, the row and the column draw.
        height: image height H.
        width: image width W.
        scale: area fraction range.
        ratio: aspect (w/h) range, drawn log-uniformly.

    Returns:
        (..., 4) float32 boxes ``(top, left, h, w)`` in whole pixels.
    """
    area = float(height * width)
    s = scale[0] + (scale[1] - scale[0]) * u[..., _S_SCALE:_S_SCALE + 10]
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * u[..., _S_RATIO:_S_RATIO + 10])
    w = torch.round(torch.sqrt(area * s * r))
    h = torch.round(torch.sqrt(area * s / r))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=-1, keepdim=True)  # argmax of bools: the first True
    w, h = w.gather(-1, first).squeeze(-1), h.gather(-1, first).squeeze(-1)
    in_ratio = width / height  # torchvision's fallback: a centre crop with the ratio clamped into range
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    found = ok.any(-1)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = torch.where(found, torch.floor(u[..., _S_I] * (height - h + 1)), torch.full_like(h, (height - fh) // 2))
    left = torch.where(found, torch.floor(u[..., _S_J] * (width - w + 1)), torch.full_like(w, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=-1)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, 2R+1) normalised Gaussians; each truncated at its own ``max(1, round(3 sigma))`` as the CPU path."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32).view(1, -1)
    own = torch.clamp(torch.floor(3 * sigma + 0.5), min=1).view(-1, 1)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2) * (t.abs() <= own)
    return k / k.sum(-1, keepdim=True)


class DeviceViews:
    """Global and local views of a batch of images, made with batched tensor ops on the images' device.

    Args: those of :class:`organfm.views.GlobalLocalViews` (same names, meanings and defaults, read from its
    signature), so ``DeviceViews(**views_kwargs(cfg.views))`` draws views from the same distribution as the
    CPU path.

    Call:
        ``views(images, seeds)``: ``images`` (B, C, H, W) uint8 (0..255) or float in [0, 1], ``seeds`` (B,)
        int64 item seeds. Returns ``{"global": [(B, C, G, G)] * Vg, "local": [(B, C, L, L)] * Vl}`` float32.
    """

    def __init__(self, **recipe: Any) -> None:
        # the CPU recipe's signature holds the defaults: one place to change a view's distribution
        a = resolve_view_arguments(**recipe)
        if a["num_global_views"] < 1:
            raise ValueError("num_global_views must be >= 1")
        self.num_global_views, self.num_local_views = a["num_global_views"], a["num_local_views"]
        self.global_size, self.local_size = a["global_size"], a["local_size"]
        self.global_scale, self.local_scale = tuple(a["global_scale"]), tuple(a["local_scale"])
        self.hflip_prob, self.vflip_prob = a["hflip_prob"], a["vflip_prob"]
        self.rotation_degrees = a["rotation_degrees"]
        self.brightness, self.contrast = a["brightness"], a["contrast"]
        self.log_gamma = (math.log(a["gamma"][0]), math.log(a["gamma"][1]))
        self.blur_probs, self.blur_sigma = tuple(a["blur_probs"]), tuple(a["blur_sigma"])
        self.mean, self.std = a["mean"], a["std"]
        # the CPU path's RandomBrightnessContrast and RandomGamma apply with these probabilities
        self.bc_prob, self.gamma_prob = 0.8, 0.5

    # help(DeviceViews) and editors show the recipe's arguments, not ``**recipe``
    __init__.__signature__ = inspect.signature(GlobalLocalViews.__init__)  # type: ignore[attr-defined]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, seeds: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        if images.ndim != 4:
            raise ValueError(f"DeviceViews takes a batch of 2D images (B, C, H, W), got shape {tuple(images.shape)}")
        if seeds.shape != images.shape[:1]:
            raise ValueError(f"one seed per image: got seeds {tuple(seeds.shape)} for images {tuple(images.shape)}")
        vg, vl = self.num_global_views, self.num_local_views
        u = seeded_uniforms(seeds.to(images.device), vg + vl)  # (B, V, slots)
        blur_p = [self.blur_probs[0]] + [self.blur_probs[1]] * (vg - 1)
        g = self._group(images, u[:, :vg], blur_p, self.global_size, self.global_scale)
        out = {"global": list(g.unbind(0)), "local": []}
        if vl:
            local = self._group(images, u[:, vg:], [self.blur_probs[2]] * vl, self.local_size, self.local_scale)
            out["local"] = list(local.unbind(0))
        return out

    def _group(self, images: torch.Tensor, u: torch.Tensor, blur_p: list[float], size: int,
               scale: tuple[float, float]) -> torch.Tensor:
        """Views of one size for every (view, item): ``u`` (B, V, slots) -> (V, B, C, size, size).

        ``blur_p``: blur probability of each of the V views.
        """
        b, c, height, width = images.shape
        v = u.shape[1]
        u = u.transpose(0, 1).reshape(v * b, -1)  # view-major: rows v*B .. (v+1)*B-1 are view v
        n = v * b
        box = crop_boxes(u, height, width, scale)
        top, left, h, w = box.unbind(-1)
        # supersample then average-pool: an area filter standing in for torchvision's antialiased resize
        longest = min(max(height, width), max(height, width) * math.sqrt(scale[1] * 4 / 3))
        k = max(1, min(4, math.ceil(longest / size)))
        angle = (2 * u[:, _S_ANGLE] - 1) * math.radians(self.rotation_degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], -1),
                           torch.stack([sin, cos, torch.zeros_like(cos)], -1)], 1)  # (N, 2, 3)
        q = F.affine_grid(rot, [n, c, size * k, size * k], align_corners=False)  # rotated output coords
        inside = (q.abs() <= 1).all(-1, keepdim=True).movedim(-1, 1)  # torchvision's rotation fills 0 outside
        fx = torch.where(u[:, _S_HFLIP] < self.hflip_prob, -1.0, 1.0)
        fy = torch.where(u[:, _S_VFLIP] < self.vflip_prob, -1.0, 1.0)
        # crop box (align_corners=False): centre and half-extent in [-1, 1] coordinates
        half = torch.stack([w / width * fx, h / height * fy], -1).view(n, 1, 1, 2)
        centre = torch.stack([(2 * left + w) / width - 1, (2 * top + h) / height - 1], -1).view(n, 1, 1, 2)
        src = images.unsqueeze(0).expand(v, b, c, height, width).reshape(n, c, height, width)
        src = src.to(torch.float32) * (1 / 255.0) if images.dtype == torch.uint8 else src.to(torch.float32)
        x = F.grid_sample(src, q * half + centre, mode="bilinear", padding_mode="border", align_corners=False)
        x = x * inside
        if k > 1:
            x = F.avg_pool2d(x, k)
        x = self._intensity(x, u, blur_p, b)
        return x.view(v, b, c, size, size)

    def _intensity(self, x: torch.Tensor, u: torch.Tensor, blur_p: list[float], b: int) -> torch.Tensor:
        """Brightness/contrast -> gamma -> blur -> normalise, each with its own per-view draw (x in [0, 1])."""
        n, c, hh, ww = x.shape
        one = torch.ones_like(u[:, 0])
        bc_on = u[:, _S_BC] < self.bc_prob
        bright = torch.where(bc_on, 1 - self.brightness + 2 * self.brightness * u[:, _S_B], one).view(n, 1, 1, 1)
        contr = torch.where(bc_on, 1 - self.contrast + 2 * self.contrast * u[:, _S_C], one).view(n, 1, 1, 1)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x * bright - m * bright) * contr + m * bright).clamp(0, 1)
        lg = self.log_gamma[0] + (self.log_gamma[1] - self.log_gamma[0]) * u[:, _S_GAMMA]
        gam = torch.where(u[:, _S_GAMMA_ON] < self.gamma_prob, torch.exp(lg), one).view(n, 1, 1, 1)
        x = x.pow(gam)
        if max(blur_p) > 0:  # decided from the config, not the data: no host sync
            s0, s1 = self.blur_sigma
            sigma = s0 + (s1 - s0) * u[:, _S_SIGMA]
            radius = max(1, int(3 * s1 + 0.5))
            kern = _gaussian_kernels(sigma, radius)
            delta = (torch.arange(-radius, radius + 1, device=x.device) == 0).to(kern.dtype)
            p = torch.tensor(blur_p, device=x.device).repeat_interleave(b)
            kern = torch.where((u[:, _S_BLUR_ON] < p).view(n, 1), kern, delta)  # (N, 2R+1)
            kern = kern.repeat_interleave(c, dim=0)  # one kernel per (view, channel)
            y = x.reshape(1, n * c, hh, ww)
            y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kern.view(n * c, 1, 1, -1), groups=n * c)
            y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kern.view(n * c, 1, -1, 1), groups=n * c)
            x = y.view(n, c, hh, ww)
        return (x - self.mean) / self.std
