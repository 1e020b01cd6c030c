"""A built-in procedural generative prior that stands in for BigGAN (paper Sec. 3.1-3.2, Appendix A.1).

GP-UNIT distils content from pairs that BigGAN renders from one latent code in two classes: the
latent fixes the content (pose, position, layout), the class fixes the appearance. This module
gives the same property without any download:

* the **latent** ``(seed, index)`` draws the object's centroid, size, in-plane rotation, a pose-like
  deformation (aspect ratio and skew) and the background (a two-tone gradient or a horizon);
* the **class** picks the shape family (ellipse, rectangle, triangle, star, cross, ring, crescent,
  heart) and its appearance (texture and palette), with a little per-image colour jitter.

Every canonical shape is *whitened* (zero mean, isotropic second moments) before the latent's pose
is applied, so one latent gives the same centroid, scale and principal-axis angle in every class:
:func:`object_stats` of the masks agree across classes up to anti-aliasing. The background depends
on the latent only, so a translation can be measured against it (:func:`measure_object`).

The object is rendered on a 4x supersampled grid and box-filtered down (anti-aliased; its instance
mask is the sub-pixel coverage); the background is smooth and evaluated analytically. :func:`make_dataset` writes the folder layout of
``scripts/generate_pairs.py`` (``pairs/<label>_<name>/<k>.png``, same ``k`` = same latent) plus
masks, held-out pairs, unpaired images and Stage II domain folders, each with a ``content.csv``.
"""
from __future__ import annotations

import colorsys
import csv
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from gpunit.engine.progress import progress_bar

log = logging.getLogger(__name__)

SUPERSAMPLE = 4          # sub-pixels per pixel side; coverage takes SUPERSAMPLE**2 + 1 levels
WHITE_STD = 0.5          # std of every whitened canonical shape along any axis (that of a unit disk)
DEFAULT_THRESHOLD = 24   # measure_object: max channel difference that counts as "object"
DEFAULT_MIN_SATURATION = 48  # measure_object: objects are saturated, backgrounds muted (max - min channel)
FORMAT_VERSION = 1       # bump when rendering changes, so an old folder is regenerated


# ------------------------------------------------------------------------------------ shapes
# Canonical shapes are inside-tests on coordinates (x, y) with y pointing *up*, roughly in [-1, 1].
def _ellipse(x, y):
    return x * x + y * y <= 1.0


def _rectangle(x, y):
    return np.maximum(np.abs(x), np.abs(y)) <= 1.0


def _regular_polygon(x, y, sides: int, tip_radius: float = 1.0):
    """Inside a regular polygon with a vertex pointing up."""
    phi = np.arctan2(x, y)  # angle from the +y axis
    sector = 2 * math.pi / sides
    folded = np.abs((phi + sector / 2) % sector - sector / 2)  # angle from the nearest vertex
    apothem = tip_radius * math.cos(sector / 2)
    return np.hypot(x, y) * np.cos(folded - sector / 2) <= apothem


def _triangle(x, y):
    return _regular_polygon(x, y, 3)


def _star(x, y, points: int = 5, inner: float = 0.45):
    """A star polygon: straight edges from each tip (radius 1) to the inner vertices (radius ``inner``)."""
    phi = np.arctan2(x, y)
    sector = 2 * math.pi / points
    folded = np.abs((phi + sector / 2) % sector - sector / 2)
    rho = np.hypot(x, y)
    px, py = rho * np.cos(folded), rho * np.sin(folded)  # tip at (1, 0), inner vertex at angle sector/2
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    # The origin lies on the inner side of the edge tip -> inner vertex; compare signs of the cross product.
    return (bx - 1.0) * py - by * (px - 1.0) >= 0.0


def _cross(x, y, half_width: float = 0.33):
    ax, ay = np.abs(x), np.abs(y)
    return ((ax <= half_width) & (ay <= 1.0)) | ((ay <= half_width) & (ax <= 1.0))


def _ring(x, y, inner: float = 0.55):
    r2 = x * x + y * y
    return (r2 <= 1.0) & (r2 >= inner * inner)


def _crescent(x, y):
    return (x * x + y * y <= 1.0) & ((x - 0.5) ** 2 + y * y >= 0.75 ** 2)


def _heart(x, y):
    x, y = x * 1.15, y * 1.15 + 0.1
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 <= 0.0


