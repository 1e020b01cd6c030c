"""Fréchet Inception Distance (paper Sec. 5.1, Table 1) and DeepI2I's per-class mFID/mKID.

Features are the 2048-d pool features of pytorch-fid's Inception network, the port of the
TensorFlow FID model, so scores are comparable with published numbers. Its weights file
cannot be downloaded here, so we build the network ourselves and load the file from disk.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from unittest import mock

import numpy as np
import torch
import torchvision
from pytorch_fid import inception as fid_inception
from torch import nn

from gpunit.engine.pretrained import find_weights, load_state_dict
from gpunit.engine.progress import progress_bar
from gpunit.metrics.kid import kernel_inception_distance

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048


def build_fid_inception() -> torchvision.models.Inception3:
    """The TF-FID Inception v3 with uninitialised weights (mirrors pytorch_fid.fid_inception_v3)."""
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                          init_weights=False)
    # The TF graph differs from torchvision's: average pools ignore padding, and the last
    # block max-pools. pytorch-fid's patched blocks reproduce that.
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    return net


def load_fid_inception(weights_path: str | os.PathLike | None = None) -> torchvision.models.Inception3:
    """The TF-FID Inception v3 with the pytorch-fid weights file found on disk."""
    path = find_weights(INCEPTION_WEIGHTS_FILE, fid_inception.FID_WEIGHTS_URL, path=weights_path,
                        what="Inception (FID/KID)", option="--inception-weights")
    net = build_fid_inception()
    try:
        net.load_state_dict(load_state_dict(path))
    except RuntimeError as err:
        raise ValueError(f"{path} is not the pytorch-fid Inception weights file "
                         f"{INCEPTION_WEIGHTS_FILE} (download it from {fid_inception.FID_WEIGHTS_URL}): "
                         f"{err}") from err
    return net


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] of any size -> (N, 2048) Inception pool features for FID and KID."""

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.weights_file = find_weights(INCEPTION_WEIGHTS_FILE, fid_inception.FID_WEIGHTS_URL, path=weights_path,
                                         what="Inception (FID/KID)", option="--inception-weights")
        net = load_fid_inception(self.weights_file)
        # InceptionV3 would download its weights; hand it our loaded network instead so the
        # block layout, the resize to 299 and the input scaling stay exactly pytorch-fid's.
        with mock.patch.object(fid_inception, "fid_inception_v3", return_value=net):
            self.inception = fid_inception.InceptionV3(
                [fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]],
                resize_input=True, normalize_input=True)
        self.device = torch.device(device)
        self.to(self.device).eval()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if images.numel() and images.abs().max() > 2:  # slight overshoot from a generator is fine
            raise ValueError("expected images in [-1, 1] (got values beyond +-2; 0..255 images?)")
        # pytorch-fid expects [0, 1] (what ToTensor gives for saved images); clamp like saving does.
        x = ((images.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)
        return self.inception(x)[0].flatten(1)  # (N, 2048)

    def features_of(self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 50,
                    progress: bool | None = None) -> np.ndarray:
        """Features of a (N, 3, H, W) tensor or an iterable of images/batches, as (N, 2048) float64.

        ``progress=None`` shows a bar when there are more than 10 batches (or the count is unknown).
        """
        # An iterable may hold single images or batches, so only a tensor's batch count is known.
        total = -(-len(images) // batch_size) if isinstance(images, torch.Tensor) else None
        show = progress if progress is not None else (total is None or total > 10)
        feats = [self(batch).cpu().double().numpy()
                 for batch in progress_bar(_batches(images, batch_size), total=total, disable=not show,
                                          desc="Inception features", unit="batch", leave=False)]
        if not feats:
            raise ValueError("no images were given to compute Inception features of")
        return np.concatenate(feats)


def _batches(images: torch.Tensor | Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """Regroup a tensor, or an iterable of (3, H, W) images or (B, 3, H, W) batches, into batches."""
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
        return
    pending = []
    for item in images:
        if isinstance(item, (tuple, list)):  # (image, label) from a dataset or loader
            item = item[0]
        if item.ndim == 3:
            pending.append(item)
            if len(pending) == batch_size:
                yield torch.stack(pending)
                pending = []
        else:
            yield from item.split(batch_size)
    if pending:
        yield torch.stack(pending)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)). The eigenvalues of S1 S2 are
    the squared singular values of sqrt(S2) sqrt(S1), so the trace of the root is that
    matrix's nuclear norm: symmetric square roots and an SVD in float64, no complex parts,
    and singular covariances (fewer samples than dimensions) are fine; round-off in a null
    space stays at float64 precision instead of its square root. ``eps`` is the relative
    tolerance for negative covariance eigenvalues, which only round-off may cause.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, "
                         f"sigma1 {sigma1.shape}, sigma2 {sigma2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("means and covariances must be finite (check the features for NaN/inf)")
    root_product = _psd_sqrt(sigma2, eps) @ _psd_sqrt(sigma1, eps)
    trace_sqrt_product = np.linalg.svd(root_product, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product)


def _psd_sqrt(matrix: np.ndarray, eps: float) -> np.ndarray:
    """Symmetric square root of a covariance; round-off negative eigenvalues become 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    scale = max(np.abs(values).max(initial=0.0), 1e-300)
    if values.min(initial=0.0) < -eps * scale:
        raise ValueError(f"covariance is not positive semi-definite (eigenvalue {values.min():.3g}, "
                         f"largest {scale:.3g}); pass covariances computed from features")
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two sets of (N, D) Inception features.

    With fewer features than dimensions (a class of a few hundred images against 2048-d features) the same
    distance comes from the features themselves: S_i = X_i^T X_i / (n_i - 1) for the centred X_i, and the
    eigenvalues of S1 S2 are the squared singular values of X2 X1^T / sqrt((n1 - 1)(n2 - 1)), an n2 x n1
    matrix, so no D x D root is needed (exact, and seconds faster per class).
    """
    mu1, sigma1 = feature_statistics(features1)
    mu2, sigma2 = feature_statistics(features2)
    n1, n2, d = len(features1), len(features2), mu1.shape[0]
    if max(n1, n2) >= d:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    x1 = np.asarray(features1, np.float64) - mu1
    x2 = np.asarray(features2, np.float64) - mu2
    trace_sqrt_product = np.linalg.svd(x2 @ x1.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product)


def per_class_scores(fake_feats_by_class: dict[str, np.ndarray], real_feats_by_class: dict[str, np.ndarray],
                     **kid_options) -> dict:
    """FID and KID per target class and their means, mFID and mKID (DeepI2I Sec. 4).

    Returns ``{"per_class": {name: {"fid", "kid", "kid_std"}}, "mFID": float, "mKID": float}``;
    ``kid_options`` go to :func:`kernel_inception_distance`.
    """
    if not fake_feats_by_class:
        raise ValueError("no classes of generated features given")
    missing = sorted(set(fake_feats_by_class) - set(real_feats_by_class))
    if missing:
        raise ValueError(f"no real features for classes {missing}; real classes are "
                         f"{sorted(real_feats_by_class)}")
    per_class = {}
    for name in sorted(fake_feats_by_class):
        fake, real = fake_feats_by_class[name], real_feats_by_class[name]
        kid, kid_std = kernel_inception_distance(fake, real, **kid_options)
        per_class[name] = {"fid": fid_from_features(fake, real), "kid": kid, "kid_std": kid_std}
    return {"per_class": per_class,
            "mFID": float(np.mean([s["fid"] for s in per_class.values()])),
            "mKID": float(np.mean([s["kid"] for s in per_class.values()]))}
