"""Evaluation as in the paper (Sec. 5.1), plus objective content checks on the synthetic data.

For every test (content) image, ``num_outputs`` translations from sampled styles (latent-guided) or
from random reference images of the target domain (exemplar-guided); then
- FID and KID against the target domain's real images (pytorch-fid's Inception, 2048-d pool),
  and per-class mFID / mKID when the reference images come from several class folders (a DeepI2I
  translator has its own many-class protocol: :mod:`gpunit.deepi2i.evaluate`);
- diversity: mean pairwise LPIPS among the outputs of each input;
- on the built-in synthetic data: content consistency (object centroid/scale/angle vs. the content
  image's, against a random pairing), domain accuracy (share of translations a classifier
  trained on the synthetic domains recognises as the target domain: it judges texture and palette)
  and shape (the object's silhouette against every class's at the content's pose:
  :mod:`gpunit.metrics.shape`).
Metrics whose pretrained weights are missing are skipped, and the report says which file enables them.
This is the "standard" protocol; the FIDs of the paper's Table 1 come from another one (StarGAN v2's code):
:mod:`gpunit.gp_unit.evaluate_paper`.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gpunit.data.datasets import ImageFolderDataset
from gpunit.engine.progress import progress_bar
from gpunit.gp_unit.translator import Translator
from gpunit.metrics.common import optional_metric, to_uint8_images
from gpunit.metrics.content import content_consistency, content_rows, ground_truth
from gpunit.metrics.domain_classifier import load_or_train_domain_classifier
from gpunit.metrics.kid import kernel_inception_distance
from gpunit.metrics.sensitivity import format_sensitivity, input_sensitivity
from gpunit.metrics.shape import shape_consistency

log = logging.getLogger("gpunit.evaluate")

SENSITIVITY_INPUTS, SENSITIVITY_STYLES = 16, 4  # the first test images, with styles shared by all


def evaluate(translator: Translator, content: list[str], real: list[str], mode: str = "latent",
             reference: list[str] | None = None, num_outputs: int = 10, seed: int = 0, batch_size: int = 16,
             inception_weights: str | None = None, lpips_weights: str | None = None,
             synthetic_root: str | None = None, target_domain: str | None = None,
             max_content: int = 0, progress: bool = True, resize: str = "stretch") -> dict:
    """Translate the content test images and score the translations; returns a flat results dict.

    ``resize``: how content and reference images become model inputs (a policy of
    :func:`gpunit.data.images.model_input`; "published" is the authors' inference resize).
    """
    mode = "exemplar" if mode == "reference" else mode  # "reference": gpunit 0.1's name
    if mode not in ("latent", "exemplar"):
        raise ValueError(f"mode must be 'latent' or 'exemplar', got '{mode}'")
    if num_outputs < 1:
        raise ValueError("num_outputs must be at least 1")
    device, size = translator.device, translator.image_size
    skipped: dict[str, str] = {}
    from gpunit.metrics.fid import InceptionFeatures  # lazy: pytorch-fid and lpips are optional packages
    from gpunit.metrics.lpips_diversity import LPIPSDiversity
    inception = optional_metric("fid_kid", lambda: InceptionFeatures(inception_weights, device), skipped)
    lpips_net = (optional_metric("lpips_diversity", lambda: LPIPSDiversity(lpips_weights, device), skipped)
                 if num_outputs > 1 else None)

    contents = ImageFolderDataset(content, size, resize=resize)
    if max_content:
        contents.paths = contents.paths[:max_content]
    refs = ImageFolderDataset(reference or real, size, resize=resize) if mode == "exemplar" else None
    if mode == "exemplar":
        ref_folders = [str(Path(f).resolve()) for f in (reference or real)]
        ref_class = [next((i for i, f in enumerate(ref_folders) if str(Path(p).resolve()).startswith(f)), 0)
                     for p in refs.paths]

    synthetic = _synthetic_setup(synthetic_root, target_domain, real, device) if synthetic_root else None
    fake_feats, fake_by_class = [], defaultdict(list)
    lpips_sum, lpips_count, domain_hits, content_images, content_rows = 0.0, 0, 0, [], []
    translations = translate_test_set(translator, contents, refs, num_outputs, seed, batch_size, progress)
    for batch, outputs, picks in translations:
        n = len(batch["x"])
        classes = [None] * (n * num_outputs) if picks is None else [ref_class[int(i)] for i in picks]
        if inception is not None:
            feats = inception(outputs).cpu().double().numpy()
            fake_feats.append(feats)
            for f, c in zip(feats, classes):
                if c is not None:
                    fake_by_class[c].append(f)
        if lpips_net is not None:
            lpips_sum += lpips_net(outputs.view(n, num_outputs, *outputs.shape[1:])) * n
            lpips_count += n
        if synthetic is not None:
            domain_hits += sum(p == synthetic["target"] for p in synthetic["classifier"].predict(outputs))
            first = outputs.view(n, num_outputs, *outputs.shape[1:])[:, 0]  # one translation per input
            content_images.extend(to_uint8_images(first))
            content_rows.extend(synthetic["truth"](p) for p in batch["path"])

    results: dict = {"protocol": "standard", "mode": mode, "resize": resize, "num_inputs": len(contents),
                     "num_outputs": num_outputs, "real": [str(Path(f).resolve()) for f in real],
                     "weights": _weights_used(inception, lpips_net)}
    if inception is not None:
        results.update(_distribution_scores(inception, np.concatenate(fake_feats), real, fake_by_class,
                                            mode, reference, size, batch_size, progress))
    if lpips_net is not None:
        results["lpips_diversity"] = lpips_sum / lpips_count
    if synthetic is not None:
        results["domain_accuracy"] = domain_hits / (len(contents) * num_outputs)
        results["domain_classifier_test_accuracy"] = synthetic["classifier"].test_accuracy
        results.update({f"content_{k}": v for k, v in content_consistency(content_images, content_rows, seed).items()})
        results.update(shape_consistency(content_images, content_rows, synthetic["target"], seed))
    if translator.sampler is not None and len(contents) >= 2:
        first = torch.stack([contents[i]["x"] for i in range(min(SENSITIVITY_INPUTS, len(contents)))])
        results.update(input_sensitivity(first, sensitivity_outputs(translator, first, SENSITIVITY_STYLES, seed)))
    results["skipped"] = skipped
    return results


def sensitivity_outputs(translator: Translator, x: torch.Tensor, num_styles: int, seed: int = 0) -> torch.Tensor:
    """(n, K, 3, S, S): every input translated with the same ``num_styles`` sampled style codes (for
    :func:`gpunit.metrics.sensitivity.input_sensitivity`)."""
    codes = translator.sample_styles(num_styles, seed)
    features = translator.content_features(x)
    return torch.stack([translator.generate(features, code.expand(len(x), -1)) for code in codes], 1)


def translate_test_set(translator: Translator, contents: ImageFolderDataset, references: ImageFolderDataset | None,
                      num_outputs: int, seed: int, batch_size: int, progress: bool = True):
    """For each batch of content images, yield (batch, outputs, picks): ``num_outputs`` translations per image,
    content-major, from sampled styles (``references`` None) or from random reference images (``picks``: their
    indices). The draws depend on ``seed`` and the batch size only."""
    rng = torch.Generator().manual_seed(seed)
    loader = DataLoader(contents, batch_size=batch_size)
    for batch in progress_bar(loader, desc="evaluate", disable=not progress, unit="batch"):
        x = batch["x"].to(translator.device)
        if references is None:
            outputs = translator.translate(x, num_styles=num_outputs,
                                           seed=int(torch.randint(0, 2**31 - 1, (), generator=rng)))
            yield batch, outputs, None
        else:
            picks = torch.randint(0, len(references), (len(x) * num_outputs,), generator=rng)
            styles = torch.stack([references[int(i)]["x"] for i in picks]).to(translator.device)
            yield batch, translator.translate(x.repeat_interleave(num_outputs, 0), style=styles), picks


def _weights_used(inception, lpips_net) -> dict:
    """The weights files behind the figures (pytorch-fid's Inception, torchvision's AlexNet)."""
    used = {}
    if inception is not None:
        used["inception"] = str(inception.weights_file)
    if lpips_net is not None:
        used["alexnet"] = str(lpips_net.weights_file)
    return used


def _distribution_scores(inception, fake: np.ndarray, real: list[str], fake_by_class: dict, mode: str,
                         reference: list[str] | None, size: int, batch_size: int, progress: bool) -> dict:
    from gpunit.metrics.fid import fid_from_features, per_class_scores  # lazy: pytorch-fid is optional

    def features(folders):
        data = ImageFolderDataset(folders, size)
        return inception.features_of((b["x"] for b in DataLoader(data, batch_size=batch_size)),
                                     batch_size=batch_size, progress=progress)

    real_feats = features(real)
    kid, kid_std = kernel_inception_distance(fake, real_feats)
    out = {"fid": fid_from_features(fake, real_feats), "kid": kid, "kid_std": kid_std,
           "num_real": len(real_feats), "num_fake": len(fake)}
    folders = reference or real
    if mode == "exemplar" and len(folders) > 1 and fake_by_class:
        real_by_class = {str(i): features([f]) for i, f in enumerate(folders)}
        scores = per_class_scores({str(c): np.stack(v) for c, v in fake_by_class.items()}, real_by_class)
        out.update(mfid=scores["mFID"], mkid=scores["mKID"],
                   per_class={Path(folders[int(c)]).name: s for c, s in scores["per_class"].items()})
    return out


def _synthetic_setup(root: str, target_domain: str | None, real: list[str], device) -> dict:

    domains = Path(root) / "domains"
    if target_domain is None:  # data/synthetic/domains/<name>/{train,test}
        target_domain = Path(real[0]).resolve().parent.name
    classifier = load_or_train_domain_classifier(domains, device=device)
    if target_domain not in classifier.domain_names:
        raise ValueError(f"target domain '{target_domain}' is not one of the synthetic domains "
                         f"{classifier.domain_names}; pass --target-domain")
    rows = content_rows(domains)
    return {"classifier": classifier, "target": target_domain, "truth": lambda p: ground_truth(domains, p, rows)}


def format_report(results: dict) -> str:
    """A short printed table of the figures (and what was skipped)."""
    names = {"fid": "FID", "kid": "KID", "kid_std": "KID std", "mfid": "mFID", "mkid": "mKID",
             "lpips_diversity": "Diversity (LPIPS)", "domain_accuracy": "Domain accuracy",
             "content_centroid_px": "Centroid error (px)", "content_random_centroid_px": "  random pairing",
             "content_scale_rel": "Scale error (rel.)", "content_random_scale_rel": "  random pairing",
             "content_angle_deg": "Angle error (deg)", "content_random_angle_deg": "  random pairing",
             "content_object_found": "Object found",
             "shape_accuracy": "Shape accuracy", "random_shape_accuracy": "  random pairing",
             "source_shape_accuracy": "  source images", "silhouette_iou": "Silhouette IoU",
             "random_silhouette_iou": "  random pairing", "source_silhouette_iou": "  source images"}
    lines = ["protocol: standard (pytorch-fid's Inception; not comparable with the paper's Table 1: --protocol paper)"]
    if "real" in results:
        counts = f" ({results['num_real']} images)" if "num_real" in results else ""
        lines.append(f"real: {', '.join(results['real'])}{counts}")
    lines.append(f"{results.get('num_inputs')} inputs x {results.get('num_outputs')} outputs "
                 f"({results.get('mode')}-guided)")
    if results.get("weights"):
        lines.append("weights: " + ", ".join(results["weights"].values()))
    lines += [f"  {label:<22} {results[key]:.4g}" for key, label in names.items() if key in results]
    if "input_sensitivity" in results:
        lines.append("  " + format_sensitivity(results))
    for metric, why in results.get("skipped", {}).items():
        lines.append(f"  {metric}: skipped ({why})")
    return "\n".join(lines)
