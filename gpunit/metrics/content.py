"""Content consistency on the built-in synthetic data (an objective stand-in for the paper's user study).

The synthetic prior knows, for every test image, the latent that drew it: the object's centroid,
scale and angle, and the background. A translation keeps the content when the object found in it
(the pixels that differ from the content image's known background) sits where the content
image's object was, at the same scale and angle. A random pairing of translations with other
content images gives the error of a model that ignores the content.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gpunit.data import synthetic


def ground_truth(domains_root: str | Path, image_path: str | Path, rows_by_path: dict | None = None) -> dict:
    """Seed, index, class and exact object statistics of a synthetic test image, by its path."""
    root = Path(domains_root)
    rows_by_path = rows_by_path if rows_by_path is not None else content_rows(root)
    key = _relative_key(root, image_path)
    if key not in rows_by_path:
        raise KeyError(f"{image_path} is not listed in {root / 'content.csv'}; is it a synthetic test image?")
    return rows_by_path[key]


def content_rows(domains_root: str | Path) -> dict:
    """``content.csv`` of a synthetic ``domains`` folder, keyed by path relative to the data root."""
    root = Path(domains_root)
    rows = synthetic.read_content_csv(root / "content.csv")
    return {row["path"]: row for row in rows}


def _relative_key(domains_root: Path, image_path: str | Path) -> str:
    image_path = Path(image_path).resolve()
    return image_path.relative_to(domains_root.resolve().parent).as_posix()


def _errors(measured: dict, truth: dict) -> tuple[float, float, float]:
    centroid = math.hypot(measured["cx"] - truth["cx"], measured["cy"] - truth["cy"])
    scale = abs(measured["scale"] - truth["scale"]) / truth["scale"]
    d = abs(measured["angle"] - truth["angle"]) % 180.0
    return centroid, scale, min(d, 180.0 - d)


def content_consistency(translations: list[np.ndarray], truths: list[dict], seed: int = 0,
                        min_elongation: float = 1.3) -> dict:
    """Errors between each translation's object and its content image's object, and for a random pairing.

    ``translations``: (H, W, 3) uint8 images; ``truths``: rows with ``seed``, ``index``, ``class``
    of each translation's content image. Angle errors count only objects elongated enough for
    their principal axis to mean something (``min_elongation``).
    """
    if len(translations) != len(truths) or len(truths) < 2:
        raise ValueError("need at least two translations, one ground-truth row each")
    size = translations[0].shape[0]
    stats = []
    for row in truths:  # exact statistics of the content image at the translations' size
        _, mask, _ = synthetic.render(row["seed"], row["index"], synthetic.CLASS_NAMES.index(row["class"]), size)
        stats.append(synthetic.object_stats(mask))
    measured = [synthetic.measure_object(img, synthetic.render_background(r["seed"], r["index"], size))
                for img, r in zip(translations, truths)]
    found = [i for i, m in enumerate(measured) if np.isfinite(m["cx"])]
    perm = np.random.default_rng(seed).permutation(len(truths))
    perm = np.where(perm == np.arange(len(perm)), np.roll(perm, 1), perm)  # never the own content image

    def summarise(pairs):
        errs = [(_errors(measured[i], stats[j]), stats[j]["elongation"]) for i, j in pairs]
        centroid = float(np.mean([e[0] for e, _ in errs])) if errs else float("nan")
        scale = float(np.mean([e[1] for e, _ in errs])) if errs else float("nan")
        angles = [e[2] for e, elong in errs if elong >= min_elongation]
        return centroid, scale, float(np.mean(angles)) if angles else float("nan")

    own = summarise([(i, i) for i in found])
    rand = summarise([(i, int(perm[i])) for i in found])
    return {"centroid_px": own[0], "scale_rel": own[1], "angle_deg": own[2],
            "random_centroid_px": rand[0], "random_scale_rel": rand[1], "random_angle_deg": rand[2],
            "object_found": len(found) / len(truths), "count": len(truths)}
