"""Domain classifier for translation accuracy (DeepI2I's RC metric), without pretrained weights.

A small CNN learns to tell apart the real images of a set of domain folders
(``<domains_root>/<name>/train/*``, one class per domain); the share of translations it
recognises as the target domain measures whether a translation reached its domain. DeepI2I
uses a ResNet-50; for the built-in synthetic domains a four-layer CNN trained in seconds on
CPU is enough. Its FC metric is the same classifier trained on generated images (the same
folder layout) and evaluated on real ones. The paper's classifier (ResNet-50 + linear) for RC and FC on
any labelled data is :mod:`gpunit.metrics.class_accuracy`.

The same network in the ``"silhouette"`` view sees only the object's mask (the saturated pixels: every
synthetic class paints its object in saturated colours over a muted background), resampled into the mask's
own moment frame (centroid in the middle, covariance the identity: the position, size and stretch of the
pose are gone, as the synthetic prior whitens every shape before posing it), and learns with random turns
and flips. So it tells classes by shape alone (held-out real images: 0.99 on the built-in data) and scores
whether a generator draws each class's silhouette (:mod:`gpunit.metrics.prior`).

The trained network is cached beside the data with a fingerprint of the training files
(names, sizes, modification times) and settings, so a changed data set retrains.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
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
VIEWS = ("image", "silhouette")
OBJECT_SATURATION = 48  # max - min channel (of 255) above which a pixel is the object's (synthetic.object_mask)


WHITE_SIZE, WHITE_SPAN = 32, 3.0  # the moment frame: 32 x 32 samples over +-3 standard deviations


def silhouettes(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images in [-1, 1] -> (N, 1, H, W) masks in {0, 1} of their saturated (object) pixels."""
    saturation = (images.amax(1, keepdim=True) - images.amin(1, keepdim=True)) * 127.5
    return (saturation > OBJECT_SATURATION).float()


def whitened(masks: torch.Tensor, size: int = WHITE_SIZE, span: float = WHITE_SPAN) -> torch.Tensor:
    """(N, 1, H, W) masks resampled into their own moment frame (centroid at the centre, covariance the
    identity), (N, 1, size, size) over +-``span`` standard deviations, in [-1, 1]. An empty mask stays empty."""
    m = masks[:, 0]
    n, h, w = m.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=m.device) + 0.5, torch.arange(w, device=m.device) + 0.5,
                            indexing="ij")
    area = m.sum((1, 2)).clamp(min=1)
    cx, cy = (m * xs).sum((1, 2)) / area, (m * ys).sum((1, 2)) / area
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    cxx, cyy, cxy = ((m * a * b).sum((1, 2)) / area for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    cov = torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2)
    values, vectors = torch.linalg.eigh(cov + 1e-3 * torch.eye(2, device=m.device))
    root = vectors @ torch.diag_embed(values.sqrt()) @ vectors.transpose(1, 2)  # moment frame -> pixels
    u = torch.linspace(-span, span, size, device=m.device)
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    pixels = torch.stack([gx, gy], -1).reshape(-1, 2) @ root.transpose(1, 2) + torch.stack([cx, cy], -1)[:, None]
    grid = torch.stack([pixels[..., 0] / w * 2 - 1, pixels[..., 1] / h * 2 - 1], -1).view(n, size, size, 2)
    return F.grid_sample(masks, grid, align_corners=False) * 2 - 1


def _turned(x: torch.Tensor) -> torch.Tensor:
    """Each (1-channel) map turned by its own random angle about its centre."""
    angle = torch.rand(len(x), device=x.device) * 2 * math.pi
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False) - 1  # outside the frame is empty (-1)


class DomainClassifier(nn.Module):
    """Four stride-2 conv layers, global pooling and a linear layer over ``domain_names``; the ``view`` is what
    it sees of an image: all of it (``"image"``) or the object's mask (``"silhouette"``)."""

    def __init__(self, domain_names: list[str], image_size: int = 64, width: int = 16, view: str = "image"):
        super().__init__()
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got '{view}'")
        self.domain_names = list(domain_names)
        self.image_size = image_size
        self.view = view
        depth = 4 if view == "image" else 3  # the moment frame is 32 px
        channels = [3 if view == "image" else 1, width, 2 * width] + [4 * width] * (depth - 1)
        layers = []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], len(domain_names)))
        self.test_accuracy: float | None = None  # held-out accuracy on <domain>/test, when known

    def view_of(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees of images in [-1, 1]: the images, or their whitened silhouettes."""
        return whitened(silhouettes(x)) if self.view == "silhouette" else x

    def classify(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, image_size, image_size) in [-1, 1] -> (N, num_domains) logits."""
        return self.classify(self.view_of(x))

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


def domain_files(domains_root: Path, split: str, names: list[str] | None) -> dict[str, list[Path]]:
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


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
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
                            device: str | torch.device = "cpu", seed: int = 0, view: str = "image") -> DomainClassifier:
    """Train on uint8 (N, 3, S, S) images with integer labels; horizontal flips as augmentation."""
    # seeded without touching the caller's random state; with gradients even when called under no_grad (a
    # trainer's sample step)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        classifier = DomainClassifier(domain_names, image_size=images.shape[-1], view=view).to(device)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
        classifier.train()
        with torch.no_grad():
            inputs = torch.cat([classifier.view_of(to_unit_range(b).to(device)) for b in images.split(256)])
        for _ in range(epochs):
            for batch in torch.randperm(len(images)).split(batch_size):
                x = inputs[batch.to(device)]
                if view == "silhouette":  # a shape is the same class at any turn
                    x = _turned(x)
                flip = torch.rand(len(x), device=device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                loss = F.cross_entropy(classifier.classify(x), labels[batch].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return classifier.eval()


def labelled_images(files: dict[str, list[Path]], domain_names: list[str], size: int):
    images, labels = [], []
    for name, paths in files.items():
        loaded = _load_images(paths, size)
        images.append(loaded)
        labels.append(torch.full((len(loaded),), domain_names.index(name)))
    return torch.cat(images), torch.cat(labels)


def _held_out_accuracy(classifier: DomainClassifier, domains_root: Path) -> float | None:
    test_files = domain_files(domains_root, "test", classifier.domain_names)
    if not test_files:
        return None
    images, labels = labelled_images(test_files, classifier.domain_names, classifier.image_size)
    predictions = classifier.predict(to_unit_range(images))
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
    classifier = DomainClassifier(cache["domain_names"], image_size=cache["image_size"],
                                  view=cache.get("view", "image"))
    classifier.load_state_dict(cache["state_dict"])
    classifier.test_accuracy = cache["test_accuracy"]
    return classifier.to(device).eval()


def load_or_train_domain_classifier(domains_root: str | os.PathLike, cache_path: str | os.PathLike | None = None,
                                    device: str | torch.device = "cpu", epochs: int = 6, image_size: int = 64,
                                    domain_names: list[str] | None = None, seed: int = 0,
                                    view: str = "image") -> DomainClassifier:
    """The classifier for ``<domains_root>/<name>/train`` (all domains, or ``domain_names``).

    Loaded from ``cache_path`` (default ``<domains_root>/classifier.pt``, ``silhouette_classifier.pt`` for that
    view) when it was trained on the same files with the same settings, else trained, evaluated on
    ``<name>/test`` and cached.
    """
    root = Path(domains_root)
    if not root.is_dir():
        raise FileNotFoundError(f"domains folder {root} not found; expected <root>/domains/<name>/train/*.png")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got '{view}'")
    cache_path = Path(cache_path) if cache_path else root / ("classifier.pt" if view == "image" else
                                                             "silhouette_classifier.pt")
    train_files = domain_files(root, "train", domain_names)
    if len(train_files) < 2:
        raise ValueError(f"need at least two domains with training images in {root}, found {list(train_files)}")
    names = list(train_files)
    settings = {"epochs": epochs, "image_size": image_size, "seed": seed}
    if view != "image":  # the image view's fingerprint stays what it was, so existing caches still load
        settings["view"] = view
    fingerprint = files_fingerprint(train_files, root, settings)

    cached = _load_cache(cache_path, fingerprint, device)
    if cached is not None:
        return cached

    start = time.perf_counter()
    images, labels = labelled_images(train_files, names, image_size)
    classifier = train_domain_classifier(images, labels, names, epochs=epochs, device=device, seed=seed, view=view)
    classifier.test_accuracy = _held_out_accuracy(classifier, root)
    log.info("trained %s classifier on %d images of %d domains in %.1fs; held-out accuracy %s", view, len(images),
             len(names), time.perf_counter() - start, classifier.test_accuracy)
    atomic_save({"state_dict": {k: v.cpu() for k, v in classifier.state_dict().items()},
                  "domain_names": names, "image_size": image_size, "fingerprint": fingerprint,
                  "test_accuracy": classifier.test_accuracy, "view": view}, cache_path)
    return classifier
