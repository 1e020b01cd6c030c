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
from pathlib import Path

import numpy as np

from gpunit.data import synthetic
from gpunit.data.datasets import ImageFolderDataset
from gpunit.evaluate import to_uint8_images
from gpunit.evaluate_deepi2i import translate_into_classes
from gpunit.metrics.content import content_consistency, content_rows, ground_truth
from gpunit.metrics.domain_classifier import load_or_train_domain_classifier
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


def score_synthetic_classes(translator, domains_root: str | Path, inputs_per_class: int = 4, num_outputs: int = 2,
                            seed: int = 0, batch_size: int = 16) -> dict:
    """Translate ``inputs_per_class`` held-out images of every class into every other class of the
    DeepI2I ``translator`` (``num_outputs`` noise vectors each) and score them; see the module doc."""
    root = Path(domains_root)
    names = [translator.class_label(c) for c in range(translator.num_classes)]
    unknown = [n for n in names if n not in synthetic.CLASS_NAMES]
    if unknown:
        raise ValueError(f"the translator's classes {unknown} are not synthetic classes; this scores translators "
                         f"trained on the built-in data ({', '.join(synthetic.CLASS_NAMES)})")
    classifier = load_or_train_domain_classifier(root, device=translator.device)
    rows = content_rows(root)
    paths = held_out_inputs(root, names, inputs_per_class)
    truths = [ground_truth(root, p, rows) for p in paths]

    inputs = ImageFolderDataset([str(Path(p).parent) for p in paths[:1]], translator.image_size)
    inputs.paths = [Path(p) for p in paths]  # exactly the held-out inputs chosen above, in their order
    truth_of = dict(zip(map(str, inputs.paths), truths))
    images, texture_hits = defaultdict(list), defaultdict(int)
    for batch, c, out in translate_into_classes(translator, inputs, range(len(names)), num_outputs, seed, batch_size,
                                                progress=False):
        name = names[c]
        owners = [truth_of[p] for p in batch["path"] for _ in range(num_outputs)]  # the input of each output row
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
    summary = {k: float(np.nanmean([s[k] for s in per_class.values()])) for k in SUMMARY_KEYS}
    return {**summary, "chance": 1 / len(names), "num_inputs": len(paths), "num_outputs": num_outputs,
            "classes": names, "per_class": per_class}


def format_synthetic_scores(scores: dict) -> str:
    """A short printed table of :func:`score_synthetic_classes` (means over the target classes)."""
    s = scores
    return "\n".join([
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
    ])
