"""Stage II style encoder Es and generator G with dynamic skip connections (paper Sec. 4, 4.1).

G at 256x256: AdaRes512-AdaRes512^-AdaRes512-DSC^-AdaRes256-DSC^-AdaRes128^-AdaRes64^-AdaRes64-C3(7).
It starts from the 1-channel content map Ec(x) (8x8), upsamples by nearest x2 per layer and is
modulated by the style code through AdaIN. On the 16x16 and 32x32 layers the dynamic skip
connection (DSC) fuses Ec's intermediate features with a GRU-like gate and a sparse mask m^l:

    h^_{l-1} = lrelu(W_h * up(h_{l-1})),      h_0 = Ec(x)
    r_l = sigmoid(W_r * [h^_{l-1}, f_E^l]),   m_l = tanh(relu(W_m * [h^_{l-1}, f_E^l]))
    h_l = r_l h^_{l-1},                       f^_E^l = W_E * [h_l, f_E^l]
    f^l = (1 - m_l) f_G^l + m_l f^_E^l

The style code passes a final ReLU (non-negative), as in the published code.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.nn import AdaIN, num_halvings, stage_channels, upsample_nearest, upsample_then_conv


class StyleEncoder(nn.Module):
    """Es: C64(7)-C128(4)/2-C256(4)/2-...-GAvgPool-FC256-FC64-FC256 (ReLU after each)."""

    def __init__(self, image_size: int = 256, base_channels: int = 64, style_dim: int = 256,
                 hidden_dim: int = 64):
        super().__init__()
        layers = [nn.Conv2d(3, base_channels, 7, padding=3, padding_mode="reflect"), nn.ReLU()]
        ch = base_channels
        for _ in range(num_halvings(image_size, 8)):  # 5 stride-2 convs at 256x256
            out_ch = min(ch * 2, style_dim)
            layers += [nn.Conv2d(ch, out_ch, 4, stride=2, padding=1, padding_mode="reflect"), nn.ReLU()]
            ch = out_ch
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.Linear(ch, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, style_dim), nn.ReLU(),
            nn.Linear(style_dim, style_dim), nn.ReLU(),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.model(y).flatten(1))


class AdaResBlock(nn.Module):
    """Residual block with AdaIN before each conv (zero padding, LeakyReLU 0.2).

    ``upsample``: the block takes the previous layer's map and doubles it (nearest) on the way in,
    as the published G does before the block. Nearest upsampling commutes with AdaIN (a map and its
    2x2 copies share their channel means and variances), with LeakyReLU and with the 1x1 shortcut
    conv, so those run on the small map, and conv_0 reads it through :func:`upsample_then_conv`.
    The same function as upsampling first, at a fraction of the cost.
    """

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.learned_shortcut = in_ch != out_ch
        self.conv_0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv_1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.norm_0 = AdaIN(style_dim, in_ch)
        self.norm_1 = AdaIN(style_dim, out_ch)
        if self.learned_shortcut:
            self.norm_s = AdaIN(style_dim, in_ch)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, s)) if self.learned_shortcut else x
        dx = F.leaky_relu(self.norm_0(x, s), 0.2)
        if self.upsample:
            shortcut, dx = upsample_nearest(shortcut), upsample_then_conv(dx, self.conv_0)
        else:
            dx = self.conv_0(dx)
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, s), 0.2))
        return shortcut + dx


class DynamicSkipLayer(nn.Module):
    """The dynamic skip connection of Sec. 4.1 (equations in the module docstring)."""

    def __init__(self, hidden_ch: int, feature_ch: int):
        super().__init__()
        self.trans = nn.Conv2d(hidden_ch, feature_ch, 3, padding=1, padding_mode="reflect")       # W_h
        self.reset = nn.Conv2d(feature_ch * 2, feature_ch, 3, padding=1, padding_mode="reflect")  # W_r
        self.mask = nn.Conv2d(feature_ch * 2, feature_ch, 3, padding=1, padding_mode="reflect")   # W_m
        self.update = nn.Conv2d(feature_ch * 2, feature_ch, 3, padding=1, padding_mode="reflect")  # W_E

    def transition(self, h: torch.Tensor) -> torch.Tensor:
        """h^_{l-1} = lrelu(W_h * up(h_{l-1})), the conv folded with the upsampling."""
        return F.leaky_relu(upsample_then_conv(h, self.trans), 0.2)

    def forward(self, f_g: torch.Tensor, f_e: torch.Tensor, h: torch.Tensor, enabled: bool = True):
        h_hat = self.transition(h)
        gate_in = torch.cat([h_hat, f_e], dim=1)
        r = torch.sigmoid(self.reset(gate_in))
        h_new = r * h_hat
        if not enabled:  # m_l = 0: keep the generator feature, only carry the hidden state on
            return f_g, h_new, None
        m = torch.tanh(F.relu(self.mask(gate_in)))  # relu + tanh: most of the mask is exactly 0
        f_e_hat = self.update(torch.cat([h_new, f_e], dim=1))
        return (1 - m) * f_g + m * f_e_hat, h_new, m


class GeneratorLayer(nn.Module):
    """One resolution of G: AdaRes block(s), an RGB head and optionally a dynamic skip layer.

    All layers but the first double the previous layer's map on the way in (inside ``reslayer``).
    Every layer owns an RGB head (the published checkpoints hold them all); only the last is used.
    """

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, hidden_ch: int | None = None,
                 two_blocks: bool = False, upsample: bool = True):
        super().__init__()
        self.reslayer = AdaResBlock(in_ch, out_ch, style_dim, upsample)
        self.postlayer = AdaResBlock(out_ch, out_ch, style_dim) if two_blocks else None
        self.rgblayer = nn.Conv2d(out_ch, 3, 7, padding=3)
        self.skiplayer = DynamicSkipLayer(hidden_ch, out_ch) if hidden_ch is not None else None

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self.reslayer(x, s)
        return x if self.postlayer is None else self.postlayer(x, s)

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.rgblayer(F.leaky_relu(x, 0.2)))


class Generator(nn.Module):
    """G with its style encoder. ``forward(content_features, style_code)`` -> (image, masks).

    ``content_features`` are Ec's maps deepest first (``ContentEncoder(..., all_features=True)``).
    ``skip_resolutions`` must be consecutive layers right after the first one (16 and 32 for an
    8x8 content map): the hidden state h flows from one skip layer to the next.
    """

    def __init__(self, image_size: int = 256, content_size: int = 8, base_channels: int = 64,
                 max_channels: int = 512, style_dim: int = 256, style_base_channels: int = 64,
                 style_hidden: int = 64, skip_resolutions: Sequence[int] = (16, 32)):
        super().__init__()
        self.image_size = image_size
        self.style_encoder = StyleEncoder(image_size, style_base_channels, style_dim, style_hidden)
        num_layers = num_halvings(image_size, content_size) + 1
        self.resolutions = [content_size * 2 ** i for i in range(num_layers)]
        skip_layers = [self.resolutions.index(r) for r in skip_resolutions if r in self.resolutions]
        if len(skip_layers) != len(skip_resolutions) or skip_layers != list(range(1, len(skip_layers) + 1)):
            raise ValueError(f"skip_resolutions {list(skip_resolutions)} must be consecutive resolutions "
                             f"starting at {2 * content_size} among {self.resolutions[1:-1]}")
        if num_layers - 1 in skip_layers:
            raise ValueError("the last (full-resolution) layer cannot have a dynamic skip connection")
        self.skip_layers = skip_layers
        channels = [stage_channels(image_size, r, base_channels, max_channels) for r in self.resolutions]
        layers = [GeneratorLayer(1, channels[0], style_dim, two_blocks=True, upsample=False)]
        for i in range(1, num_layers):
            hidden = (1 if i == 1 else channels[i - 1]) if i in skip_layers else None
            layers.append(GeneratorLayer(channels[i - 1], channels[i], style_dim, hidden_ch=hidden))
        self.model = nn.Sequential(*layers)
        for layer in self.model[:-1]:  # kept for checkpoint compatibility; only the last RGB head is used
            layer.rgblayer.requires_grad_(False)

    def forward(self, content: Sequence[torch.Tensor], style: torch.Tensor,
                use_skip: bool | Sequence[bool] = True):
        """``use_skip``: one flag for all skip layers, or one per skip layer (False = m_l set to 0).

        Returns the image in [-1, 1] and the list of masks of the active skip layers.
        """
        flags = [use_skip] * len(self.skip_layers) if isinstance(use_skip, bool) else list(use_skip)
        if len(flags) != len(self.skip_layers):
            raise ValueError(f"use_skip needs {len(self.skip_layers)} flags, got {len(flags)}")
        any_skip = any(flags)
        h = content[0]  # h_0 = Ec(x), the 1-channel map
        x = self.model[0](content[0], style)
        masks = []
        for i in range(1, len(self.model)):
            layer = self.model[i]
            x = layer(x, style)  # 2x larger
            if layer.skiplayer is not None and any_skip:
                # content[i + 1]: Ec's map at this layer's resolution (content[1] is the wide 8x8 map)
                x, h, m = layer.skiplayer(x, content[i + 1], h, enabled=flags[i - 1])
                if m is not None:
                    masks.append(m)
        return self.model[-1].to_rgb(x), masks