@dataclass(frozen=True)
class ObjectClass:
    """Shape family and appearance of one class. Hues in degrees; both palette colours are saturated."""
    name: str
    shape: Callable[[np.ndarray, np.ndarray], np.ndarray]  # inside-test (x, y up) -> bool array
    texture: str             # solid | stripes | dots | checker | gradient
    hues: tuple[float, float]
    symmetry: int = 1        # order of the shape's rotational symmetry; 0: every rotation (a disk)
    saturation: float = 0.9
    value: float = 0.92


CLASSES: list[ObjectClass] = [
    ObjectClass("ellipse", _ellipse, "solid", (0, 0), symmetry=0),
    ObjectClass("rectangle", _rectangle, "stripes", (220, 50), symmetry=4),
    ObjectClass("triangle", _triangle, "dots", (125, 30), symmetry=3),
    ObjectClass("star", _star, "checker", (35, 275), symmetry=5),
    ObjectClass("cross", _cross, "gradient", (185, 315), symmetry=4),
    ObjectClass("ring", _ring, "stripes", (330, 165), symmetry=0),
    ObjectClass("crescent", _crescent, "gradient", (52, 12)),
    ObjectClass("heart", _heart, "dots", (345, 60)),
]
CLASS_NAMES: list[str] = [c.name for c in CLASSES]


@dataclass(frozen=True)
class _Whitening:
    mean: np.ndarray      # (2,) centroid of the canonical shape (x right, y down)
    matrix: np.ndarray    # (2, 2) maps centred canonical coords to coords with std WHITE_STD
    radius: float         # largest distance of a whitened inside point from the origin


@lru_cache(maxsize=None)
def _whitening(class_id: int) -> _Whitening:
    """Moments of the canonical shape on a fine grid; cached, computed once per class and process."""
    t = np.linspace(-1.5, 1.5, 601)
    x, y = np.meshgrid(t, t)  # y here points down, like image rows
    inside = CLASSES[class_id].shape(x, -y)
    pts = np.stack([x[inside], y[inside]], axis=1)
    mean = pts.mean(axis=0)
    cov = np.cov(pts - mean, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    matrix = WHITE_STD * evecs @ np.diag(evals ** -0.5) @ evecs.T
    radius = float(np.linalg.norm((pts - mean) @ matrix.T, axis=1).max())
    return _Whitening(mean, matrix, radius)


@lru_cache(maxsize=1)
def _max_whitened_radius() -> float:
    """The largest whitened extent over all classes: the object placement keeps this inside the frame."""
    return max(_whitening(c).radius for c in range(len(CLASSES)))


# ------------------------------------------------------------------------------------ latent
@dataclass(frozen=True)
class Latent:
    """The content of one latent code, in fractions of the image side (so any size renders alike)."""
    cx: float
    cy: float
    radius: float            # object size: the whitened shape's unit, in fractions of the side
    angle: float             # in-plane rotation (radians)
    aspect: float            # < 1: elongated along the rotated x axis (area-preserving)
    skew: float              # shear of the pose
    background: str          # "gradient" | "horizon"
    colors: tuple            # two background RGB colours in [0, 1]
    direction: float         # gradient direction (radians)
    horizon: float           # horizon height (fraction of the side, from the top)
    tilt: float              # horizon slope


def _check_ids(seed: int, index: int) -> None:
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be >= 0 (got seed={seed}, index={index})")


def _muted_color(rng: np.random.Generator) -> tuple:
    """Low saturation, mid value: far from every saturated object palette, so objects stand out."""
    return colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.8))


def sample_latent(seed: int, index: int) -> Latent:
    """The latent code of ``(seed, index)``; independent of the class and the image size."""
    _check_ids(seed, index)
    rng = np.random.default_rng([int(seed), int(index)])
    radius = rng.uniform(0.14, 0.2)
    angle = rng.uniform(0, 2 * math.pi)
    aspect = rng.uniform(0.65, 0.95)
    skew = rng.uniform(-0.2, 0.2)
    # Keep the largest possible object (any class) inside the frame: margin = its half extent.
    pose = _pose_matrix(angle, aspect, skew)
    margin = min(0.5, radius * np.linalg.norm(pose, 2) * _max_whitened_radius() + 0.02)
    cx, cy = rng.uniform(margin, 1 - margin, size=2)
    return Latent(cx=float(cx), cy=float(cy), radius=float(radius), angle=float(angle), aspect=float(aspect),
                  skew=float(skew), background=str(rng.choice(["gradient", "horizon"])),
                  colors=(_muted_color(rng), _muted_color(rng)), direction=float(rng.uniform(0, 2 * math.pi)),
                  horizon=float(rng.uniform(0.35, 0.75)), tilt=float(rng.uniform(-0.3, 0.3)))


def _pose_matrix(angle: float, aspect: float, skew: float) -> np.ndarray:
    """Rotation @ shear @ area-preserving stretch: the latent's pose-like deformation."""
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    shear = np.array([[1.0, skew], [0.0, 1.0]])
    stretch = np.diag([aspect ** -0.5, aspect ** 0.5])
    return rotation @ shear @ stretch


# ------------------------------------------------------------------------------------ rendering
def _subpixel_centres(start: int, stop: int) -> np.ndarray:
    """Continuous coordinates (pixel p spans [p, p+1]) of the sub-pixels of pixels start..stop-1."""
    return (np.arange(start * SUPERSAMPLE, stop * SUPERSAMPLE) + 0.5) / SUPERSAMPLE


def _downsample(a: np.ndarray) -> np.ndarray:
    """Box filter SUPERSAMPLE x SUPERSAMPLE blocks: (H*S, W*S, ...) -> (H, W, ...)."""
    h, w = a.shape[0] // SUPERSAMPLE, a.shape[1] // SUPERSAMPLE
    return a.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE, *a.shape[2:]).mean(axis=(1, 3))


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _background(latent: Latent, size: int) -> np.ndarray:
    """(size, size, 3) float background in [0, 1]; depends on the latent only.

    Evaluated at pixel centres, which is exact for a linear gradient; the horizon edge uses the
    area of the pixel below the line (exact while the line crosses both vertical pixel sides).
    """
    t = (np.arange(size) + 0.5) / size  # pixel centres in fractions of the side
    x, y = t[None, :], t[:, None]
    c1, c2 = (np.asarray(c, dtype=np.float64) for c in latent.colors)
    if latent.background == "gradient":
        along = (x - 0.5) * math.cos(latent.direction) + (y - 0.5) * math.sin(latent.direction)
        w = np.clip(along + 0.5, 0.0, 1.0)[..., None]
        return (1 - w) * c1 + w * c2
    # Horizon: a sky that brightens towards the horizon above a flat ground.
    ground = np.clip(0.5 + (y - latent.horizon - latent.tilt * (x - 0.5)) * size, 0.0, 1.0)[..., None]
    sky = c1 * (0.8 + 0.2 * np.clip(y / latent.horizon, 0, 1))[..., None]
    return ground * c2 + (1 - ground) * sky


def render_background(seed: int, index: int, size: int) -> np.ndarray:
    """The background of latent ``(seed, index)`` alone: (size, size, 3) uint8, identical to the
    background pixels of every :func:`render` of that latent."""
    _check_size(size)
    return _to_uint8(_background(sample_latent(seed, index), size))


def _palette(class_id: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """The class's two colours with a small per-image jitter, and the rng for the texture's phase."""
    cls = CLASSES[class_id]
    rng = np.random.default_rng([int(seed), int(index), class_id, 1])
    hue_shift = rng.uniform(-0.03, 0.03)
    sat, val = rng.uniform(0.88, 1.0), rng.uniform(0.85, 1.0)
    colors = [np.array(colorsys.hsv_to_rgb((h / 360 + hue_shift) % 1, cls.saturation * sat, cls.value * val))
              for h in cls.hues]
    return colors[0], colors[1], rng


def _texture(class_id: int, u: np.ndarray, v: np.ndarray, seed: int, index: int) -> np.ndarray:
    """Object colour (..., 3) in canonical coordinates, so the pattern moves and turns with the object."""
    a, b, rng = _palette(class_id, seed, index)
    kind = CLASSES[class_id].texture
    freq = rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 1, size=2)
    if kind == "solid":  # soft shading, lit from the top left
        w = np.clip(0.5 + 0.25 * (u - v), 0, 1) * 0.3
        return a * (1 - w[..., None])
    if kind == "stripes":
        w = (np.sin(2 * math.pi * (2.5 * freq * (u + 0.5 * v) + phase[0])) > 0).astype(np.float64)
    elif kind == "dots":
        gu, gv = (3.5 * freq * u + phase[0]) % 1 - 0.5, (3.5 * freq * v + phase[1]) % 1 - 0.5
        w = (gu * gu + gv * gv < 0.3 ** 2).astype(np.float64)
    elif kind == "checker":
        w = ((np.floor(2.5 * freq * u + phase[0]) + np.floor(2.5 * freq * v + phase[1])) % 2).astype(np.float64)
    elif kind == "gradient":
        w = np.clip(0.5 + 0.5 * (u + v) / math.sqrt(2), 0, 1)
    else:
        raise ValueError(f"unknown texture '{kind}'")
    w = w[..., None]
    return (1 - w) * a + w * b


