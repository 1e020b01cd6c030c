"""``load_translator``: the one place that knows every method's translator files.

    translator = gpunit.load_translator("runs/stage2_ellipse2star/translator.pt")          # GP-UNIT, ours
    translator = gpunit.load_translator("cat2dog.pt", content_encoder="content_encoder.pt")  # GP-UNIT, published
    translator = gpunit.load_translator("runs/deepi2i_synthetic/deepi2i.pt")               # DeepI2I, ours
    translator = gpunit.load_translator("DeepI2I_animals/", class_names="animals.txt")     # DeepI2I, published

Every translator is a :class:`gpunit.inference.TranslatorBase` whose ``method`` says which it is:
``"gp_unit"`` (:class:`gpunit.gp_unit.translator.Translator`: ``translate(x, style=...)`` or
``translate(x, num_styles=K, seed=...)``) or ``"deepi2i"``
(:class:`gpunit.deepi2i.translator.DeepI2ITranslator`: ``translate(x, target_class, num_styles=K, seed=...)``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from gpunit.deepi2i.translator import DeepI2ITranslator, is_deepi2i_path, load_deepi2i_translator
from gpunit.gp_unit.translator import Translator, load_gp_unit_translator

TRANSLATOR_TYPES = (Translator, DeepI2ITranslator)


def load_translator(checkpoint: str | os.PathLike | None = None, content_encoder: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu", precision: str = "fp32",
                    class_names: Sequence[str] | str | os.PathLike | None = None,
                    generator: str | os.PathLike | None = None):
    """A translator for whichever method the file or folder holds.

    GP-UNIT: our exported ``translator.pt``, or a published Stage II file (``{"g_ema", "sampler"}``) plus the
    published ``content_encoder.pt``. DeepI2I: our ``deepi2i.pt``, or a published DeepI2I weights folder
    (``G.pth``, ``E1.pth``, ``A1.pth``...); ``class_names`` (a list, or a text file with one name per line)
    names the classes of a folder, which carries none. ``generator=`` is the old name of ``checkpoint``.
    """
    checkpoint = checkpoint if checkpoint is not None else generator  # gpunit 0.1 called it `generator`
    if checkpoint is None:
        raise TypeError("load_translator needs the translator's checkpoint file or folder")
    if is_deepi2i_path(checkpoint):
        if content_encoder is not None:
            raise ValueError(f"{checkpoint} is a DeepI2I translator, which has its own encoder; "
                             "drop the content encoder (--content-encoder)")
        return load_deepi2i_translator(checkpoint, device=device, precision=precision, class_names=class_names)
    if class_names is not None:
        raise ValueError(f"{checkpoint} is a GP-UNIT translator: class names are for DeepI2I checkpoints")
    return load_gp_unit_translator(checkpoint, content_encoder, device=device, precision=precision)
