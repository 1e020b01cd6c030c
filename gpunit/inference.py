"""What every method's translator shares at inference: device, dtype, precision and the input batch.

A translator is an ``nn.Module`` in eval mode that takes (N, 3, H, W) images in [-1, 1]; inputs of
another size are resized (bilinear) to the model's. ``precision="bf16"`` (or ``"fp16"``) runs the
networks under autocast, for speed; outputs are always in the weights' dtype (float32; float64 after
``.double()``, for numerical checks).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.engine import speed


def model_batch(images: torch.Tensor, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A batch (N, 3, H, W) in [-1, 1] on the model's device and dtype, resized to size x size if needed."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images.to(device, dtype)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


class TranslatorBase(nn.Module):
    """Device, dtype, precision and input preparation; a method's translator adds its networks and
    ``image_size`` and calls :meth:`_prepare` and :meth:`_autocast` around them."""

    method: str = ""
    image_size: int

    def __init__(self, precision: str = "fp32"):
        super().__init__()
        speed.check_precision(precision, "the translator's precision")
        self.precision = precision

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (float32; float64 after ``.double()``, for numerical checks)."""
        return next(self.parameters()).dtype

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return model_batch(images, self.image_size, self.device, self.dtype)

    def _autocast(self):
        return speed.autocast(self.device, self.precision)()

    def _full_precision(self, t: torch.Tensor) -> torch.Tensor:
        """bf16/fp16 autocast outputs back to the weights' dtype."""
        return t.to(self.dtype)
