"""Translator: the content encoder, the (EMA) generator and the style sampler, ready for inference.
(``load_translator`` also opens DeepI2I checkpoints; their translator is in :mod:`gpunit.translate_deepi2i`.)

    translator = gpunit.load_translator(generator="cat2dog.pt", content_encoder="content_encoder.pt")
    y_hat = translator.translate(x, style=y)             # exemplar-guided: one style image per content image
    y_hat = translator.translate(x, num_styles=4, seed=0)  # latent-guided: styles from the sampler

Images are (N, 3, H, W) tensors in [-1, 1]; inputs of another size are resized (bilinear) to the
model's size. ``precision="bf16"`` (or ``"fp16"``) runs the networks under autocast, for speed on
GPUs; outputs are always float32.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.checkpoints import check_compatible, load_translator_parts
from gpunit.models import ContentEncoder, Generator, StyleSampler
from gpunit.train import speed


def model_batch(images: torch.Tensor, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A batch (N, 3, H, W) in [-1, 1] on the model's device and dtype, resized to size x size if needed."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images.to(device, dtype)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


class Translator(nn.Module):
    def __init__(self, content_encoder: ContentEncoder, generator: Generator,
                 sampler: StyleSampler | None = None, precision: str = "fp32"):
        super().__init__()
        check_compatible(content_encoder, generator)
        speed.check_precision(precision, "the translator's precision")
        self.precision = precision
        self.content_encoder = content_encoder
        self.generator = generator
        self.sampler = sampler
        self.eval()  # the sampler's BatchNorm uses its running statistics

    @property
    def image_size(self) -> int:
        return self.content_encoder.image_size

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (float32; float64 after ``.double()``, for numerical checks)."""
        return next(self.generator.parameters()).dtype

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return model_batch(images, self.image_size, self.device, self.dtype)

    def _autocast(self):
        return speed.autocast(self.device, self.precision)()

    def _full_precision(self, t: torch.Tensor) -> torch.Tensor:
        """bf16/fp16 autocast outputs back to the weights' dtype (float32; float64 for numerical checks)."""
        return t.to(self.dtype)

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


def load_translator(generator: str, content_encoder: str | None = None, device: str | torch.device = "cpu",
                    precision: str = "fp32", class_names=None):
    """A translator for whichever method the file or folder holds.

    GP-UNIT (:class:`Translator`): our exported file, or a published Stage II file (``{"g_ema",
    "sampler"}``) plus the published ``content_encoder.pt``.
    DeepI2I (:class:`gpunit.translate_deepi2i.DeepI2ITranslator`): our DeepI2I file, or a published
    DeepI2I weights folder (``G.pth``, ``E1.pth``, ``A1.pth``...); ``class_names`` (a list, or a text
    file with one name per line) names the classes of a folder, which carries none.
    """
    from gpunit.translate_deepi2i import is_deepi2i_path, load_deepi2i_translator

    if is_deepi2i_path(generator):
        if content_encoder is not None:
            raise ValueError(f"{generator} is a DeepI2I translator, which has its own encoder; "
                             "drop the content encoder (--content-encoder)")
        return load_deepi2i_translator(generator, device=device, precision=precision, class_names=class_names)
    if class_names is not None:
        raise ValueError(f"{generator} is a GP-UNIT translator: class names are for DeepI2I checkpoints")
    encoder, gen, sampler = load_translator_parts(generator, content_encoder)
    return Translator(encoder, gen, sampler, precision).to(device)
