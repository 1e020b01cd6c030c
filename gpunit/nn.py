"""Building blocks of the networks: GP-UNIT's layers (paper Appendix A.2) and helpers any method uses.

Conventions of the published implementation that these blocks keep:
- Stage I convolutions (content encoder, prior auto-encoder) are spectral-normed and reflect-padded.
- AdaIN is ``gamma * IN(x) + beta`` with gamma taken straight from a linear layer (not ``1 + gamma``).
- Spectral norm is torch's ``parametrizations`` version: unlike the old ``torch.nn.utils.spectral_norm``
  it survives ``copy.deepcopy`` after a forward pass (needed for EMA copies). Published checkpoints
  use the old key names; :mod:`gpunit.gp_unit.weights` converts them.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


def num_halvings(big: int, small: int) -> int:
    """How many stride-2 stages take ``big`` down to ``small`` (both powers of two apart)."""
    n = int(round(math.log2(big / small)))
    if n < 0 or small * 2 ** n != big:
        raise ValueError(f"size {big} is not {small} times a power of two")
    return n


def stage_channels(image_size: int, resolution: int, base: int, cap: int) -> int:
    """Channels of the stage working at ``resolution`` in a network for ``image_size`` images.

    The published networks double the width each time the resolution halves, starting from
    ``base`` at half the image size, up to ``cap`` (e.g. 64, 128, 256, 512, 512 at 128...8 for
    256x256 images). Smaller images therefore start narrower instead of dropping wide layers.
    """
    return min(base * max(image_size // (2 * resolution), 1), cap)


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def upsample_then_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(upsample_nearest(x))`` for a 3x3, stride-1 conv with padding 1 (zeros or reflect), as
    one transposed conv on ``x``. Each pixel of the upsampled grid sees only 2x2 pixels of ``x``, so
    the 3x3 kernel folds into a 4x4 stride-2 one (per axis [w2, w1+w2, w0+w1, w0], flipped as
    conv_transpose wants): the same function without the 4x larger map, at 4/9 of the multiply-adds.
    Reflecting the upsampled map at its border repeats the border pixel of ``x``."""
    def fold(w: torch.Tensor, dim: int) -> torch.Tensor:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    _check_3x3(conv, ("zeros", "reflect"))
    padding = 1
    if conv.padding_mode == "reflect":
        x, padding = repeat_border(x), 3
    kernel = fold(fold(conv.weight, 2), 3)
    return F.conv_transpose2d(x, kernel.transpose(0, 1), conv.bias, stride=2, padding=padding)


def _check_3x3(conv: nn.Conv2d, padding_modes: tuple[str, ...]) -> None:
    if (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) != ((3, 3), (1, 1), (1, 1), (1, 1), 1) \
            or conv.padding_mode not in padding_modes:
        raise ValueError(f"folding needs a 3x3 conv of stride 1, padding 1 ({' or '.join(padding_modes)}), "
                         f"got {conv}")


def repeat_border(x: torch.Tensor) -> torch.Tensor:
    """Pad by one pixel that repeats the border, like ``F.pad(x, (1, 1, 1, 1), mode="replicate")``
    (whose backward torch.compile gets wrong for channels_last maps in torch 2.14)."""
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)


def conv_then_avg_pool(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``F.avg_pool2d(conv(x), 2)`` for a 3x3, stride-1 conv with zero padding 1, as one 4x4 stride-2
    conv whose kernel is the 3x3 one averaged over the 2x2 pooling shifts: the same function at 4/9
    of the multiply-adds, without the full-resolution map."""
    def spread(w: torch.Tensor, dim: int) -> torch.Tensor:
        zero = torch.zeros_like(w.narrow(dim, 0, 1))
        return (torch.cat([w, zero], dim) + torch.cat([zero, w], dim)) / 2

    _check_3x3(conv, ("zeros",))
    kernel = spread(spread(conv.weight, 2), 3)
    return F.conv2d(x, kernel, conv.bias, stride=2, padding=1)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``gamma * IN(x) + beta``, (gamma, beta) = Linear(style)."""

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels)
        self.style = nn.Linear(style_dim, channels * 2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(style)[:, :, None, None].chunk(2, dim=1)
        return gamma * self.norm(x) + beta


_ACTIVATIONS = {
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "none": nn.Identity,
}


class ConvBlock(nn.Module):
    """Spectral-normed, reflect-padded conv -> normalisation -> activation (Stage I "C" layers).

    ``norm``: "instance", "adain" (modulated by a domain-label embedding of ``style_dim``) or "none".
    With "instance", ``forward(x, (mean, std))`` re-styles the normalised map with image-level
    statistics, as the Stage I decoder does. ``upsample``: the block doubles its input (nearest)
    first, through :func:`upsample_then_conv` (3x3 stride-1 convs only).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, norm: str = "instance", act: str = "relu", style_dim: int = 128,
                 upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.conv = spectral_norm(nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding,
                                            padding_mode="reflect"))
        if norm == "instance":
            self.norm = nn.InstanceNorm2d(out_ch)
        elif norm == "adain":
            self.norm = AdaIN(style_dim, out_ch)
        elif norm == "none":
            self.norm = None
        else:
            raise ValueError(f"unknown norm '{norm}'")
        self.act = _ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        x = upsample_then_conv(x, self.conv) if self.upsample else self.conv(x)
        if isinstance(self.norm, AdaIN):
            x = self.norm(x, style)
        elif self.norm is not None:
            x = self.norm(x)
            if style is not None:  # image-level style: channel (mean, std) of a style feature
                mean, std = style
                x = x * std + mean
        return self.act(x)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``-scale`` backward (Ganin & Lempitsky, 2015)."""
    return _GradientReversal.apply(x, scale)


def channel_mean_std(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std over H*W, each (N, C, 1, 1)."""
    flat = f.flatten(2)
    return flat.mean(2)[:, :, None, None], flat.std(2)[:, :, None, None]


def init_weights(module: nn.Module) -> None:
    """The published initialisation: Kaiming-normal conv/linear weights, zero biases.

    (It also zeroes the AdaIN style layers' bias, so gamma starts at 0 as in the authors' runs.)
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@contextlib.contextmanager
def eval_mode(*networks: nn.Module | None) -> Iterator[None]:
    """Every module of ``networks`` in eval mode for the block; each module's own mode is restored after."""
    nets = [n for n in networks if n is not None]
    flags = [(m, m.training) for net in nets for m in net.modules()]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag

