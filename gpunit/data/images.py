"""Image folders and robust decoding: every file a user points us at becomes an 8-bit RGB image or a clear error.

Conversions (``load_rgb``):
- EXIF orientation is applied first, so phone photos are upright.
- Transparency (RGBA, LA, palette or grayscale with a transparent colour) is composited onto WHITE: transparent
  pixels often hold arbitrary colours, and white is how viewers show such images.
- 16-bit grayscale ("I;16*", "I") is scaled from 0..65535 to 0..255 (PIL's own convert would clip it to 255).
- CMYK, palette and other modes go through PIL's convert("RGB").

Tensors are (3, H, W) float in [-1, 1], as the networks expect. ``model_input`` makes one at the model's size
with a resize policy; "published" is GP-UNIT's inference.py preprocessing (a float resize, never rounded to 8 bits).
"""
from __future__ import annotations

import logging
import os
import re
import struct
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnF
import torchvision.transforms.functional as F1
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps

log = logging.getLogger("gpunit.data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"})
RESIZE_POLICIES = ("shortside_crop", "stretch", "pad", "published")

# What PIL raises on corrupt, truncated or hostile files (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImageError(ValueError):
    """A file that cannot be decoded as an image."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read image {path}: {reason}. Replace or delete the file.")


# ----------------------------------------------------------------------------- folders
def natural_key(text: str) -> tuple:
    """Sort key for human order: '2.png' < '10.png'; case-insensitive, ties broken by the exact text."""
    parts = [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]
    return parts, text


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def scan_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """All image files under ``root`` in natural order, hidden files and folders skipped."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"expected a folder of images, got a file: {root}")
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        found += [Path(folder, f) for f in files if not f.startswith(".") and is_image_file(f)]
    if not found:
        where = "in it or its subfolders" if recursive else "directly in it"
        raise ValueError(f"no images found in folder {root} (looked {where} for "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sorted(found, key=lambda p: natural_key(p.relative_to(root).as_posix()))


# ----------------------------------------------------------------------------- decoding
def _open(path: str | Path) -> Image.Image:
    """Decode fully (so truncation shows up here, not mid-training) and apply the EXIF orientation."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)  # always a detached copy
    except _DECODE_ERRORS as e:
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def _on_white(img: Image.Image) -> Image.Image:
    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see the module docstring for the choices)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_l(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _on_white(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Read an image file as upright 8-bit RGB; raises UnreadableImageError for corrupt files."""
    return to_rgb(_open(path))


def load_mask(path: str | Path) -> Image.Image:
    """Read an instance mask as mode "L" (0 = background, 255 = object).

    Colour masks give their first channel. A mask whose values are only 0 and 1 (a label image) is scaled to
    0/255, since read as 0..255 it would be black everywhere.
    """
    img = _open(path)
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_l(img)
    mask = img if img.mode == "L" else img.convert("L") if img.mode == "1" else img.convert("RGB").getchannel(0)
    if mask.getextrema()[1] == 1:
        mask = mask.point(lambda v: v * 255)
    return mask


def _check_decodes(path: Path) -> str | None:
    """None when the file decodes, else the reason. JPEGs decode at 1/8 scale: as thorough, much cheaper."""
    try:
        with Image.open(path) as img:
            img.draft(None, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except _DECODE_ERRORS as e:
        return f"{type(e).__name__}: {e}"
    return None


def filter_readable(paths: Iterable[str | Path], max_listed: int = 20) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into (decodable, unreadable), keeping the order; one warning lists the unreadable ones."""
    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        reasons = list(pool.map(_check_decodes, paths))
    good = [p for p, r in zip(paths, reasons) if r is None]
    bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    if bad:
        listed = "\n".join(f"  {p}: {r}" for p, r in bad[:max_listed])
        more = f"\n  ... and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
        log.warning("skipping %d unreadable image file(s) of %d (replace or delete them):\n%s%s",
                    len(bad), len(paths), listed, more)
    return good, [p for p, _ in bad]


# ----------------------------------------------------------------------------- tensors
def to_tensor(img: Image.Image | torch.Tensor) -> torch.Tensor:
    """PIL image -> (C, H, W) float in [-1, 1] (C = 3 for RGB, 1 for a mask).

    A float tensor is taken to be a model input already (from :func:`model_input`) and returned as is.
    """
    if isinstance(img, torch.Tensor):
        if not img.is_floating_point():
            raise TypeError(f"to_tensor takes a PIL image or a float image tensor in [-1, 1], got {img.dtype}")
        return img
    return F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True) * 2 - 1


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, H, W) tensor in [-1, 1] (a batch of one is fine) -> PIL image, rounded to 8 bits."""
    t = tensor.detach().cpu().float()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"to_pil expects a (3, H, W) or (1, H, W) tensor, got shape {tuple(tensor.shape)}")
    return F.to_pil_image(((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))


def save_image(tensor: torch.Tensor, path: str | Path) -> None:
    """Save a [-1, 1] image tensor; the format follows the file extension; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(tensor).save(path)


def write_png_atomic(image: Image.Image, path: str | Path) -> None:
    """Write a PNG under a hidden temporary name in the same folder, then rename it: an interrupted
    run never leaves a half-written file behind (and a resumed one never mistakes it for done)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600); open() keeps the user's umask, as a plain save would.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def resize_for_model(img: Image.Image, size: int, policy: str = "shortside_crop") -> Image.Image:
    """Make a size x size model input at inference time.

    "shortside_crop": resize the short side to ``size`` and centre-crop (keeps the aspect, loses the borders);
    "stretch": resize to size x size, as in training (keeps everything, distorts the aspect);
    "pad": fit the long side to ``size`` and centre it on black (keeps everything undistorted);
    "published": :func:`model_input`'s float resize rounded to 8 bits (for display; the model gets the floats).
    """
    if policy == "published":
        return to_pil(model_input(img, size, policy))
    if policy == "shortside_crop":
        return F.center_crop(F.resize(img, size, interpolation=F.InterpolationMode.BILINEAR), [size, size])
    if policy == "stretch":
        return F.resize(img, [size, size], interpolation=F.InterpolationMode.BILINEAR)
    if policy == "pad":
        scale = size / max(img.size)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        canvas = Image.new(img.mode, (size, size))
        canvas.paste(F.resize(img, [h, w], interpolation=F.InterpolationMode.BILINEAR),
                     ((size - w) // 2, (size - h) // 2))
        return canvas
    raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")


def model_input(img: Image.Image, size: int, policy: str = "shortside_crop") -> torch.Tensor:
    """A (3, size, size) model input in [-1, 1] from an RGB image (see :func:`resize_for_model`).

    "published" is what GP-UNIT's inference.py feeds its networks: ToTensor and Normalize(0.5, 0.5) on the
    whole image, then ``F.interpolate(size, mode="bilinear", align_corners=True)`` on the floats: stretched,
    no antialiasing, not rounded to 8 bits. The other policies resize the 8-bit image with PIL's
    (antialiased) bilinear filter.
    """
    if policy == "published":
        x = F1.normalize(F1.to_tensor(img), [0.5] * 3, [0.5] * 3)  # the published load_image, op for op
        return nnF.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=True)[0]
    return to_tensor(resize_for_model(img, size, policy))
