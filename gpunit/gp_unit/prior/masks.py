"""Instance masks for the Stage I shape losses (paper Sec. 3.1: the mask "extracted from x by HTC").

Three sources are supported:

(a) a user-provided mask folder, mirroring the image folder (same relative path and stem);
    :func:`check_mask_folder` lists the images that lack a mask;
(b) torchvision's Mask R-CNN (COCO) as a stand-in for HTC, when its weights file is on disk:
    :class:`MaskRCNNMasker` + :func:`write_masks`;
(c) exact masks of the built-in synthetic prior, written by its generator alongside the images.

Masks are 8-bit grayscale PNGs (0 = background, 255 = object).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torchvision.models.detection import (
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.transforms.v2.functional import pil_to_tensor

from gpunit.data.images import UnreadableImageError, is_image_file, load_rgb, scan_images
from gpunit.engine.pretrained import MissingWeightsError, find_weights, load_state_dict
from gpunit.engine.progress import progress_bar
from gpunit.gp_unit.prior.biggan_pairs import write_png

log = logging.getLogger(__name__)

# Architecture -> (builder, weights URL). v2 is more accurate; v1 is accepted when that is what you have.
_MASKRCNN = {"v2": (maskrcnn_resnet50_fpn_v2, MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url),
             "v1": (maskrcnn_resnet50_fpn, MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url)}


def check_mask_folder(image_root: str | os.PathLike, mask_root: str | os.PathLike) -> list[str]:
    """Relative paths of the images under ``image_root`` that have no mask (same relative path and stem)."""
    image_root, mask_root = Path(image_root), Path(mask_root)
    images = scan_images(image_root)
    if not mask_root.is_dir():
        raise FileNotFoundError(f"mask folder '{mask_root}' not found; provide masks that mirror "
                                f"'{image_root}' or create them with scripts/generate_pairs.py --masks maskrcnn")
    masks = {p.relative_to(mask_root).with_suffix("") for p in mask_root.rglob("*") if is_image_file(p)}
    missing = [str(p.relative_to(image_root)) for p in images
               if p.relative_to(image_root).with_suffix("") not in masks]
    if missing:
        log.warning("%d of %d images under %s have no mask in %s, e.g. %s", len(missing), len(images),
                    image_root, mask_root, ", ".join(missing[:5]))
    return missing


def select_instance_mask(detection: dict, height: int, width: int, score_threshold: float) -> torch.Tensor:
    """The soft mask (H, W) of the highest-scoring instance, or zeros when none passes the threshold.

    One instance rather than the union: the paired images show one main object, and a
    union would add background people or cars whose shape has nothing to do with it.
    """
    scores = detection["scores"]
    if len(scores) == 0 or scores.max() < score_threshold:
        return torch.zeros(height, width)
    return detection["masks"][scores.argmax(), 0].float().cpu()  # masks: (K, 1, H, W) in [0, 1]


class MaskRCNNMasker:
    """Torchvision Mask R-CNN (COCO) that returns one object mask per image.

    ``weights_path`` is the ``.pth`` file or a folder holding it; without it the torch hub cache
    is searched for the v2 file, then v1. The architecture is read from the weights' keys.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 score_threshold: float = 0.5):
        path = self._find(weights_path)
        # A corrupt file makes torch's weights-only unpickler raise almost any type (IndexError,
        # UnpicklingError, ...); shapes that do not match raise RuntimeError. All mean: wrong file.
        try:
            state = load_state_dict(path)
            arch = "v2" if "rpn.head.conv.1.0.weight" in state else "v1"
            self.model = _MASKRCNN[arch][0](weights=None, weights_backbone=None)
            self.model.load_state_dict(state)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{path} is not a torchvision Mask R-CNN ResNet50-FPN COCO weights file "
                             f"({str(err)[:300]}); get it from {_MASKRCNN['v2'][1]}") from err
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.score_threshold = score_threshold

    @staticmethod
    def _find(weights_path) -> Path:
        if weights_path is not None and Path(weights_path).is_file():
            return Path(weights_path)
        errors = []
        for arch in ("v2", "v1"):
            url = _MASKRCNN[arch][1]
            try:
                return find_weights(url.rsplit("/", 1)[-1], url, weights_path,
                                    what=f"Mask R-CNN {arch} (instance masks)", option="--maskrcnn-weights")
            except MissingWeightsError as err:
                errors.append(str(err))
        raise MissingWeightsError(errors[0] + f" (The v1 file {_MASKRCNN['v1'][1]} works too.)")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """(N, 3, H, W) uint8 or [0, 1] float images (or a list of (3, H, W)) -> (N, H, W) float masks in [0, 1]."""
        inputs = [img.to(self.device) for img in images]
        inputs = [img.float() / 255 if img.dtype == torch.uint8 else img.float() for img in inputs]
        detections = self.model(inputs)
        masks = [select_instance_mask(det, *img.shape[-2:], self.score_threshold)
                 for det, img in zip(detections, inputs)]
        return torch.stack(masks) if isinstance(images, torch.Tensor) else masks


def _read_rgb(path: Path) -> torch.Tensor | None:
    """(3, H, W) uint8, or None (logged) for a corrupt file, so one bad image does not stop the run."""
    try:
        return pil_to_tensor(load_rgb(path))
    except UnreadableImageError as err:
        log.warning("skipping %s", err)
        return None


def write_masks(image_root: str | os.PathLike, mask_root: str | os.PathLike, masker, batch_size: int = 8,
                progress: bool = True) -> dict:
    """Write ``masker``'s mask of every image to ``mask_root`` (same relative path, ``.png``).

    Resumable: images whose mask exists are skipped; each PNG is written atomically.
    ``masker`` maps a list of (3, H, W) uint8 images to a list/tensor of (H, W) masks in [0, 1].
    Returns ``{"written", "skipped", "failed"}``.
    """
    image_root, mask_root = Path(image_root), Path(mask_root)
    images = scan_images(image_root)
    targets = {p: mask_root / p.relative_to(image_root).with_suffix(".png") for p in images}
    todo = [p for p in images if not targets[p].is_file()]
    written = failed = 0
    for i in progress_bar(range(0, len(todo), batch_size), desc="masks", unit="batch", disable=not progress):
        loaded = [(p, img) for p in todo[i:i + batch_size] if (img := _read_rgb(p)) is not None]
        failed += min(batch_size, len(todo) - i) - len(loaded)
        if not loaded:
            continue
        masks = masker([img for _, img in loaded])
        for (p, _), mask in zip(loaded, masks):
            write_png(targets[p], (mask.clamp(0, 1) * 255).round().to(torch.uint8)[None])  # (1, H, W)
            written += 1
    log.info("masks: wrote %d, skipped %d existing, %d unreadable, in %s",
             written, len(images) - len(todo), failed, mask_root)
    return {"written": written, "skipped": len(images) - len(todo), "failed": failed}
