"""Shape on the built-in synthetic data: does a translation take the target class's silhouette?

The content metric checks that a translation keeps its content image's pose, and the domain
classifier judges palette and texture, so an ellipse painted in the star's checker passes both.
Here only the object's silhouette counts: its mask, found as the content metric finds it
(:func:`gpunit.data.synthetic.object_mask`), is compared with every class's silhouette rendered at
the content latent's pose (the pose a content-preserving translation keeps), moved onto the
translation's measured centroid so that a small shift does not count as a wrong shape.

The content image shows its pose only up to its own shape's symmetry: an ellipse is a disk under
the pose, so the disk's turn inside the pose (and with it the orientation of a star's points) is
invisible. Each class is therefore matched at every such turn (:func:`pose_spins`) and scores its
best: a translation is not asked to guess what its content image cannot show.

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

SPIN_STEP_DEG = 12.0  # turns tried where the content image allows any: at most 6 degrees off


def pose_spins(source_class: int, target_class: int, step_deg: float = SPIN_STEP_DEG) -> np.ndarray:
    """Turns (radians) of the target's shape inside the pose that the source's silhouette cannot tell
    apart, modulo the target's own symmetry; 0 first."""
    n_source, n_target = synthetic.CLASSES[source_class].symmetry, synthetic.CLASSES[target_class].symmetry
    if n_target == 0:  # a disk or ring looks the same at every turn
        return np.zeros(1)
    period = 2 * np.pi / n_target
    if n_source == 0:  # any turn of a disk is the same image
        count = max(1, round(np.degrees(period) / step_deg))
        return np.arange(count) * period / count
    return np.unique(np.round((2 * np.pi * np.arange(n_source) / n_source) % period, 9))


@lru_cache(maxsize=4096)
def class_silhouettes(seed: int, index: int, size: int, source_class: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every class's silhouettes at latent ``(seed, index)``'s pose as a ``source_class`` image shows it:
    per class, coverage masks (S, size, size) at each of its :func:`pose_spins` and their centroids (S, 2)."""
    out = []
    for c in range(len(synthetic.CLASSES)):
        masks = np.stack([synthetic.render_silhouette(seed, index, c, size, spin)
                          for spin in pose_spins(source_class, c)])
        centroids = np.array([[s["cx"], s["cy"]] for s in map(synthetic.object_stats, masks)])
        out.append((masks, centroids))
    return out


def silhouette_ious(mask: np.ndarray, seed: int, index: int, source_class: int = 0) -> np.ndarray | None:
    """IoU of a binary object ``mask`` (H, W) with each class's silhouette at latent ``(seed, index)``'s
    pose, moved onto the mask's centroid, at the best turn the ``source_class`` content allows: (C,).
    None when the mask is empty."""
    stats = synthetic.object_stats(mask.astype(np.float64))
    if not np.isfinite(stats["cx"]):
        return None
    ious = []
    for silhouettes, centroids in class_silhouettes(int(seed), int(index), mask.shape[0], int(source_class)):
        best = 0.0
        for silhouette, (cx, cy) in zip(silhouettes, centroids):
            moved = ndimage.shift(silhouette, (stats["cy"] - cy, stats["cx"] - cx), order=1, mode="constant") >= 0.5
            union = np.logical_or(moved, mask).sum()
            best = max(best, np.logical_and(moved, mask).sum() / union if union else 0.0)
        ious.append(best)
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

    def ious(mask, row):
        return silhouette_ious(mask, row["seed"], row["index"], synthetic.CLASS_NAMES.index(row["class"]))

    own = [ious(m, r) for m, r in zip(masks, truths)]
    return {**_summarise(own, target, ""),
            **_summarise([ious(m, r) for m, r in zip(sources, truths)], target, "source_"),
            **_summarise([ious(m, truths[j]) for m, j in zip(masks, perm)], target, "random_"),
            "shape_found": float(np.mean([x is not None for x in own]))}
