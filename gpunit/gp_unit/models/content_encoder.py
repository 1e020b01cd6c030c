"""Content encoder Ec (paper Sec. 3.2, Appendix A.2).

C64/1-C64/2-C64/1-C128/2-...-C512/1-C1/1 at 256x256, every "C" a spectral-normed, reflect-padded
Convolution-IN-LeakyReLU layer (the last 1-channel layer included). Stage I distils the BigGAN
prior into it; Stage II uses it frozen. Its 1-channel map (8x8) is the abstract content feature;
the intermediate maps feed the dynamic skip connections of the Stage II generator.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.nn import ConvBlock, num_halvings, stage_channels


class ContentEncoder(nn.Module):
    """Ec. ``forward(x)`` -> (N, 1, s, s); ``forward(x, all_features=True)`` -> maps deepest first.

    A smaller ``image_size`` drops stride-2 stages so the content map stays ``content_size``. Inputs
    of another size are resized (bilinear) to ``image_size``; the published encoder always resizes
    to 256.
    """

    def __init__(self, image_size: int = 256, content_size: int = 8, base_channels: int = 64,
                 max_channels: int = 512):
        super().__init__()
        self.image_size = image_size
        self.content_size = content_size
        num_down = num_halvings(image_size, content_size)
        if num_down < 1:
            raise ValueError("image_size must be larger than content_size")
        in_ch = 3
        self.channels = []  # output channels of each stage, shallowest first
        for k in range(1, num_down + 1):
            out_ch = stage_channels(image_size, image_size >> k, base_channels, max_channels)
            mid_ch = out_ch if k == 1 else in_ch  # the first stage lifts RGB to the base width
            self.add_module(f"layer{k}", nn.Sequential(
                ConvBlock(in_ch, mid_ch, act="lrelu"),
                ConvBlock(mid_ch, out_ch, stride=2, act="lrelu"),
            ))
            self.channels.append(out_ch)
            in_ch = out_ch
        # The head keeps the resolution and squeezes to one channel, which strips domain detail.
        self.add_module(f"layer{num_down + 1}", nn.Sequential(
            ConvBlock(in_ch, in_ch, act="lrelu"),
            ConvBlock(in_ch, 1, act="lrelu"),
        ))
        self.num_layers = num_down + 1

    @property
    def feature_channels(self) -> list[int]:
        """Channels of ``forward(x, all_features=True)``, deepest first, e.g. [1, 512, 512, 256, 128, 64]."""
        return [1] + self.channels[::-1]

    def forward(self, x: torch.Tensor, all_features: bool = False):
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        features = []
        for k in range(1, self.num_layers + 1):
            x = getattr(self, f"layer{k}")(x)
            features.append(x)
        return features[::-1] if all_features else x
