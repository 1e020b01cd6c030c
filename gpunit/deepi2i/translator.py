"""DeepI2I translator: many-class translation ``y_hat = G(A(E(x)), z, c)`` (Wang et al., NeurIPS 2020, Sec. 4.2).

    translator = gpunit.load_translator("weights/DeepI2I_animals/")          # a published weights folder
    translator = gpunit.load_translator("runs/animals/deepi2i.pt")           # our file (class names inside)
    y_hat = translator.translate(x, target_class=["pug", "samoyed"])         # one class per input
    y_hat = translator.translate(x, target_class=[3, 3], num_styles=4, seed=0)  # 4 noise vectors per input
    y_hat = translator.translate(x, target_class=[3, 3], z=z)                # explicit noise (N, dim_z)

Images are (N, 3, H, W) in [-1, 1]; other sizes are resized (bilinear) to the model's. The networks
run in eval mode, as the published test script runs them (batch norm with stored statistics,
spectral norm with one un-stored power iteration).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from gpunit.biggan.weights import check_class_names, looks_like_biggan_state
from gpunit.deepi2i.models import DeepI2I
from gpunit.deepi2i.weights import FORMAT, load_deepi2i_translator_file, load_published_deepi2i
from gpunit.engine.checkpoints import CheckpointError, peek_format
from gpunit.inference import TranslatorBase


class DeepI2ITranslator(TranslatorBase):
    method = "deepi2i"

    def __init__(self, network: DeepI2I, class_names: Sequence[str] | None = None, precision: str = "fp32"):
        super().__init__(precision)
        self.network = network
        self.class_names = list(class_names) if class_names is not None else None
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> int:
        return self.network.image_size

    @property
    def dim_z(self) -> int:
        return self.network.generator.dim_z

    @property
    def num_classes(self) -> int:
        """Classes one can translate to: the named ones, else every row of the class embedding."""
        return len(self.class_names) if self.class_names is not None else self.network.generator.num_classes

    def class_label(self, index: int) -> str:
        """A printable name of class ``index`` (its name, else ``c<index>``)."""
        return self.class_names[index] if self.class_names is not None else f"c{index}"

    # ------------------------------------------------------------------ inputs
    def class_index(self, target) -> int:
        """One class as an index: an int, a digit string, or a name the checkpoint carries."""
        if isinstance(target, torch.Tensor):
            target = int(target)
        if isinstance(target, str):
            if self.class_names is not None and target in self.class_names:
                return self.class_names.index(target)
            if target.strip().isdigit():
                target = int(target)
            else:
                known = (f"known: {', '.join(self.class_names[:8])}" + (" ..." if len(self.class_names) > 8 else "")
                         if self.class_names is not None else "this checkpoint carries no class names; give indices")
                raise ValueError(f"unknown target class {target!r} ({known})")
        if not 0 <= int(target) < self.num_classes:
            raise ValueError(f"target class {target} out of range: this translator has {self.num_classes} classes")
        return int(target)

    def class_indices(self, target_class, n: int) -> torch.Tensor:
        """(n,) class indices from one class for all inputs or a tensor/list with one per input."""
        if isinstance(target_class, (int, str)) or (isinstance(target_class, torch.Tensor) and target_class.dim() == 0):
            targets = [target_class] * n
        else:
            targets = list(target_class)
        if len(targets) != n:
            raise ValueError(f"{len(targets)} target classes for {n} input image(s): "
                             "give one per input (or one for all)")
        return torch.tensor([self.class_index(t) for t in targets], dtype=torch.long, device=self.device)

    def sample_z(self, n: int, seed: int | None = None) -> torch.Tensor:
        """(n, dim_z) noise ~ N(0, 1); the same seed gives the same noise on any device."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(n, self.dim_z, generator=generator).to(self.device, self.dtype)

    # ------------------------------------------------------------------ translation
    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """The weighted adaptor outputs ``w_l A_l(E_l(x))`` by width: computed once per input image."""
        with self._autocast():
            return self.network.adapted_features(self._prepare(images))

    @torch.no_grad()
    def generate(self, features: dict[int, torch.Tensor], z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """G for rows of features, noise (N, dim_z) and class indices (N,): (N, 3, S, S) float32."""
        with self._autocast():
            return self.network.generate(features, z.to(self.device, self.dtype), classes.to(self.device)).float()

    @torch.no_grad()
    def translate(self, images: torch.Tensor, target_class, z: torch.Tensor | None = None, num_styles: int = 1,
                  seed: int | None = None) -> torch.Tensor:
        """Translate each image to its target class.

        ``target_class``: one class (index or name) for every image, or one per image. With ``z``
        (N, dim_z): one output per image, (N, 3, S, S). Without: ``num_styles`` noise vectors per image
        from ``seed``, (N * num_styles, 3, S, S), image-major (rows i*K .. i*K+K-1 belong to image i).
        """
        n = images.shape[0]
        classes = self.class_indices(target_class, n)
        if z is not None:
            if num_styles != 1:
                raise ValueError("give either z or num_styles, not both")
            if z.shape != (n, self.dim_z):
                raise ValueError(f"z must be (N, dim_z) = ({n}, {self.dim_z}), got {tuple(z.shape)}")
            return self.generate(self.features(images), z, classes)
        if num_styles < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")
        z = self.sample_z(n * num_styles, seed)
        features = {r: f.repeat_interleave(num_styles, dim=0) for r, f in self.features(images).items()}
        return self.generate(features, z, classes.repeat_interleave(num_styles))


# ----------------------------------------------------------------------------- loading
def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line in class-index order (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class names file not found: {path} (one class name per line, in index order)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} holds no class names (one per line, in index order)")
    return names


def is_deepi2i_path(path: str | os.PathLike) -> bool:
    """A folder (published DeepI2I weights) or our DeepI2I file. A single state dict of such a folder
    (``G.pth``, ``E1.pth``...) is an error that says to give the folder."""
    path = Path(path)
    if path.is_dir():
        return True
    if not path.is_file():
        return False
    if peek_format(path) == FORMAT:
        return True
    if looks_like_biggan_state(path):
        raise CheckpointError(f"{path} is one state dict of a BigGAN/DeepI2I weights folder; give the folder that "
                              "holds G.pth, E1.pth and A1.pth")
    return False


def load_deepi2i_translator(path: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32",
                            class_names: Sequence[str] | str | os.PathLike | None = None) -> DeepI2ITranslator:
    """A DeepI2ITranslator from our file or a published weights folder (see :mod:`gpunit.deepi2i.weights`)."""
    if isinstance(class_names, (str, os.PathLike)):
        class_names = read_class_names(class_names)
    if Path(path).is_dir():
        weights = load_published_deepi2i(path, class_names=class_names)
        network, names = weights.network, weights.class_names
    else:
        network, names, _ = load_deepi2i_translator_file(path)
        if class_names is not None:
            names = check_class_names(class_names, network.generator.num_classes, str(path))
    return DeepI2ITranslator(network, names, precision).to(device)
