"""Discriminator D (paper Sec. 4, Appendix A.2), StarGAN v2 style.

C64(3)-Res128v-Res256v-Res512v-Res512v-Res512v-Res512v-C512(4)-C512(1) at 256x256: spectral norm
everywhere, average-pool downsampling inside the residual blocks, residual sum divided by sqrt(2),
no normalisation. Besides the real/fake logit it returns f_D, the channel means of the features
after ``style_layer`` modules, for the style loss (Eq. 4).

``spectral_norm=False`` drops the spectral norm (R1 alone then regularises D). At the built-in
demo's scale a spectrally normalised D separates real stars from star-textured blobs only slowly
(held-out accuracy 0.61 after 600 D-only steps at lr 1e-4, 0.78 without it; docs/gp_unit.md, "How the demo draws stars"), so
G does not learn the star's outline there.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gpunit.nn import conv_then_avg_pool, num_halvings


def _identity(module: nn.Module) -> nn.Module:
    return module


class DownResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, norm=_spectral_norm):
        super().__init__()
        self.conv_0 = norm(nn.Conv2d(in_ch, in_ch, 3, 1, 1))
        self.conv_1 = norm(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.conv_s = norm(nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False)) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The published block pools after its convs; pooling first (1x1 shortcut) or folding the pool
        # into conv_0's kernel is the same linear map at a fraction of the cost.
        shortcut = F.avg_pool2d(x, 2)
        if self.conv_s is not None:
            shortcut = self.conv_s(shortcut)
        dx = conv_then_avg_pool(F.leaky_relu(x, 0.2), self.conv_0)
        dx = self.conv_1(F.leaky_relu(dx, 0.2))
        return (shortcut + dx) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 256, base_channels: int = 64, max_channels: int = 512,
                 spectral_norm: bool = True):
        super().__init__()
        norm = _spectral_norm if spectral_norm else _identity
        layers = [norm(nn.Conv2d(3, base_channels, 3, 1, 1))]
        ch = base_channels
        for _ in range(num_halvings(image_size, 4)):  # down to 4x4
            out_ch = min(ch * 2, max_channels)
            layers.append(DownResBlock(ch, out_ch, norm))
            ch = out_ch
        layers += [nn.LeakyReLU(0.2), norm(nn.Conv2d(ch, ch, 4, 1, 0)), nn.LeakyReLU(0.2)]
        self.model = nn.Sequential(*layers)
        self.linear = norm(nn.Conv2d(ch, 1, 1, 1, 0))

    def forward(self, x: torch.Tensor, style_layer: int | None = None):
        """Returns (logits (N,), f_D (N, C)): channel means after ``style_layer`` modules of
        ``self.model`` (default: all of them; the paper uses 4, or 5 for human faces)."""
        style_layer = self._check_style_layer(style_layer)
        feat = self.model[:style_layer](x)
        style_feat = feat.mean(dim=(2, 3))
        feat = self.model[style_layer:](feat)
        return self.linear(feat).view(-1), style_feat

    def style_features(self, x: torch.Tensor, style_layer: int) -> torch.Tensor:
        """f_D alone: only the first ``style_layer`` modules run (the style loss's real side)."""
        return self.model[:self._check_style_layer(style_layer)](x).mean(dim=(2, 3))

    def _check_style_layer(self, style_layer: int | None) -> int:
        style_layer = len(self.model) if style_layer is None else style_layer
        if not 1 <= style_layer <= len(self.model):
            raise ValueError(f"style_layer must be in 1..{len(self.model)}, got {style_layer}")
        return style_layer
