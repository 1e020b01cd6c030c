"""Filtering over-generated BigGAN latents (paper Appendix A.1, "SynImageNet-291").

The paper renders 6,000 latents (3K at truncation 0.5, 3K at 1.0) in each of the 291 classes and keeps
655 "after filtering low-quality ones", linked across all domains: a latent is kept or dropped in every
class at once. It does not say how low quality was judged. The closest criterion the appendix gives is
the one it applies to ImageNet-291: rank images by the similarity of their style feature (channel means
of VGG's conv5_2) to the mean style feature of their domain, and drop small objects (detected by HTC).
Here, for latent k in class c:

    t[k, c] = cos(S(x_kc), mean over k' of S(x_k'c))      S = channel means of VGG19 conv5_2 (pre-ReLU)
    r[k, c] = rank of t[k, c] among the latents of class c, as a fraction in [0, 1] (1 = most typical)
    score[k] = mean over c of r[k, c]                       ranks, so that every class weighs alike

Optionally, with a mask model: the object's mask must cover at least ``min_object_area`` of the image
in at least ``min_object_classes`` (a fraction) of the classes. The ``keep`` latents with the highest
score that pass are kept.

Scoring renders every latent of every class but writes only the scores (``<out>/filter/<class>.pt``,
one file per class, so an interrupted run resumes); the kept latents are then rendered again and written
by :func:`gpunit.gp_unit.prior.biggan_pairs.generate_pairs`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models.vgg import cfgs, make_layers

from gpunit.engine.pretrained import find_weights, load_state_dict
from gpunit.engine.progress import progress_bar
from gpunit.gp_unit.prior.biggan_pairs import atomic_write_bytes, class_folders, latent_truncations, render
from gpunit.losses import VGG19_FILE, VGG19_URL

log = logging.getLogger(__name__)

CONV5_2 = 31  # vgg19.features[:31] ends with conv5_2 (index 30), before its ReLU


class StyleFeature(nn.Module):
    """The style feature of Appendix A.1: channel means of VGG19's conv5_2, (N, 512), for images in [-1, 1].

    Reads the ``features.*`` weights of torchvision's ``vgg19-dcbb9e9d.pth`` from ``weights_path`` (file or
    folder) or the torch hub cache; the classifier is never built.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        self.features = make_layers(cfgs["E"])[:CONV5_2]
        path = find_weights(VGG19_FILE, VGG19_URL, weights_path, what="VGG19 (BigGAN pair filtering)",
                            option="--vgg-weights")
        state = load_state_dict(path)
        wanted = self.features.state_dict().keys()
        try:
            self.features.load_state_dict({k: state[f"features.{k}"] for k in wanted})
        except (KeyError, RuntimeError) as err:
            raise ValueError(f"{path} is not torchvision's VGG19 ({VGG19_FILE}): {str(err)[:200]}") from err
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 2 - 1)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 2)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features((images - self.mean) / self.std).mean((2, 3))  # (N, 512)


def typicality(features: torch.Tensor) -> torch.Tensor:
    """t[k] = cos(features[k], mean of features) for one class's (K, D) features -> (K,)."""
    return torch.nn.functional.cosine_similarity(features, features.mean(0, keepdim=True), dim=1)


