"""Evaluation under the paper's protocol (Table 1): a translator's outputs, or any folder of outputs.

With a translator, each content (test) image gets ``num_outputs`` translations (sampled styles, or random
reference images), written as StarGAN v2's ``eval.py`` names them (``0001_01.png`` ... ``0001_10.png``), then
scored from disk by :func:`gpunit.metrics.paper_protocol.evaluate_folders`, as GP-UNIT's notebook scored its
saved outputs. A folder of existing outputs (any method's) is scored the same way.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gpunit.data.datasets import ImageFolderDataset
from gpunit.data.images import to_pil, write_png_atomic
from gpunit.gp_unit.evaluate import translate_test_set
from gpunit.gp_unit.translator import Translator
from gpunit.metrics.paper_protocol import OUTPUTS_PER_INPUT, evaluate_folders, load_networks


def write_translations(translator: Translator, content: Sequence[str], fake_dir: str | os.PathLike,
                       mode: str = "latent", reference: Sequence[str] | None = None,
                       num_outputs: int = OUTPUTS_PER_INPUT, seed: int = 0, batch_size: int = 16,
                       resize: str = "published", max_content: int = 0, progress: bool = True) -> int:
    """Translate every content image ``num_outputs`` times into ``fake_dir`` (0001_01.png ...); returns the count.

    ``fake_dir`` must be new or empty: the protocol scores every image under it.
    """
    mode = "exemplar" if mode == "reference" else mode  # "reference": gpunit 0.1's name
    if mode not in ("latent", "exemplar") or (mode == "exemplar" and not reference):
        raise ValueError("mode must be 'latent', or 'exemplar' with exemplar image folders")
    fake_dir = Path(fake_dir)
    if fake_dir.is_dir() and any(p.is_file() for p in fake_dir.rglob("*")):
        raise ValueError(f"{fake_dir} is not empty: the paper protocol scores every image under the fake folder, "
                         "so give a new or empty folder (or score the existing outputs with --fake alone)")
    contents = ImageFolderDataset(content, translator.image_size, resize=resize)
    if max_content:
        contents.paths = contents.paths[:max_content]
    refs = ImageFolderDataset(reference, translator.image_size, resize=resize) if mode == "exemplar" else None
    digits = max(4, len(str(len(contents))))  # names must sort in input order
    written, index = 0, 0
    for batch, outputs, _ in translate_test_set(translator, contents, refs, num_outputs, seed, batch_size, progress):
        for k, image in enumerate(outputs):  # content-major: num_outputs rows per input
            i, j = index + k // num_outputs, k % num_outputs
            write_png_atomic(to_pil(image), fake_dir / f"{i + 1:0{digits}d}_{j + 1:02d}.png")
        index += len(batch["x"])
        written += len(outputs)
    return written


def evaluate_paper(real: Sequence[str], fake: str | os.PathLike, translator: Translator | None = None,
                   content: Sequence[str] | None = None, mode: str = "latent", reference: Sequence[str] | None = None,
                   num_outputs: int = OUTPUTS_PER_INPUT, seed: int = 0, batch_size: int = 16,
                   resize: str = "published", max_content: int = 0, inception_weights: str | None = None,
                   lpips_weights: str | None = None, device="cpu", progress: bool = True) -> dict:
    """FID and LPIPS diversity under the paper's protocol; with a translator, its outputs are written to ``fake``
    first. ``real`` is the target domain's *training* folder(s), as in the paper."""
    networks = load_networks(inception_weights, lpips_weights, device)  # a missing file stops us before any work
    extra = {}
    if translator is not None:
        if not content:
            raise ValueError("translating needs content (test) image folders")
        write_translations(translator, content, fake, mode, reference, num_outputs, seed, batch_size, resize,
                           max_content, progress)
        extra = {"mode": mode, "resize": resize, "seed": seed, "content": [str(Path(c).resolve()) for c in content]}
    elif not Path(fake).is_dir():
        raise FileNotFoundError(f"fake folder not found: {fake}")
    results = evaluate_folders(real, fake, num_outputs, device=device, progress=progress, networks=networks)
    return {**results, **extra}
