"""Shape on the built-in synthetic data: does a translation take the target class's silhouette?

The content metric checks that a translation keeps its content image's pose, and the domain
classifier judges palette and texture, so an ellipse painted in the star's checker passes both.
Here only the object's silhouette counts: its mask, found as the content metric finds it
(:func:`gpunit.data.synthetic.object_mask`), is compared with every class's silhouette rendered at
the content latent's pose (the pose a content-preserving translation keeps), moved onto the
translation's measured centroid so that a small shift does not count as a wrong shape.

- ``silhouette_iou``: IoU with the target class's silhouette (1: exactly the target shape);
- ``shape_accuracy``: how often the target class's silhouette is the best match of all classes
  (a classifier that sees the silhouette only).

Baselines: the content images themselves (an untranslated ellipse scores as an ellipse) and a random
pairing (silhouettes at another content image's pose: a model that ignores the content's pose).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from gpunit.data import synthetic


@lru_cache(maxsize=4096)
def class_silhouettes(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every class's silhouette of latent ``(seed, index)``: coverage masks (C, size, size) and centroids (C, 2)."""
    masks = np.stack([synthetic.render(seed, index, c, size)[1] for c in range(len(synthetic.CLASSES))])
    centroids = np.array([[s["cx"], s["cy"]] for s in map(synthetic.object_stats, masks)])
    return masks, centroids


def silhouette_ious(mask: np.ndarray, seed: int, index: int) -> np.ndarray | None:
    """IoU of a binary object ``mask`` (H, W) with each class's silhouette at latent ``(seed, index)``'s
    pose, moved onto the mask's centroid: (C,). None when the mask is empty."""
    stats = synthetic.object_stats(mask.astype(np.float64))
    if not np.isfinite(stats["cx"]):
        return None
    silhouettes, centroids = class_silhouettes(int(seed), int(index), mask.shape[0])
    ious = []
    for silhouette, (cx, cy) in zip(silhouettes, centroids):
        moved = ndimage.shift(silhouette, (stats["cy"] - cy, stats["cx"] - cx), order=1, mode="constant") >= 0.5
        union = np.logical_or(moved, mask).sum()
        ious.append(np.logical_and(moved, mask).sum() / union if union else 0.0)
    return np.array(ious)


def _summarise(ious: list[np.ndarray | None], target: int, prefix: str) -> dict:
    found = [x for x in ious if x is not None]
    if not found:
        return {f"{prefix}shape_accuracy": float("nan"), f"{prefix}silhouette_iou": float("nan")}
    return {f"{prefix}shape_accuracy": float(np.mean([int(np.argmax(x)) == target for x in found])),
            f"{prefix}silhouette_iou": float(np.mean([x[target] for x in found]))}


def shape_consistency(translations: list[np.ndarray], truths: list[dict], target_class: str, seed: int = 0) -> dict:
    """Shape figures of ``translations`` ((H, W, 3) uint8) into ``target_class``, with their baselines.

    ``truths``: the content image's row (``seed``, ``index``, ``class``) of each translation.
    Keys: ``shape_accuracy``, ``silhouette_iou`` (translations), ``source_*`` (the content images
    untranslated), ``random_*`` (each translation against another content image's pose) and
    ``shape_found`` (the fraction of translations with an object).
    """
    if len(translations) != len(truths) or len(truths) < 2:
        raise ValueError("need at least two translations, one ground-truth row each")
    if target_class not in synthetic.CLASS_NAMES:
        raise ValueError(f"unknown synthetic class '{target_class}'; one of {', '.join(synthetic.CLASS_NAMES)}")
    target = synthetic.CLASS_NAMES.index(target_class)
    size = translations[0].shape[0]

    def background(row):
        return synthetic.render_background(row["seed"], row["index"], size)

    masks = [synthetic.object_mask(img, background(row)) for img, row in zip(translations, truths)]
    sources = [synthetic.object_mask(synthetic.render(row["seed"], row["index"],
                                                      synthetic.CLASS_NAMES.index(row["class"]), size)[0],
                                     background(row)) for row in truths]
    perm = np.random.default_rng(seed).permutation(len(truths))
    perm = np.where(perm == np.arange(len(perm)), np.roll(perm, 1), perm)  # never the own content image
    own = [silhouette_ious(m, r["seed"], r["index"]) for m, r in zip(masks, truths)]
    return {**_summarise(own, target, ""),
            **_summarise([silhouette_ious(m, r["seed"], r["index"]) for m, r in zip(sources, truths)], target,
                         "source_"),
            **_summarise([silhouette_ious(m, truths[j]["seed"], truths[j]["index"]) for m, j in zip(masks, perm)],
                         target, "random_"),
            "shape_found": float(np.mean([x is not None for x in own]))}