@torch.no_grad()
def score_class(model, class_index: int, num_latents: int, truncations, seed: int, size: int,
                feature_net: StyleFeature, masker=None, batch_size: int = 16,
                device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Typicality (K,) of every latent of one class and, with ``masker``, the object's mask area (K,) as a
    fraction of the image; computed on the uint8 images that :func:`generate_pairs` would write."""
    trunc = latent_truncations(num_latents, truncations)
    features, areas = torch.zeros(num_latents, 512), torch.zeros(num_latents)
    for t in sorted(set(trunc)):
        ks = [k for k in range(num_latents) if trunc[k] == t]
        for i in range(0, len(ks), batch_size):
            batch = ks[i:i + batch_size]
            images = render(model, [(k, class_index) for k in batch], t, seed, size, device)  # uint8
            features[batch] = feature_net(images.float() / 127.5 - 1).float().cpu()
            if masker is not None:
                masks = masker(list(images))  # each (H, W) in [0, 1]
                areas[batch] = torch.stack([torch.as_tensor(m).float().mean().cpu() for m in masks])
    out = {"typicality": typicality(features)}
    if masker is not None:
        out["object_area"] = areas
    return out


def score_latents(model, out_dir: str | os.PathLike, classes, num_latents: int, truncations=(0.5, 1.0),
                  seed: int = 0, size: int | None = None, feature_net: StyleFeature | None = None, masker=None,
                  batch_size: int = 16, device: str | torch.device = "cpu",
                  progress: bool = True) -> dict[str, torch.Tensor]:
    """Score every latent in every class; ``{"typicality": (K, C)[, "object_area": (K, C)]}``, classes in
    the order of ``classes``. Each class's scores are saved to ``<out_dir>/filter/<folder>.pt`` and reused
    when the settings match (resume)."""
    folders = class_folders(classes)
    size = size or model.config.output_dim
    settings = {"seed": seed, "num_latents": num_latents, "size": size,
                "truncations": [float(t) for t in truncations], "masks": masker is not None}
    model = model.to(device).eval()
    if feature_net is not None:
        feature_net = feature_net.to(device)
    columns = []
    for c in progress_bar(list(folders), desc="scoring latents", unit="class", disable=not progress):
        path = Path(out_dir) / "filter" / f"{folders[c]}.pt"
        scores = torch.load(path, weights_only=True) if path.is_file() else None
        if scores is None or scores.get("settings") != settings:
            if feature_net is None:
                raise ValueError("score_latents needs feature_net (a StyleFeature) to score new classes")
            scores = {"settings": settings, **score_class(model, c, num_latents, truncations, seed, size,
                                                          feature_net, masker, batch_size, device)}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save(scores, tmp)
            os.replace(tmp, path)
        columns.append(scores)
    out = {"typicality": torch.stack([s["typicality"] for s in columns], 1)}
    if masker is not None:
        out["object_area"] = torch.stack([s["object_area"] for s in columns], 1)
    return out


def within_class_rank(values: torch.Tensor) -> torch.Tensor:
    """(K, C) -> the rank of each entry within its column as a fraction in [0, 1]; 1 = the largest."""
    k = values.shape[0]
    ranks = values.argsort(0).argsort(0).float()
    return ranks / max(k - 1, 1)


def select_latents(typicality: torch.Tensor, keep: int, object_area: torch.Tensor | None = None,
                   min_object_area: float = 0.0, min_object_classes: float = 0.9) -> tuple[list[int], dict]:
    """The ``keep`` latents (sorted indexes) with the highest mean within-class typicality rank, among those
    whose object covers ``min_object_area`` of the image in at least ``min_object_classes`` of the classes.

    Returns (kept, info); info holds every latent's score and whether it passed the object check. Fewer
    than ``keep`` latents are returned (with a warning) when fewer pass.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    score = within_class_rank(typicality).mean(1)  # (K,)
    passed = torch.ones_like(score, dtype=torch.bool)
    if min_object_area > 0:
        if object_area is None:
            raise ValueError("min_object_area needs the object areas: score the latents with a mask model")
        passed = (object_area >= min_object_area).float().mean(1) >= min_object_classes
    candidates = passed.nonzero().flatten()
    order = candidates[score[candidates].argsort(descending=True, stable=True)]
    kept = sorted(order[:keep].tolist())
    if len(kept) < keep:
        log.warning("only %d of %d latents pass the object check (mask area >= %g in %.0f%% of the classes); "
                    "keeping those %d, not %d. Generate more latents or relax --min-object-area",
                    int(passed.sum()), len(score), min_object_area, 100 * min_object_classes, len(kept), keep)
    return kept, {"score": score, "passed": passed}


def write_selection(out_dir: str | os.PathLike, kept: list[int], info: dict, num_latents: int,
                    truncations=(0.5, 1.0), criterion: dict | None = None) -> Path:
    """``<out_dir>/filter/selection.json``: the kept latents, their truncations, every score, the criterion."""
    trunc = latent_truncations(num_latents, truncations)
    record = {"kept": kept, "num_latents": num_latents,
              "kept_per_truncation": {str(t): sum(trunc[k] == t for k in kept) for t in sorted(set(trunc))},
              "criterion": criterion or {}, "score": [round(float(s), 6) for s in info["score"]],
              "passed_object_check": [bool(p) for p in info["passed"]]}
    path = Path(out_dir) / "filter" / "selection.json"
    atomic_write_bytes(path, json.dumps(record).encode())
    return path


def filter_latents(model, out_dir: str | os.PathLike, classes, num_latents: int, keep: int, truncations=(0.5, 1.0),
                   seed: int = 0, size: int | None = None, vgg_weights: str | os.PathLike | None = None, masker=None,
                   min_object_area: float = 0.0, min_object_classes: float = 0.9, batch_size: int = 16,
                   device: str | torch.device = "cpu", progress: bool = True) -> tuple[list[int], Path]:
    """Score ``num_latents`` latents in every class and keep ``keep`` of them (module docstring); the mask
    model runs only when ``min_object_area`` > 0. Returns the kept latents and the selection record's path."""
    if min_object_area > 0 and masker is None:
        raise ValueError("min_object_area needs a mask model (--masks maskrcnn)")
    masker = masker if min_object_area > 0 else None
    scores = score_latents(model, out_dir, classes, num_latents, truncations, seed, size, StyleFeature(vgg_weights),
                           masker, batch_size, device, progress)
    kept, info = select_latents(scores["typicality"], keep, scores.get("object_area"), min_object_area,
                                min_object_classes)
    criterion = {"typicality": "VGG19 conv5_2 channel means: cosine to the class mean, rank within the class, "
                               "mean over the classes",
                 "min_object_area": min_object_area, "min_object_classes": min_object_classes}
    return kept, write_selection(out_dir, kept, info, num_latents, truncations, criterion)
