"""Domain classifier for translation accuracy (DeepI2I's RC metric), without pretrained weights.

A small CNN learns to tell apart the real images of a set of domain folders
(``<domains_root>/<name>/train/*``, one class per domain); the share of translations it
recognises as the target domain measures whether a translation reached its domain. DeepI2I
uses a ResNet-50; for the built-in synthetic domains a four-layer CNN trained in seconds on
CPU is enough. Its FC metric is the same classifier trained on generated images (the same
folder layout) and evaluated on real ones. The paper's classifier (ResNet-50 + linear) for RC and FC on
any labelled data is :mod:`gpunit.metrics.class_accuracy`.

The trained network is cached beside the data with a fingerprint of the training files
(names, sizes, modification times) and settings, so a changed data set retrains.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor, resize

from gpunit.data.images import UnreadableImageError, load_rgb, scan_images
from gpunit.engine.checkpoints import atomic_save

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the network or training changes, so old caches retrain


class DomainClassifier(nn.Module):
    """Four stride-2 conv layers, global pooling and a linear layer over ``domain_names``."""

    def __init__(self, domain_names: list[str], image_size: int = 64, width: int = 16):
        super().__init__()
        self.domain_names = list(domain_names)
        self.image_size = image_size
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], len(domain_names)))
        self.test_accuracy: float | None = None  # held-out accuracy on <domain>/test, when known

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, image_size, image_size) in [-1, 1] -> (N, num_domains) logits."""
        return self.head(self.features(x))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of any size -> float tensor on the classifier's device at image_size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = images.to(next(self.parameters()).device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return x

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> list[str]:
        """The most likely domain name of each image in [-1, 1]."""
        self.eval()
        indices = torch.cat([self(self.prepare(batch)).argmax(1).cpu() for batch in images.split(batch_size)])
        return [self.domain_names[i] for i in indices.tolist()]


def domain_accuracy(classifier: DomainClassifier, images: torch.Tensor, target_name: str) -> float:
    """Share of ``images`` (in [-1, 1]) the classifier recognises as domain ``target_name``."""
    if target_name not in classifier.domain_names:
        raise ValueError(f"unknown domain '{target_name}'; the classifier knows {classifier.domain_names}")
    if len(images) == 0:
        raise ValueError("no images given to measure domain accuracy on")
    predictions = classifier.predict(images)
    return sum(p == target_name for p in predictions) / len(predictions)


# ----------------------------------------------------------------------------- data


def _domain_files(domains_root: Path, split: str, names: list[str] | None) -> dict[str, list[Path]]:
    """``{domain: image files in <domains_root>/<domain>/<split>}``, skipping (with a log) empty domains."""
    available = sorted(p.name for p in domains_root.iterdir() if (p / "train").is_dir())
    if names is None:
        names = available
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise FileNotFoundError(f"no <domain>/train folder in {domains_root} for domains {unknown}; "
                                f"available domains: {available}")
    files = {}
    for name in names:
        folder = domains_root / name / split
        if not folder.is_dir():
            continue
        try:
            files[name] = scan_images(folder, recursive=False)
        except ValueError:  # no images in it
            if split == "train":
                log.warning("domain '%s' has no images in %s; skipping it", name, folder)
    return files


def _load_images(files: list[Path], size: int) -> torch.Tensor:
    """Decode image files to RGB uint8 (N, 3, size, size); unreadable files are skipped with a log."""
    images = []
    for path in files:
        try:
            images.append(resize(pil_to_tensor(load_rgb(path)), [size, size], antialias=True))
        except UnreadableImageError as err:
            log.warning("skipping: %s", err)
    if not images:
        raise ValueError(f"none of the {len(files)} images could be read (first: {files[0]})")
    return torch.stack(images)