def _object_transform(latent: Latent, class_id: int, size: int, spin: float = 0.0
                      ) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre (2,) in pixels, inverse map pixel offsets -> whitened coords, and the extent in pixels.
    ``spin`` turns the whitened shape before the pose (radians): a disk looks the same at every spin."""
    pose = _pose_matrix(latent.angle, latent.aspect, latent.skew) * (latent.radius * size)
    if spin:
        pose = pose @ _pose_matrix(spin, 1.0, 0.0)
    centre = np.array([latent.cx, latent.cy]) * size
    extent = np.linalg.norm(pose, 2) * _whitening(class_id).radius
    return centre, np.linalg.inv(pose), float(extent)


def _check_size(size: int) -> None:
    if int(size) != size or size < 8:
        raise ValueError(f"size must be an integer >= 8 (got {size!r})")


def _check_class(class_id: int) -> None:
    if not (isinstance(class_id, (int, np.integer)) and 0 <= class_id < len(CLASSES)):
        raise ValueError(f"class_id must be an integer in 0..{len(CLASSES) - 1} ({', '.join(CLASS_NAMES)}); "
                         f"got {class_id!r}")


def render(seed: int, index: int, class_id: int, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render latent ``(seed, index)`` in class ``class_id``.

    Returns ``(image, mask, stats)``: image (size, size, 3) uint8, mask (size, size) float32 with the
    object's coverage of each pixel (4x4 sub-pixel samples, exactly what was composited) in [0, 1],
    and :func:`object_stats` of the mask.
    """
    _check_size(size)
    _check_class(class_id)
    latent = sample_latent(seed, index)
    image = _background(latent, size)
    mask = np.zeros((size, size))
    found = _object_box(latent, class_id, size)
    if found is not None:
        box, x, y = found
        inside = CLASSES[class_id].shape(x, -y).astype(np.float64)  # canonical y points up
        painted = _downsample(inside[..., None] * _texture(class_id, x, -y, seed, index))
        mask[box] = _downsample(inside)
        # Box-filtered "over" compositing; pixels the object misses keep the background exactly.
        image[box] = painted + (1 - mask[box][..., None]) * image[box]
    mask = mask.astype(np.float32)
    return _to_uint8(image), mask, object_stats(mask)


def _object_box(latent: Latent, class_id: int, size: int, spin: float = 0.0):
    """The object's bounding box (a pair of slices) and the canonical coordinates of its sub-pixels, or
    None when the box is empty: only the box needs the shape test and the texture."""
    centre, inverse, extent = _object_transform(latent, class_id, size, spin)
    x0, y0 = (max(0, int(math.floor(c - extent)) - 1) for c in centre)
    x1, y1 = (min(size, int(math.ceil(c + extent)) + 2) for c in centre)
    if x1 <= x0 or y1 <= y0:
        return None
    px, py = np.meshgrid(_subpixel_centres(x0, x1) - centre[0], _subpixel_centres(y0, y1) - centre[1])
    x, y = _to_canonical(px, py, inverse, _whitening(class_id))
    return (slice(y0, y1), slice(x0, x1)), x, y


def render_silhouette(seed: int, index: int, class_id: int, size: int, spin: float = 0.0) -> np.ndarray:
    """The coverage mask (size, size) float32 of :func:`render`, without painting; ``spin`` (radians)
    turns the shape inside the latent's pose, which the image of a symmetric shape cannot show."""
    _check_size(size)
    _check_class(class_id)
    mask = np.zeros((size, size), dtype=np.float32)
    found = _object_box(sample_latent(seed, index), class_id, size, spin)
    if found is not None:
        box, x, y = found
        mask[box] = _downsample(CLASSES[class_id].shape(x, -y).astype(np.float64))
    return mask


