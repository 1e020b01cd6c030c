"""Differentiable augmentation of what a discriminator sees (DiffAugment; Zhao et al., NeurIPS 2020).

The same random transforms go on real and generated images, in the D step and in the G step, and they are
differentiable, so G is trained through them. D never sees an un-augmented image and cannot memorise a small
training set, while G's outputs are still pushed towards the un-augmented data (the transforms are applied
to both sides alike). Policies, any comma-separated subset:
- ``color``: brightness shift U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), per image;
- ``translation``: a shift of up to 1/8 of the side in x and y, zero padded;
- ``cutout``: a zeroed square of half the side at a random place.
Images are (N, C, H, W) in [-1, 1]. Each image's parameters come from ``generator`` (a CPU generator), so a
run that seeds it from (seed, step) draws the same augmentation when it is resumed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    """``"color,translation"`` -> ["color", "translation"]; an empty string is no augmentation."""
    parts = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in parts if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {', '.join(POLICIES)}")
    return parts


def _uniform(n: int, low: float, high: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, 1, 1, 1, generator=generator)).to(like.device, like.dtype)


def color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = len(x)
    x = x + _uniform(n, -0.5, 0.5, generator, x) * 2  # brightness, on the [-1, 1] scale (0.5 on [0, 1])
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * _uniform(n, 0, 2, generator, x) + mean  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, 0.5, 1.5, generator, x) + mean  # contrast


def translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n,), generator=generator).tolist()
    dx = torch.randint(-sx, sx + 1, (n,), generator=generator).tolist()
    padded = F.pad(x, [sx, sx, sy, sy])
    return torch.stack([padded[i, :, sy - dy[i]:sy - dy[i] + h, sx - dx[i]:sx - dx[i] + w] for i in range(n)])


def cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + 1, (n, 1, 1), generator=generator) - ch // 2  # the square's centre anywhere
    left = torch.randint(0, w + 1, (n, 1, 1), generator=generator) - cw // 2
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.device, x.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: list[str], generator: torch.Generator) -> torch.Tensor:
    """``x`` through every transform of ``policy`` (from :func:`parse_policy`), in the given order."""
    for name in policy:
        x = _TRANSFORMS[name](x, generator)
    return x
