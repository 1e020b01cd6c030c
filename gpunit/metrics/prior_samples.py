"""Does a class-conditional generator know the built-in data's shapes and layouts? (the prior DeepI2I transfers from)

DeepI2I can only transfer what its prior draws (paper Sec. 3.2): a BigGAN that paints class colours in one
place teaches the translator no shapes and no poses. Two questions, on the generator's samples of each class:
- **silhouette accuracy**: the silhouette-only classifier (the object's mask in its own moment frame,
  :mod:`gpunit.metrics.domain_classifier`, trained on the real images' masks; 0.99 on held-out real images)
  calls a sample's silhouette its class; the mean over classes;
- **layout spread**: the standard deviation, within each class, of the object's centroid (x, y) and size (RMS
  radius of its mask) over that class's samples, against the same within the class's real training images
  (``spread_<stat>``: generated / real, the mean over classes; 1 is the data's spread). Within the class,
  because a BigGAN that ignores z draws one place and size per class, and classes at different places would
  look spread if all samples were pooled (seen: pooled spread 1.0 for such a prior).
Masks are the saturated pixels (every class paints its object in saturated colours over a muted background).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gpunit.data import synthetic
from gpunit.metrics.domain_classifier import (
    domain_files,
    labelled_images,
    load_or_train_domain_classifier,
    silhouettes,
    to_unit_range,
)

LAYOUT_STATS = ("cx", "cy", "scale")
MIN_OBJECT_AREA = 4.0  # pixels; a mask smaller than this is no object


def layout_stats(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Centroid and size of the object in each image (N, 3, H, W) in [-1, 1]; NaN where there is none."""
    masks = silhouettes(images.float())[:, 0].cpu().numpy()
    stats = [synthetic.object_stats(m) if m.sum() >= MIN_OBJECT_AREA else
             {k: float("nan") for k in LAYOUT_STATS} for m in masks]
    return {k: np.array([s[k] for s in stats]) for k in LAYOUT_STATS}


def real_layout(domains_root: str | Path, class_names: Sequence[str], per_class: int = 100
                ) -> dict[str, dict[str, np.ndarray]]:
    """{class: :func:`layout_stats` of its first ``per_class`` training images}."""
    files = {n: paths[:per_class] for n, paths in domain_files(Path(domains_root), "train", list(class_names)).items()}
    images, labels = labelled_images(files, list(files), 64)
    stats, names = layout_stats(to_unit_range(images)), np.array([list(files)[i] for i in labels])
    return {c: {k: v[names == c] for k, v in stats.items()} for c in files}


def within_class_spread(generated: dict[str, np.ndarray], labels: np.ndarray,
                        real: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """{``spread_<stat>``: mean over classes of (std of the class's samples) / (std of its real images)}; samples
    without an object (NaN) are left out, a class with fewer than two found samples counts as no spread."""
    out = {}
    for k in LAYOUT_STATS:
        ratios = []
        for c, stats in real.items():
            g = generated[k][(labels == c) & np.isfinite(generated[k])]
            ratios.append(float(np.std(g) / np.nanstd(stats[k])) if len(g) > 1 else 0.0)
        out[f"spread_{k}"] = float(np.mean(ratios))
    return out


def prior_quality(samples: torch.Tensor, labels: Sequence[str], domains_root: str | Path,
                  device: torch.device | str = "cpu") -> dict:
    """Silhouette accuracy and layout spread of ``samples`` (N, 3, H, W) in [-1, 1], sample i of class
    ``labels[i]`` (see the module docstring)."""
    labels = list(labels)
    if len(labels) != len(samples) or len(samples) < 2:
        raise ValueError(f"need at least two samples with one label each, got {len(samples)} and {len(labels)}")
    classifier = load_or_train_domain_classifier(domains_root, device=device, view="silhouette")
    unknown = sorted(set(labels) - set(classifier.domain_names))
    if unknown:
        raise ValueError(f"classes {unknown} are not classes of {domains_root} ({classifier.domain_names})")
    predicted = classifier.predict(samples)
    per_class = {c: float(np.mean([p == c for p, l in zip(predicted, labels) if l == c])) for c in dict.fromkeys(labels)}
    generated = layout_stats(samples)
    found = np.isfinite(generated["cx"])
    out = {"silhouette_accuracy": float(np.mean(list(per_class.values()))),
           "real_silhouette_accuracy": classifier.test_accuracy, "object_found": float(found.mean()),
           "per_class_silhouette_accuracy": per_class, "samples": len(samples)}
    out.update(within_class_spread(generated, np.array(labels), real_layout(domains_root, list(per_class))))
    return out


def format_prior_quality(q: dict) -> str:
    return (f"prior: silhouette accuracy {q['silhouette_accuracy']:.3f} (real images {q['real_silhouette_accuracy']:.3f}); "
            f"layout spread within each class vs the real images': centroid x {q['spread_cx']:.2f}, "
            f"y {q['spread_cy']:.2f}, size {q['spread_scale']:.2f} (1 = the data's); object found {q['object_found']:.2f}")
