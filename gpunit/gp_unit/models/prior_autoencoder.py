"""Stage I prior auto-encoder (paper Sec. 3.2, Appendix A.2).

Ec: content encoder (shared with Stage II).
Es: C64/2-C128/2-C256/2-C512/2-C512/2-C512/2 (Conv-LeakyReLU); the style of each layer is its
    channel mean and std.
F:  C512-C512-C512-C512^-C512^-C256^-C128^-C64^-C3. The first layers are conditioned by the domain
    label embedding (AdaIN) and, through the shape head Fs, predict the instance mask at 2x the
    content size; the later layers are re-styled with Es's statistics at their resolution.
C:  C32(3)/2-C64(3)/1-C<L>(4)/1-FC<L>, behind a gradient reversal layer, so that Ec(x) becomes
    domain-agnostic (L_reg).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from gpunit.gp_unit.models.content_encoder import ContentEncoder
from gpunit.nn import ConvBlock, channel_mean_std, grad_reverse, num_halvings, stage_channels

StyleStats = list[tuple[torch.Tensor, torch.Tensor]]


class PriorStyleEncoder(nn.Module):
    """Stride-2 Conv-LeakyReLU layers from image_size/2 down to content_size/2; returns each
    layer's (mean, std), shallowest first."""

    def __init__(self, image_size: int, content_size: int, base_channels: int, max_channels: int):
        super().__init__()
        in_ch = 3
        self.resolutions = []
        for k in range(1, num_halvings(image_size, content_size // 2) + 1):
            res = image_size >> k
            out_ch = stage_channels(image_size, res, base_channels, max_channels)
            self.add_module(f"layer{k}", ConvBlock(in_ch, out_ch, stride=2, norm="none", act="lrelu"))
            self.resolutions.append(res)
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> StyleStats:
        stats = []
        for k in range(1, len(self.resolutions) + 1):
            x = getattr(self, f"layer{k}")(x)
            stats.append(channel_mean_std(x))
        return stats


class PriorDecoder(nn.Module):
    """F and its shape head Fs (``tomask``)."""

    def __init__(self, image_size: int, content_size: int, base_channels: int, max_channels: int,
                 label_dim: int):
        super().__init__()
        ch = lambda r: stage_channels(image_size, r, base_channels, max_channels)  # noqa: E731
        c0, c1 = ch(content_size), ch(2 * content_size)
        adain = dict(norm="adain", act="relu", style_dim=label_dim)
        # Domain-level part: shared by F and Fs, conditioned by the domain label. From layer3 on,
        # each layer doubles its input (nearest) first, as the published F does between layers.
        self.layer1 = nn.Sequential(*[ConvBlock(c0, c0, **adain) for _ in range(3)])
        self.layer2 = ConvBlock(c0, c0, **adain)
        self.layer3 = ConvBlock(c0, c1, upsample=True, **adain)
        # Image-level part: one layer per resolution 4*content_size .. image_size/2, re-styled by Es.
        self.image_resolutions = [r for r in (content_size * 2 ** k for k in range(2, 32)) if r < image_size]
        in_ch = c1
        for j, r in enumerate(self.image_resolutions):
            self.add_module(f"layer{4 + j}", ConvBlock(in_ch, ch(r), norm="instance", act="relu", upsample=True))
            in_ch = ch(r)
        self.final_name = f"layer{4 + len(self.image_resolutions)}"
        self.add_module(self.final_name, ConvBlock(in_ch, 3, norm="none", act="tanh", upsample=True))
        self.tomask = ConvBlock(c1, 3, norm="none", act="tanh")  # Fs's own output layer

    def domain_level(self, x: torch.Tensor, label_embedding: torch.Tensor) -> torch.Tensor:
        """The layers shared by F and Fs, up to 2x the content size."""
        for conv in self.layer1:
            x = conv(x, label_embedding)
        return self.layer3(self.layer2(x, label_embedding), label_embedding)

    def forward(self, x: torch.Tensor, style_stats: StyleStats, style_resolutions: list[int],
                label_embedding: torch.Tensor):
        x = self.domain_level(x, label_embedding)
        shape = self.tomask(x)  # Fs(Ec(x), l_x): (N, 3, 2s, 2s) in [-1, 1]
        for j, r in enumerate(self.image_resolutions):
            stats = style_stats[style_resolutions.index(r)]
            x = getattr(self, f"layer{4 + j}")(x, stats)
        return getattr(self, self.final_name)(x), shape


class DomainClassifier(nn.Module):
    """C: predicts the domain label from the content feature (trained through gradient reversal)."""

    def __init__(self, num_domains: int, content_size: int = 8):
        super().__init__()
        self.fc3 = nn.Linear(num_domains, num_domains)
        self.layer1 = ConvBlock(1, 32, 3, stride=2, padding=1, norm="none", act="lrelu")
        self.layer2 = ConvBlock(32, 64, 3, stride=1, padding=1, norm="none", act="lrelu")
        self.layer3 = ConvBlock(64, num_domains, content_size // 2, stride=1, padding=0, norm="none", act="lrelu")

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.layer3(self.layer2(self.layer1(c))).flatten(1))


class PriorAutoEncoder(nn.Module):
    """Ec, Es, F (+Fs), C, the label embedding and the content noise of Stage I."""

    def __init__(self, image_size: int = 256, content_size: int = 8, base_channels: int = 64,
                 max_channels: int = 512, num_domains: int = 292, label_dim: int = 128,
                 content_noise: float = 0.2):
        super().__init__()
        self.content_size = content_size
        self.content_noise = content_noise
        self.contentE = ContentEncoder(image_size, content_size, base_channels, max_channels)
        self.styleE = PriorStyleEncoder(image_size, content_size, base_channels, max_channels)
        self.G = PriorDecoder(image_size, content_size, base_channels, max_channels, label_dim)
        self.C = DomainClassifier(num_domains, content_size)
        c0 = stage_channels(image_size, content_size, base_channels, max_channels)
        self.fc = ConvBlock(1, c0, 1, padding=0, norm="instance", act="lrelu")
        self.embed = nn.Embedding(num_domains, label_dim)
        # As published, Es has layers down to content_size/2 but F reads only some of their
        # statistics; the others stay frozen (kept for checkpoint compatibility).
        for k, res in enumerate(self.styleE.resolutions, start=1):
            if res not in self.G.image_resolutions:
                getattr(self.styleE, f"layer{k}").requires_grad_(False)

    def add_noise(self, content: torch.Tensor) -> torch.Tensor:
        """Gaussian noise of fixed std on Ec(x), for robustness (Sec. 3.2)."""
        return content + torch.randn_like(content) * self.content_noise

    def decode(self, content: torch.Tensor, style_stats: StyleStats, labels: torch.Tensor):
        """F(Ec(x), Es(x), l) and Fs(Ec(x), l): (reconstruction, shape map)."""
        return self.G(self.fc(content), style_stats, self.styleE.resolutions, self.embed(labels))

    def predict_shape(self, content: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Fs(c, l) alone: the shape map without decoding the image (same values as ``decode``)."""
        return self.G.tomask(self.G.domain_level(self.fc(content), self.embed(labels)))

    def classify(self, content: torch.Tensor) -> torch.Tensor:
        """C(R(Ec(x))): domain logits; the gradient reaching Ec is reversed."""
        return self.C(grad_reverse(content))

    def forward(self, x: torch.Tensor, labels: torch.Tensor, noise: bool = True):
        content = self.contentE(x)
        recon, shape = self.decode(self.add_noise(content) if noise else content, self.styleE(x), labels)
        return recon, content, shape