def _to_canonical(px: np.ndarray, py: np.ndarray, inverse: np.ndarray, white: _Whitening):
    """Pixel offsets from the centre -> canonical shape coordinates (y down): undo pose, then whitening."""
    wx, wy = inverse[0, 0] * px + inverse[0, 1] * py, inverse[1, 0] * px + inverse[1, 1] * py
    unwhiten = np.linalg.inv(white.matrix)
    return (unwhiten[0, 0] * wx + unwhiten[0, 1] * wy + white.mean[0],
            unwhiten[1, 0] * wx + unwhiten[1, 1] * wy + white.mean[1])


# ------------------------------------------------------------------------------------ measuring
def object_stats(mask: np.ndarray) -> dict:
    """Content statistics of a (soft) mask from its image moments, in pixels.

    Pixel ``(row, col)`` covers ``[col, col+1] x [row, row+1]``, so its centre is ``(col + 0.5, row + 0.5)``.
    Returns ``cx, cy`` (centroid), ``scale`` (root-mean-square distance from the centroid; unlike
    sqrt(area) it is the same for every class of one latent), ``angle`` (principal axis in degrees
    in [0, 180), from +x towards +y, i.e. clockwise on screen), ``area`` (sum of the mask) and
    ``elongation`` (ratio of the principal standard deviations, >= 1; the angle is meaningless near 1).
    An empty mask gives NaNs.
    """
    mask = np.asarray(mask, dtype=np.float64)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D array (H, W); got shape {mask.shape}")
    area = float(mask.sum())
    if not area > 1e-6:
        return {"cx": math.nan, "cy": math.nan, "scale": math.nan, "angle": math.nan, "area": 0.0,
                "elongation": math.nan}
    rows, cols = np.arange(mask.shape[0]) + 0.5, np.arange(mask.shape[1]) + 0.5
    row_mass, col_mass = mask.sum(axis=1), mask.sum(axis=0)
    cx, cy = float(col_mass @ cols / area), float(row_mass @ rows / area)
    dx, dy = cols - cx, rows - cy
    mu20 = float(col_mass @ (dx * dx)) / area
    mu02 = float(row_mass @ (dy * dy)) / area
    mu11 = float(dy @ mask @ dx) / area
    spread = math.hypot(mu20 - mu02, 2 * mu11)
    major, minor = (mu20 + mu02 + spread) / 2, max((mu20 + mu02 - spread) / 2, 1e-12)
    angle = math.degrees(0.5 * math.atan2(2 * mu11, mu20 - mu02)) % 180.0
    return {"cx": cx, "cy": cy, "scale": math.sqrt(mu20 + mu02), "angle": angle, "area": area,
            "elongation": math.sqrt(major / minor)}


def object_mask(image: np.ndarray, background: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                min_saturation: float = DEFAULT_MIN_SATURATION) -> np.ndarray:
    """The object's pixels in ``image`` given its known ``background`` (both (H, W, 3) uint8): (H, W) bool.

    Object pixels differ from the background by more than ``threshold`` (largest channel
    difference) and are saturated (max - min channel > ``min_saturation``): every class paints its
    object in saturated colours over a muted background, and a translation reproduces the
    background only approximately, so the difference alone would also pick up background drift.
    """
    image, background = np.asarray(image), np.asarray(background)
    if image.shape != background.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image and background must both be (H, W, 3) arrays of the same shape; got "
                         f"{image.shape} and {background.shape}")
    pixels = image.astype(np.int16)
    diff = np.abs(pixels - background.astype(np.int16)).max(axis=2)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    return (diff > threshold) & (saturation > min_saturation)


def measure_object(image: np.ndarray, background: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                   min_saturation: float = DEFAULT_MIN_SATURATION) -> dict:
    """:func:`object_stats` of :func:`object_mask`; NaNs when no pixel qualifies."""
    return object_stats(object_mask(image, background, threshold, min_saturation).astype(np.float64))


# ------------------------------------------------------------------------------------ data set
# Every split draws latents from its own index range, so no latent repeats across splits.
INDEX_STRIDE = 1_000_000  # latents per (split, class) block; counts must stay below it
SPLIT_BASE = {"pairs": 0, "pairs_test": 100, "unpaired": 200, "domains/train": 300, "domains/test": 400}


