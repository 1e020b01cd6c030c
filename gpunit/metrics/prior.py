"""How well Stage I learned the prior: content features of same-latent pairs vs. other pairs.

On held-out pairs (``<root>/<class>/<k>.png``, same k = same latent), the ratio
    mean L1(Ec(x_{c,k}), Ec(x_{c',k})) / mean L1(Ec(x_{c,k}), Ec(x_{c',k'})),  c != c', k != k'
is well below 1 when Ec maps the same content to the same feature whatever the class.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from gpunit.data.datasets import class_folders
from gpunit.data.images import load_rgb, scan_images, to_tensor


@torch.no_grad()
def pair_feature_ratio(encoder, pairs_root: str | Path, max_latents: int = 64) -> dict:
    root = Path(pairs_root)
    classes = class_folders(root)
    stems = [{p.stem: p for p in scan_images(root / c, recursive=False)} for c in classes]
    common = sorted(set.intersection(*(set(s) for s in stems)))[:max_latents]
    if len(classes) < 2 or len(common) < 2:
        raise ValueError(f"{root} needs at least 2 class folders sharing at least 2 file names")
    device = next(encoder.parameters()).device
    size = encoder.image_size
    feats = []  # (classes, latents, s*s)
    for per_class in stems:
        images = torch.stack([to_tensor(load_rgb(per_class[k])) for k in common]).to(device)
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        feats.append(encoder(images).flatten(1))
    feats = torch.stack(feats)
    c, k, _ = feats.shape
    dist = (feats[:, None, :, None] - feats[None, :, None, :]).abs().mean(-1)  # (c, c', k, k')
    other_class = ~torch.eye(c, dtype=torch.bool, device=device)[:, :, None, None]
    same_latent = torch.eye(k, dtype=torch.bool, device=device)[None, None]
    same = dist[other_class & same_latent].mean()
    different = dist[other_class & ~same_latent].mean()
    return {"same_latent_l1": float(same), "different_latent_l1": float(different),
            "ratio": float(same / different), "classes": c, "latents": k}
