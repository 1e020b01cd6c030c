"""Many-class translation on the built-in synthetic data: every held-out input into every other class.

The synthetic prior knows each test image's latent, so three questions have exact answers for each
target class (DeepI2I's issue 15 section 4; the same figures the GP-UNIT demo reports for one pair):
- **texture** accuracy: the synthetic domain classifier (palette and texture) calls it the target class;
- **shape** accuracy and silhouette IoU (:mod:`gpunit.metrics.shape`): the object's silhouette is the
  target class's, at the pose its input shows;
- **content**: the object keeps its input's centroid, scale and angle (:mod:`gpunit.metrics.content`),
  each against a random pairing of translations with other inputs.
Figures are means over the target classes; ``per_class`` holds each class's.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from gpunit.data import synthetic
from gpunit.metrics.common import to_uint8_images
from gpunit.metrics.content import content_consistency, content_rows, ground_truth
from gpunit.metrics.domain_classifier import load_or_train_domain_classifier
from gpunit.metrics.sensitivity import format_sensitivity
from gpunit.metrics.shape import shape_consistency

# the figures averaged over target classes, with their baselines
SUMMARY_KEYS = ("texture_accuracy", "shape_accuracy", "silhouette_iou", "source_silhouette_iou",
                "random_silhouette_iou", "centroid_px", "random_centroid_px", "scale_rel", "random_scale_rel",
                "angle_deg", "random_angle_deg", "object_found")


def held_out_inputs(domains_root: str | Path, classes: list[str], per_class: int) -> list[str]:
    """The first ``per_class`` test images of each class (``<root>/<class>/test``), in a fixed order."""
    paths = []
    for name in classes:
        files = sorted((Path(domains_root) / name / "test").glob("*.png"))[:per_class]
        if not files:
            raise FileNotFoundError(f"no test images in {Path(domains_root) / name / 'test'}; "
                                    "run python scripts/make_synthetic.py first")
        paths += [str(f) for f in files]
    return paths


def check_synthetic_classes(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in synthetic.CLASS_NAMES]
    if unknown:
        raise ValueError(f"the translator's classes {unknown} are not synthetic classes; this scores translators "
                         f"trained on the built-in data ({', '.join(synthetic.CLASS_NAMES)})")


def score_synthetic_classes(translations: Iterable[tuple[Sequence[str], str, torch.Tensor]],
                            domains_root: str | Path, class_names: Sequence[str], num_outputs: int, seed: int = 0,
                            device: torch.device | str = "cpu") -> dict:
    """Score translations of held-out synthetic images; see the module doc.

    ``translations`` yields ``(input paths, target class name, outputs)``: ``num_outputs`` translations of
    each input into that class, ``(len(paths) * num_outputs, 3, S, S)`` in [-1, 1], input-major. Outputs
    into an input's own class are left out (a translation into another class is the question).
    ``class_names``: the classes the translator knows (chance is one in their number).
    """
    check_synthetic_classes(class_names)
    root = Path(domains_root)
    classifier = load_or_train_domain_classifier(root, device=device)
    rows = content_rows(root)
    truths: dict[str, dict] = {}
    images, texture_hits, inputs = defaultdict(list), defaultdict(int), set()
    for paths, name, out in translations:
        for p in paths:
            if p not in truths:
                truths[p] = ground_truth(root, p, rows)
        inputs.update(paths)
        owners = [truths[p] for p in paths for _ in range(num_outputs)]  # the input of each output row
        keep = [k for k, row in enumerate(owners) if row["class"] != name]  # into other classes only
        if keep:
            kept = out[keep]
            texture_hits[name] += sum(p == name for p in classifier.predict(kept))
            images[name] += [(img, owners[k]) for img, k in zip(to_uint8_images(kept), keep)]

    per_class = {}
    for name, pairs in images.items():
        imgs, rows_ = [p[0] for p in pairs], [p[1] for p in pairs]
        content = content_consistency(imgs, rows_, seed)
        per_class[name] = {"texture_accuracy": texture_hits[name] / len(pairs),
                           **shape_consistency(imgs, rows_, name, seed),
                           **{k: content[k] for k in ("centroid_px", "random_centroid_px", "scale_rel",
                                                      "random_scale_rel", "angle_deg", "random_angle_deg",
                                                      "object_found")},
                           "count": len(pairs)}
    if not per_class:
        raise ValueError("no translations into another class than their input's to score")
    summary = {k: float(np.nanmean([s[k] for s in per_class.values()])) for k in SUMMARY_KEYS}
    return {**summary, "chance": 1 / len(class_names), "num_inputs": len(inputs), "num_outputs": num_outputs,
            "classes": list(class_names), "per_class": per_class}


def format_synthetic_scores(scores: dict) -> str:
    """A short printed table of :func:`score_synthetic_classes` (means over the target classes)."""
    s = scores
    lines = [
        f"{s['num_inputs']} held-out inputs ({len(s['classes'])} classes) x {len(s['classes']) - 1} other classes "
        f"x {s['num_outputs']} noise vectors; means over target classes (chance {s['chance']:.3g})",
        f"  Texture accuracy       {s['texture_accuracy']:.4g}",
        f"  Shape accuracy         {s['shape_accuracy']:.4g}",
        f"  Silhouette IoU         {s['silhouette_iou']:.4g}      random pairing {s['random_silhouette_iou']:.4g}"
        f"    source images {s['source_silhouette_iou']:.4g}",
        f"  Centroid error (px)    {s['centroid_px']:.4g}      random pairing {s['random_centroid_px']:.4g}",
        f"  Scale error (rel.)     {s['scale_rel']:.4g}      random pairing {s['random_scale_rel']:.4g}",
        f"  Angle error (deg)      {s['angle_deg']:.4g}      random pairing {s['random_angle_deg']:.4g}",
        f"  Object found           {s['object_found']:.4g}",
    ]
    if "input_sensitivity" in s:
        lines.append("  " + format_sensitivity(s))
    return "\n".join(lines)