def _to_unit_range(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def files_fingerprint(files: dict[str, list[Path]], root: Path, settings: dict, version: int = CACHE_VERSION) -> str:
    """A hash of each class's files (paths under ``root``, sizes, modification times) and the settings: a cache
    key that changes when the data or the training does."""
    entries = [(name, str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
               for name, paths in files.items() for p in paths]
    payload = json.dumps({"files": entries, "settings": settings, "version": version})
    return hashlib.sha256(payload.encode()).hexdigest()


# ----------------------------------------------------------------------------- training


def train_domain_classifier(images: torch.Tensor, labels: torch.Tensor, domain_names: list[str],
                            epochs: int = 6, batch_size: int = 64, lr: float = 2e-3,
                            device: str | torch.device = "cpu", seed: int = 0) -> DomainClassifier:
    """Train on uint8 (N, 3, S, S) images with integer labels; horizontal flips as augmentation."""
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        classifier = DomainClassifier(domain_names, image_size=images.shape[-1]).to(device)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
        classifier.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(images)).split(batch_size):
                x = _to_unit_range(images[batch]).to(device)
                flip = torch.rand(len(x), device=device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                loss = F.cross_entropy(classifier(x), labels[batch].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return classifier.eval()


def _labelled_images(files: dict[str, list[Path]], domain_names: list[str], size: int):
    images, labels = [], []
    for name, paths in files.items():
        loaded = _load_images(paths, size)
        images.append(loaded)
        labels.append(torch.full((len(loaded),), domain_names.index(name)))
    return torch.cat(images), torch.cat(labels)


def _held_out_accuracy(classifier: DomainClassifier, domains_root: Path) -> float | None:
    test_files = _domain_files(domains_root, "test", classifier.domain_names)
    if not test_files:
        return None
    images, labels = _labelled_images(test_files, classifier.domain_names, classifier.image_size)
    predictions = classifier.predict(_to_unit_range(images))
    return sum(classifier.domain_names[l] == p for l, p in zip(labels.tolist(), predictions)) / len(predictions)


def load_fingerprinted_cache(cache_path: Path, fingerprint: str, what: str) -> dict | None:
    """A classifier cache file's contents when it was written for ``fingerprint``; None (and a log line saying
    why ``what`` retrains) when it is missing, unreadable or stale."""
    if not cache_path.is_file():
        return None
    try:
        cache = torch.load(cache_path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        log.warning("%s cache %s is unreadable (%s); retraining", what, cache_path, err)
        return None
    if not isinstance(cache, dict) or cache.get("fingerprint") != fingerprint:
        log.info("%s: images or settings changed since %s was written; retraining", what, cache_path)
        return None
    return cache


def _load_cache(cache_path: Path, fingerprint: str, device) -> DomainClassifier | None:
    cache = load_fingerprinted_cache(cache_path, fingerprint, "domain classifier")
    if cache is None:
        return None
    classifier = DomainClassifier(cache["domain_names"], image_size=cache["image_size"])
    classifier.load_state_dict(cache["state_dict"])
    classifier.test_accuracy = cache["test_accuracy"]
    return classifier.to(device).eval()


def load_or_train_domain_classifier(domains_root: str | os.PathLike, cache_path: str | os.PathLike | None = None,
                                    device: str | torch.device = "cpu", epochs: int = 6, image_size: int = 64,
                                    domain_names: list[str] | None = None, seed: int = 0) -> DomainClassifier:
    """The classifier for ``<domains_root>/<name>/train`` (all domains, or ``domain_names``).

    Loaded from ``cache_path`` (default ``<domains_root>/classifier.pt``) when it was trained on
    the same files with the same settings, else trained, evaluated on ``<name>/test`` and cached.
    """
    root = Path(domains_root)
    if not root.is_dir():
        raise FileNotFoundError(f"domains folder {root} not found; expected <root>/domains/<name>/train/*.png")
    cache_path = Path(cache_path) if cache_path else root / "classifier.pt"
    train_files = _domain_files(root, "train", domain_names)
    if len(train_files) < 2:
        raise ValueError(f"need at least two domains with training images in {root}, found {list(train_files)}")
    names = list(train_files)
    settings = {"epochs": epochs, "image_size": image_size, "seed": seed}
    fingerprint = files_fingerprint(train_files, root, settings)

    cached = _load_cache(cache_path, fingerprint, device)
    if cached is not None:
        return cached

    start = time.perf_counter()
    images, labels = _labelled_images(train_files, names, image_size)
    classifier = train_domain_classifier(images, labels, names, epochs=epochs, device=device, seed=seed)
    classifier.test_accuracy = _held_out_accuracy(classifier, root)
    log.info("trained domain classifier on %d images of %d domains in %.1fs; held-out accuracy %s",
             len(images), len(names), time.perf_counter() - start, classifier.test_accuracy)
    atomic_save({"state_dict": {k: v.cpu() for k, v in classifier.state_dict().items()},
                  "domain_names": names, "image_size": image_size, "fingerprint": fingerprint,
                  "test_accuracy": classifier.test_accuracy}, cache_path)
    return classifier