def latent_index(split: str, k: int, class_id: int = 0) -> int:
    """Index of the k-th latent of a split; paired splits share one latent across classes (class_id 0)."""
    return (SPLIT_BASE[split] + class_id) * INDEX_STRIDE + k


def _resolve_classes(classes) -> list[int]:
    if classes is None:
        return list(range(len(CLASSES)))
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    ids = []
    for c in classes:
        if isinstance(c, str) and c in CLASS_NAMES:
            ids.append(CLASS_NAMES.index(c))
        elif isinstance(c, (int, np.integer)) and 0 <= c < len(CLASSES):
            ids.append(int(c))
        else:
            raise ValueError(f"unknown class {c!r}; choose names or ids from {list(enumerate(CLASS_NAMES))}")
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"classes must be a non-empty list without repeats; got {classes!r}")
    return sorted(ids)


def _folder(class_id: int) -> str:
    return f"{class_id}_{CLASS_NAMES[class_id]}"


@dataclass(frozen=True)
class _Job:
    csv_root: str            # the folder group whose content.csv lists this image
    image: str               # path relative to the output folder
    mask: str | None         # None: no mask is written (domain folders)
    class_id: int
    index: int


def _jobs(classes: list[int], counts: dict) -> list[_Job]:
    jobs = []
    for split, root, n in (("pairs", "pairs", counts["pairs_per_class"]), ("pairs_test", "pairs_test", counts["pair_test"])):
        jobs += [_Job(root, f"{root}/{_folder(c)}/{k:05d}.png", f"{root}_mask/{_folder(c)}/{k:05d}.png", c,
                      latent_index(split, k)) for k in range(n) for c in classes]
    jobs += [_Job("unpaired", f"unpaired/{_folder(c)}/{k:05d}.png", f"unpaired_mask/{_folder(c)}/{k:05d}.png", c,
                  latent_index("unpaired", k, c)) for c in classes for k in range(counts["unpaired_per_class"])]
    for part, n in (("train", counts["domain_train"]), ("test", counts["domain_test"])):
        jobs += [_Job("domains", f"domains/{CLASS_NAMES[c]}/{part}/{k:05d}.png", None, c,
                      latent_index(f"domains/{part}", k, c)) for c in classes for k in range(n)]
    return jobs


def _render_job(args: tuple[str, int, int, _Job]) -> dict:
    """Worker: render one image, write it (and its mask), return its CSV row."""
    out, size, seed, job = args
    image, mask, stats = render(seed, job.index, job.class_id, size)
    _write_png(Path(out) / job.image, image)
    if job.mask is not None:
        _write_png(Path(out) / job.mask, _to_uint8(mask))
    return {"root": job.csv_root, "path": job.image, "class": CLASS_NAMES[job.class_id], "seed": seed,
            "index": job.index, **{k: round(stats[k], 4) for k in ("cx", "cy", "scale", "angle")}}


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)  # fast: these folders are rewritten often


CSV_COLUMNS = ["path", "class", "seed", "index", "cx", "cy", "scale", "angle"]
OWNED = ["pairs", "pairs_mask", "pairs_test", "pairs_test_mask", "unpaired", "unpaired_mask", "domains"]


def _is_complete(out: Path, params: dict, jobs: list[_Job]) -> bool:
    """The record matches and every CSV and image folder holds what it should (a cheap listing, no decoding)."""
    record = out / "synthetic.json"
    if not record.is_file():
        return False
    try:
        previous = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if not previous.get("complete") or previous.get("params") != params:
        return False
    expected: dict[Path, int] = {}
    for job in jobs:
        for rel in (job.image, job.mask):
            if rel is not None:
                folder = out / rel.rsplit("/", 1)[0]
                expected[folder] = expected.get(folder, 0) + 1
    roots = {job.csv_root for job in jobs}
    return (all((out / r / "content.csv").is_file() for r in roots)
            and all(folder.is_dir() and sum(1 for p in folder.iterdir() if p.suffix == ".png") == n
                    for folder, n in expected.items()))


def _clear_previous(out: Path) -> None:
    """Remove the folders of an earlier make_dataset run in ``out`` (only those, only if it was ours)."""
    ours = (out / "synthetic.json").is_file()
    present = [name for name in OWNED if (out / name).exists()]
    if present and not ours:
        raise FileExistsError(f"{out} already holds {present} but no synthetic.json, so they were not made by "
                              "make_dataset; choose an empty or new output folder (nothing was changed).")
    for name in present:
        shutil.rmtree(out / name)


def _write_record(out: Path, params: dict, complete: bool) -> None:
    tmp = out / ".synthetic.json.tmp"
    tmp.write_text(json.dumps({"params": params, "complete": complete, "class_names": CLASS_NAMES}, indent=2))
    os.replace(tmp, out / "synthetic.json")


def make_dataset(out_dir: str | os.PathLike, size: int = 64, classes=None, pairs_per_class: int = 300,
                 unpaired_per_class: int = 150, domain_train: int = 300, domain_test: int = 50,
                 pair_test: int = 50, seed: int = 0, workers: int | None = None, progress: bool = True) -> dict:
    """Write the synthetic prior data set (layout in the module docstring and docs) into ``out_dir``.

    ``classes``: names or ids (default: all of :data:`CLASS_NAMES`). ``pairs_per_class`` latents are
    rendered in every class (``pairs/``), ``pair_test`` more for held-out pairs (``pairs_test/``);
    ``unpaired_per_class`` independent latents per class (``unpaired/``); ``domain_train`` and
    ``domain_test`` per class for Stage II (``domains/<name>/{train,test}``). ``workers``: processes
    (default: all CPUs; 0 or 1 renders in this process). A folder already complete with the same
    parameters is skipped; other parameters regenerate it.
    Returns ``{"out", "skipped", "images", "seconds", "classes", "counts"}``.
    """
    _check_size(size)
    _check_ids(seed, 0)
    class_ids = _resolve_classes(classes)
    counts = {"pairs_per_class": pairs_per_class, "pair_test": pair_test, "unpaired_per_class": unpaired_per_class,
              "domain_train": domain_train, "domain_test": domain_test}
    bad = {k: v for k, v in counts.items() if not (isinstance(v, (int, np.integer)) and 0 <= v < INDEX_STRIDE)}
    if bad:
        raise ValueError(f"counts must be integers in 0..{INDEX_STRIDE - 1}; got {bad}")
    counts = {k: int(v) for k, v in counts.items()}
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file; pass a folder path")
    params = {"version": FORMAT_VERSION, "size": int(size), "seed": int(seed), "counts": counts,
              "classes": [CLASS_NAMES[c] for c in class_ids]}
    jobs = _jobs(class_ids, counts)
    summary = {"out": str(out), "images": len(jobs), "classes": params["classes"], "counts": counts}
    start = time.perf_counter()
    if _is_complete(out, params, jobs):
        log.info("synthetic data in %s is complete for these parameters; skipping", out)
        return {**summary, "skipped": True, "seconds": time.perf_counter() - start}

    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    _write_record(out, params, complete=False)
    tasks = [(str(out), int(size), int(seed), job) for job in jobs]
    workers = (os.cpu_count() or 1) if workers is None else workers
    rows = []
    with progress_bar(total=len(tasks), desc="synthetic prior", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                rows.append(_render_job(task))
                bar.update(1)
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                for row in pool.imap_unordered(_render_job, tasks, chunksize=32):
                    rows.append(row)
                    bar.update(1)
    _write_csvs(out, rows)
    _write_record(out, params, complete=True)
    seconds = time.perf_counter() - start
    log.info("synthetic prior: %d images in %.1f s into %s", len(jobs), seconds, out)
    return {**summary, "skipped": False, "seconds": seconds}


def _write_csvs(out: Path, rows: list[dict]) -> None:
    by_root: dict[str, list[dict]] = {}
    for row in rows:
        by_root.setdefault(row["root"], []).append(row)
    for root, items in by_root.items():
        (out / root).mkdir(parents=True, exist_ok=True)
        with open(out / root / "content.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(sorted(items, key=lambda r: r["path"]))


def read_content_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``content.csv`` with numbers parsed: ``seed``/``index`` int, ``cx, cy, scale, angle`` float."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and set(CSV_COLUMNS) - set(rows[0]):
        raise ValueError(f"{path} lacks columns {sorted(set(CSV_COLUMNS) - set(rows[0]))}; is it a synthetic content.csv?")
    for row in rows:
        row["seed"], row["index"] = int(row["seed"]), int(row["index"])
        for key in ("cx", "cy", "scale", "angle"):
            row[key] = float(row[key])
    return rows
