"""Kernel Inception Distance (Binkowski et al., 2018), as DeepI2I reports it (mKID).

KID is the unbiased estimate of the squared MMD between two feature sets under the
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets; unlike FID it
has no bias from the sample size, so small test sets still compare fairly.
"""
from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all pairs of rows: (n, d), (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two equally sized samples; diagonal terms k(x_i, x_i) are left out."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID between two (N, D) feature sets: (mean, std) of MMD^2 over random subsets.

    ``subset_size`` is clipped to the smaller set; subsets are drawn without replacement.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need two feature sets of shape (N, D) with equal D, got {f1.shape} and {f2.shape}")
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    scores = [unbiased_mmd2(f1[rng.choice(len(f1), m, replace=False)],
                            f2[rng.choice(len(f2), m, replace=False)])
              for _ in range(num_subsets)]
    return float(np.mean(scores)), float(np.std(scores))
