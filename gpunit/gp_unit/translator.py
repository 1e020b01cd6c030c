"""GP-UNIT's translator: the content encoder, the (EMA) generator and the style sampler, ready for inference.

    translator = gpunit.load_translator("cat2dog.pt", content_encoder="content_encoder.pt")
    y_hat = translator.translate(x, style=y)               # exemplar-guided: one style image per content image
    y_hat = translator.translate(x, num_styles=4, seed=0)  # latent-guided: styles from the sampler

Images are (N, 3, H, W) tensors in [-1, 1]; inputs of another size are resized (bilinear) to the
model's size (:mod:`gpunit.inference`).
"""
from __future__ import annotations

import os

import torch

from gpunit.gp_unit.models import ContentEncoder, Generator, StyleSampler
from gpunit.gp_unit.weights import check_compatible, load_translator_parts
from gpunit.inference import TranslatorBase


class Translator(TranslatorBase):
    method = "gp_unit"

    def __init__(self, content_encoder: ContentEncoder, generator: Generator,
                 sampler: StyleSampler | None = None, precision: str = "fp32"):
        super().__init__(precision)
        check_compatible(content_encoder, generator)
        self.content_encoder = content_encoder
        self.generator = generator
        self.sampler = sampler
        self.eval()  # the sampler's BatchNorm uses its running statistics

    @property
    def image_size(self) -> int:
        return self.content_encoder.image_size

    @torch.no_grad()
    def content_features(self, content: torch.Tensor) -> list[torch.Tensor]:
        """Ec(x) with all intermediate maps, deepest first (what G and its skip layers read)."""
        with self._autocast():
            return self.content_encoder(self._prepare(content), all_features=True)

    @torch.no_grad()
    def style_codes(self, style: torch.Tensor) -> torch.Tensor:
        """Es(y): (N, style_dim)."""
        with self._autocast():
            return self._full_precision(self.generator.style_encoder(self._prepare(style)))

    @torch.no_grad()
    def generate(self, features: list[torch.Tensor], codes: torch.Tensor, use_skip=True) -> torch.Tensor:
        """G(features, s): images (N, 3, S, S) from content features and style codes."""
        with self._autocast():
            return self._full_precision(self.generator(features, codes.to(self.device, self.dtype),
                                                       use_skip=use_skip)[0])

    @torch.no_grad()
    def sample_styles(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n style codes from the sampler; the same seed gives the same codes on any device."""
        if self.sampler is None:
            raise RuntimeError("this translator has no style sampler: latent-guided translation needs one "
                               "(give style images instead)")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.sampler.noise_dim, generator=generator)
        return self.sampler(z.to(self.device))

    @torch.no_grad()
    def translate_codes(self, content: torch.Tensor, codes: torch.Tensor, use_skip=True) -> torch.Tensor:
        """G(Ec(x), s) for given style codes (N, style_dim), one per content image."""
        return self.generate(self.content_features(content), codes, use_skip=use_skip)

    @torch.no_grad()
    def translate(self, content: torch.Tensor, style: torch.Tensor | None = None, num_styles: int = 1,
                  seed: int | None = None) -> torch.Tensor:
        """Exemplar-guided with ``style`` (N, 3, H, W): returns (N, 3, S, S).

        Latent-guided without it: ``num_styles`` sampled styles per content image, returned as
        (N * num_styles, 3, S, S), content-major (rows i*K .. i*K+K-1 belong to content image i).
        """
        if style is not None:
            if style.shape[0] != content.shape[0]:
                raise ValueError(f"exemplar-guided translation needs one style image per content image "
                                 f"(got {content.shape[0]} content, {style.shape[0]} style)")
            return self.translate_codes(content, self.style_codes(style))
        codes = self.sample_styles(content.shape[0] * num_styles, seed)
        features = [f.repeat_interleave(num_styles, dim=0)  # Ec once per content image
                    for f in self.content_features(content)]
        return self.generate(features, codes)


def load_gp_unit_translator(path: str | os.PathLike, content_encoder: str | os.PathLike | None = None,
                            device: str | torch.device = "cpu", precision: str = "fp32") -> Translator:
    """Our exported translator file, or a published Stage II file (``{"g_ema", "sampler"}``) plus the
    published ``content_encoder.pt``."""
    encoder, generator, sampler = load_translator_parts(path, content_encoder)
    return Translator(encoder, generator, sampler, precision).to(device)
