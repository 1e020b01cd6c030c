"""Many-class evaluation of a DeepI2I translator (Wang et al., NeurIPS 2020, Sec. 4 "Evaluation metrics";
Suppl. A "Metric Computation").

Every test input is translated into every target class with ``num_outputs`` noise vectors. Then
- per target class, FID and KID of its translations against that class's real images (pytorch-fid's
  Inception), and their means over the classes, **mFID** and **mKID**;
- **RC**: a classifier (ResNet-50 + one linear layer) trained on real images of the classes; the share of
  translations it assigns to their target class;
- **FC**: the same kind of classifier trained on the translations; its accuracy on the real images, averaged
  over classes (:mod:`gpunit.metrics.class_accuracy`);
- LPIPS diversity among the outputs of one input and class.
Metrics whose pretrained weights are missing are skipped, and the results say which file enables them.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gpunit.data.datasets import ImageFolderDataset
from gpunit.deepi2i.translator import DeepI2ITranslator
from gpunit.engine.progress import progress_bar
from gpunit.metrics.class_accuracy import (
    ClassifierSettings,
    ResNetLinearClassifier,
    accuracy_per_class,
    load_or_train_real_classifier,
    scratch_note,
)
from gpunit.metrics.common import optional_metric
from gpunit.metrics.sensitivity import MIN_INPUT_SENSITIVITY, format_sensitivity, input_sensitivity
from gpunit.metrics.synthetic_classes import (
    check_synthetic_classes,
    format_synthetic_scores,
    held_out_inputs,
    score_synthetic_classes,
)

log = logging.getLogger("gpunit.evaluate")

MAX_CLASS_ROWS = 20  # rows of the printed per-class table; the JSON has every class
SENSITIVITY_INPUTS, SENSITIVITY_STYLES, SENSITIVITY_CLASSES = 16, 4, 4  # first inputs, shared noise, classes
PROTOCOL = ("DeepI2I Sec. 4: per-class FID/KID (pytorch-fid's Inception) and their means mFID/mKID, "
            "RC/FC with a ResNet-50 + linear classifier, LPIPS diversity")


def class_folders(translator: DeepI2ITranslator, folders: Sequence[str], target_classes: Sequence | None = None,
                  what: str = "--real") -> tuple[list[int], dict[int, Path]]:
    """The target classes (all of the translator's, or ``target_classes``: names or indices) and, for each, its
    folder among ``folders``: the one named as the class, or one inside it (``<root>/<class>/test``, the built-in
    data's layout). Folders of other classes are ignored."""
    labels = {translator.class_label(c) for c in range(translator.num_classes)}
    by_name = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what}: not a folder: {folder} (give one folder of images per class)")
        name = folder.parent.name if folder.name not in labels and folder.parent.name in labels else folder.name
        if name in by_name:
            raise ValueError(f"{what}: two folders for the class '{name}' ({by_name[name]}, {folder})")
        by_name[name] = folder
    classes = (list(range(translator.num_classes)) if target_classes is None
               else [translator.class_index(c) for c in target_classes])
    if len(set(classes)) != len(classes):
        raise ValueError("a target class is given twice")
    if len(classes) < 2:
        raise ValueError("many-class evaluation needs at least two target classes (RC and FC classify among them)")
    missing = [translator.class_label(c) for c in classes if translator.class_label(c) not in by_name]
    if missing:
        hint = ("; this checkpoint carries no class names: pass --class-names" if translator.class_names is None
                else "")
        raise ValueError(f"{what}: no folder for the classes {missing[:10]}{' ...' if len(missing) > 10 else ''}: "
                         "give one folder per class, named as the class or inside one "
                         f"(e.g. {what} data/animals/test/*){hint}")
    return classes, {c: by_name[translator.class_label(c)] for c in classes}


def translate_into_classes(translator: DeepI2ITranslator, contents: ImageFolderDataset, classes: Sequence[int],
                           num_outputs: int, seed: int, batch_size: int, progress: bool = True):
    """For each batch of inputs and each target class, yield (batch, class, outputs): ``num_outputs`` translations of
    each input, (n * num_outputs, 3, S, S), image-major. E and A run once per input. The noise is drawn per batch and
    class from ``seed``, so the results depend on the seed and the batch size only."""
    rng = torch.Generator().manual_seed(seed)
    for batch in progress_bar(DataLoader(contents, batch_size=batch_size), desc="evaluate", disable=not progress,
                              unit="batch"):
        features = {r: f.repeat_interleave(num_outputs, dim=0) for r, f in translator.features(batch["x"]).items()}
        n = len(batch["x"]) * num_outputs
        for c in classes:
            z = translator.sample_z(n, seed=int(torch.randint(0, 2**31 - 1, (), generator=rng)))
            yield batch, c, translator.generate(features, z, torch.full((n,), c, dtype=torch.long))


def score_on_synthetic_data(translator: DeepI2ITranslator, domains_root: str | Path, inputs_per_class: int = 4,
                            num_outputs: int = 2, seed: int = 0, batch_size: int = 16) -> dict:
    """Translate ``inputs_per_class`` held-out images of every class of the built-in data into every other
    class (``num_outputs`` noise vectors each) and score texture, shape and content
    (:func:`gpunit.metrics.synthetic_classes.score_synthetic_classes`)."""
    names = [translator.class_label(c) for c in range(translator.num_classes)]
    check_synthetic_classes(names)
    paths = held_out_inputs(domains_root, names, inputs_per_class)
    inputs = ImageFolderDataset([str(Path(p).parent) for p in paths[:1]], translator.image_size)
    inputs.paths = [Path(p) for p in paths]  # exactly the held-out inputs chosen above, in their order
    translations = ((batch["path"], names[c], out) for batch, c, out in
                    translate_into_classes(translator, inputs, range(len(names)), num_outputs, seed, batch_size,
                                           progress=False))
    scores = score_synthetic_classes(translations, domains_root, names, num_outputs, seed, translator.device)
    every = list(range(len(names)))
    spread = [every[i * len(every) // SENSITIVITY_CLASSES] for i in range(min(SENSITIVITY_CLASSES, len(every)))]
    x = torch.stack([inputs[i]["x"] for i in range(min(SENSITIVITY_INPUTS, len(inputs)))])
    return {**scores, **class_sensitivity(translator, x, spread, seed)}


def evaluate_deepi2i(translator: DeepI2ITranslator, content: Sequence[str], real: Sequence[str],
                     target_classes: Sequence | None = None, num_outputs: int = 10, seed: int = 0,
                     batch_size: int = 16, classifier_train: Sequence[str] | None = None,
                     classifier: ClassifierSettings | None = None, inception_weights: str | None = None,
                     lpips_weights: str | None = None, max_content: int = 0, resize: str = "stretch",
                     progress: bool = True) -> dict:
    """Translate the test inputs into every target class and score them; returns the results dict.

    ``real``: one folder of real images per class, named as the class or inside one (FID/KID's reference, FC's
    test images).
    ``classifier_train``: one folder per class of real images RC's classifier learns from (default: ``real``;
    with other folders its accuracy on ``real`` is reported as the ceiling RC can reach).
    """
    if num_outputs < 1:
        raise ValueError("num_outputs must be at least 1")
    settings = classifier or ClassifierSettings()
    classes, real_folders = class_folders(translator, real, target_classes)
    names = [translator.class_label(c) for c in classes]
    train_folders = class_folders(translator, classifier_train, classes, "--classifier-train")[1] \
        if classifier_train else real_folders
    device, size = translator.device, translator.image_size
    contents = ImageFolderDataset(content, size, resize=resize)
    if max_content:
        contents.paths = contents.paths[:max_content]
    if len(contents) * num_outputs < 2:
        raise ValueError("FID needs at least 2 translations per class: give more inputs or --num-outputs")

    skipped: dict[str, str] = {}
    from gpunit.metrics.fid import InceptionFeatures  # lazy: pytorch-fid and lpips are optional packages
    from gpunit.metrics.lpips_diversity import LPIPSDiversity
    inception = optional_metric("fid_kid", lambda: InceptionFeatures(inception_weights, device), skipped)
    lpips_net = (optional_metric("lpips_diversity", lambda: LPIPSDiversity(lpips_weights, device), skipped)
                 if num_outputs > 1 else None)
    real_classifier = load_or_train_real_classifier({n: train_folders[c] for n, c in zip(names, classes)}, size,
                                                    settings, device)
    fake_classifier = ResNetLinearClassifier(names, settings.image_size, real_classifier.weights_file).to(device)

    # one pass over the translations: features for FID/KID, LPIPS, RC's predictions, FC's training set
    fake_feats = {j: [] for j in range(len(classes))}
    rc_hits, lpips_sum, lpips_groups = np.zeros(len(classes)), 0.0, 0
    fc_inputs, fc_labels = [], []
    for _, c, outputs in translate_into_classes(translator, contents, classes, num_outputs, seed, batch_size,
                                                progress):
        j = classes.index(c)
        if inception is not None:
            fake_feats[j].append(inception(outputs).cpu().float().numpy())
        if lpips_net is not None:
            groups = len(outputs) // num_outputs
            lpips_sum += lpips_net(outputs.view(groups, num_outputs, *outputs.shape[1:])) * groups
            lpips_groups += groups
        rc_hits[j] += int((real_classifier.predict(outputs) == j).sum())
        fc_inputs.append(fake_classifier.training_inputs(outputs))
        fc_labels.append(torch.full((len(outputs),), j))
    fake_classifier.fit(torch.cat(fc_inputs), torch.cat(fc_labels), settings.epochs, settings.batch_size,
                        settings.lr, settings.seed)
    del fc_inputs

    # one pass over the real images of each class: Inception features, FC's test, RC classifier's held-out test
    real_feats, fc_predictions, rc_predictions, real_labels = {}, [], [], []
    for j, c in enumerate(classes):
        feats = []
        for batch in DataLoader(ImageFolderDataset([str(real_folders[c])], size), batch_size=batch_size):
            if inception is not None:
                feats.append(inception(batch["x"]).cpu().numpy())
            fc_predictions.append(fake_classifier.predict(batch["x"]))
            if classifier_train:
                rc_predictions.append(real_classifier.predict(batch["x"]))
            real_labels.append(torch.full((len(batch["x"]),), j))
        if feats:
            real_feats[j] = np.concatenate(feats)
    real_labels = torch.cat(real_labels)
    num_real = {n: int((real_labels == j).sum()) for j, n in enumerate(names)}
    fc_per_class = accuracy_per_class(torch.cat(fc_predictions), real_labels, len(classes))
    num_fake = len(contents) * num_outputs

    per_class = {n: {"rc": float(rc_hits[j] / num_fake), "fc": fc_per_class[j]} for j, n in enumerate(names)}
    results: dict = {
        "protocol": "deepi2i", "protocol_description": PROTOCOL,
        "classes": names, "num_classes": len(names), "num_inputs": len(contents), "num_outputs": num_outputs,
        "num_fake_per_class": num_fake, "num_real": num_real, "seed": seed, "resize": resize,
        "content": [str(Path(f).resolve()) for f in content],
        "real": {n: str(real_folders[c].resolve()) for n, c in zip(names, classes)},
        "weights": {"inception": str(inception.weights_file) if inception is not None else None,
                    "alexnet": str(lpips_net.weights_file) if lpips_net is not None else None,
                    "resnet50": str(real_classifier.weights_file) if real_classifier.frozen else None},
        "chance": 1 / len(names),
        "rc": float(np.mean([s["rc"] for s in per_class.values()])),
        "fc": float(np.mean([s["fc"] for s in per_class.values()])),
        "classifier": _classifier_info(real_classifier, settings, train_folders if classifier_train else None,
                                       names, classes),
    }
    if classifier_train:
        results["classifier"]["real_accuracy"] = float(np.mean(
            [a for a in accuracy_per_class(torch.cat(rc_predictions), real_labels, len(classes)) if a is not None]))
    if not real_classifier.frozen:
        results["note"] = scratch_note()
    if inception is not None:
        from gpunit.metrics.fid import per_class_scores  # lazy: pytorch-fid is optional
        scores = per_class_scores({n: np.concatenate(fake_feats[j]) for j, n in enumerate(names)},
                                  {n: real_feats[j] for j, n in enumerate(names)})
        results.update(mfid=scores["mFID"], mkid=scores["mKID"])
        for n in names:
            per_class[n].update(scores["per_class"][n])
    if lpips_net is not None:
        results["lpips_diversity"] = lpips_sum / lpips_groups
    results["per_class"] = per_class
    first = torch.stack([contents[i]["x"] for i in range(min(SENSITIVITY_INPUTS, len(contents)))])
    results.update(class_sensitivity(translator, first, classes, seed))
    results["skipped"] = skipped
    return results


def sensitivity_outputs(translator: DeepI2ITranslator, x: torch.Tensor, target: int, num_styles: int,
                        seed: int = 0) -> torch.Tensor:
    """(n, K, 3, S, S): every input translated into class ``target`` with the same ``num_styles`` noise vectors
    (for :func:`gpunit.metrics.sensitivity.input_sensitivity`)."""
    z = translator.sample_z(num_styles, seed)
    features = translator.features(x)
    classes = torch.full((len(x),), target, dtype=torch.long)
    return torch.stack([translator.generate(features, zk.expand(len(x), -1), classes) for zk in z], 1)


def class_sensitivity(translator: DeepI2ITranslator, x: torch.Tensor, classes: Sequence[int], seed: int = 0) -> dict:
    """Input and style sensitivity into each of up to :data:`SENSITIVITY_CLASSES` of ``classes``, averaged."""
    shown = list(classes)[:SENSITIVITY_CLASSES]
    if len(x) < 2:
        return {}
    figures = [input_sensitivity(x, sensitivity_outputs(translator, x, c, SENSITIVITY_STYLES, seed)) for c in shown]
    mean = {k: float(np.mean([f[k] for f in figures])) for k in ("input_sensitivity", "style_sensitivity",
                                                                   "input_difference")}
    return {**mean, "inputs": len(x), "styles": SENSITIVITY_STYLES, "sensitivity_classes": len(shown),
            "ignores_input": mean["input_sensitivity"] < MIN_INPUT_SENSITIVITY}


def _classifier_info(classifier: ResNetLinearClassifier, settings: ClassifierSettings, train_folders: dict | None,
                     names: list[str], classes: list[int]) -> dict:
    info = {"network": "ResNet-50 + one linear layer",
            "training": ("linear layer on frozen ImageNet features" if classifier.frozen
                         else "whole network from scratch (no ImageNet weights found)"),
            "weights": str(classifier.weights_file) if classifier.frozen else None,
            "image_size": settings.image_size, "epochs": settings.epochs,
            "num_real_train": classifier.num_train_images,
            "cache": str(classifier.cache_path) if classifier.cache_path else None}
    if train_folders is not None:
        info["real_train"] = {n: str(train_folders[c].resolve()) for n, c in zip(names, classes)}
    return info


def format_deepi2i_report(results: dict) -> str:
    """The printed table: protocol, classes, image counts, weights, the means, then one row per class."""
    names = results["classes"]
    shown = ", ".join(names[:12]) + (f" ... ({len(names)} classes)" if len(names) > 12 else "")
    clf = results["classifier"]
    real_counts = list(results["num_real"].values())
    lines = [f"protocol: deepi2i ({results['protocol_description']})",
             f"classes: {shown}",
             f"{results['num_inputs']} inputs x {len(names)} classes x {results['num_outputs']} outputs "
             f"({results['num_fake_per_class']} translations per class)",
             f"real images per class: {min(real_counts)}-{max(real_counts)} ({sum(real_counts)} in all)",
             f"classifier: {clf['network']}, {clf['training']}, {clf['image_size']} px, {clf['epochs']} epochs, "
             f"{clf['num_real_train']} real training images"]
    lines += [f"weights {name}: {path}" for name, path in results["weights"].items() if path]
    if "note" in results:
        lines.append(f"NOTE: {results['note']}")
    figures = [("mFID", "mfid", ".4g"), ("mKID", "mkid", ".4g"), ("RC", "rc", ".3f"), ("FC", "fc", ".3f"),
               ("Diversity (LPIPS)", "lpips_diversity", ".4g"), ("chance (RC, FC)", "chance", ".3f")]
    lines += [f"  {label:<22} {results[key]:{fmt}}" for label, key, fmt in figures if key in results]
    if "real_accuracy" in clf:
        lines.append(f"  {'RC classifier on real':<22} {clf['real_accuracy']:.3f}  (held-out real images)")
    lines.append(f"  {'class':<22} {'FID':>9} {'KID':>9} {'RC':>6} {'FC':>6}")
    for name, s in list(results["per_class"].items())[:MAX_CLASS_ROWS]:
        fid = f"{s['fid']:9.4g}" if "fid" in s else f"{'-':>9}"
        kid = f"{s['kid']:9.4g}" if "kid" in s else f"{'-':>9}"
        lines.append(f"  {name[:22]:<22} {fid} {kid} {s['rc']:6.3f} {s['fc']:6.3f}")
    if len(names) > MAX_CLASS_ROWS:
        lines.append(f"  ... {len(names) - MAX_CLASS_ROWS} more classes in the JSON (per_class)")
    if "input_sensitivity" in results:
        lines.append("  " + format_sensitivity(results))
    for metric, why in results.get("skipped", {}).items():
        lines.append(f"  {metric}: skipped ({why})")
    if "synthetic" in results:  # --synthetic-root: texture, shape and content against the known latents
        lines += ["built-in synthetic data:", format_synthetic_scores(results["synthetic"])]
    return "\n".join(lines)
