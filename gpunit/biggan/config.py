"""Typed configuration of our class-conditional BigGAN, and the labelled folders it (and DeepI2I) trains on.

Loaded like every gpunit config (:func:`gpunit.engine.config.load_config`: YAML with ``base:``, ``--set``
overrides, unknown keys rejected). The defaults are BigGAN-PyTorch's ``launch_BigGAN_bs256x8.sh`` (the
128 px release): ch 96, hierarchical z of 120, shared embedding of 128, attention at 64, orthogonal init,
G lr 1e-4, D lr 4e-4, Adam (0, 0.999) eps 1e-6, batch 2048 as 256 x 8 accumulations, one D step per G
step, EMA 0.9999 from step 20000.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpunit.engine.config import TrainConfig


@dataclass
class LabelledDataConfig:
    root: str = ""                 # a folder of class folders: <root>/<class name>/**/*.png (class = folder name)
    class_subfolder: str = ""      # images of class c under <root>/<c>/<class_subfolder> (the synthetic data's "train")
    classes: list[str] = field(default_factory=list)  # class folders to use, in this order (empty = all, natural order)
    per_class: int = 0             # at most this many images per class, the first in natural order (0 = all)
    load_size: int = 0             # resize to this, then random-crop image_size (0 = resize to image_size only)
    flip: bool = True              # random horizontal flip
    num_workers: int = 2


@dataclass
class BigGANModelConfig:
    """The architecture of a network built here (our BigGAN; DeepI2I from scratch). Transferred networks
    take theirs from the weights."""
    image_size: int = 128          # 64, 128 or 256
    g_ch: int = 96                 # channel multiplier of G (BigGAN-PyTorch's G_ch)
    d_ch: int = 96                 # of D and the encoder (D_ch)
    dim_z: int = 120               # split into (number of G blocks + 1) equal chunks (hierarchical z)
    shared_dim: int = 128          # the shared class embedding
    g_attention: list[int] = field(default_factory=lambda: [64])  # widths with self-attention in G
    d_attention: list[int] = field(default_factory=lambda: [64])  # ... in D (and the encoder)
    num_classes: int = 0           # class-embedding rows; 0 = the number of classes of the data


@dataclass
class BigGANTrainConfig(TrainConfig):
    iterations: int = 138000       # the release's step count
    batch_size: int = 2048
    accumulate: int = 8            # 256 x 8, as BigGAN-PyTorch's bs256x8 script
    lr: float = 1e-4               # the generator's (G_lr)
    lr_d: float = 4e-4             # the discriminator's (D_lr)
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    eps: float = 1e-6              # Adam epsilon (--adam_eps)
    d_steps: int = 1               # D updates (each on a new batch) per G update
    reuse_fakes_for_d: bool = False  # G step first, then D scores its fakes (one G pass less per step; the
                                   # published step has D first, on fakes G draws again)
    ema: bool = True               # keep a moving average of G for samples and export
    ema_decay: float = 0.9999
    ema_start: int = 20000         # before this step the average is a copy of G (BigGAN-PyTorch's ema_start)
    image_every: int = 1000
    checkpoint_every: int = 2000


@dataclass
class BigGANLossConfig:
    adversarial: str = "hinge"     # "hinge" (BigGAN) or "log" (non-saturating)
    diffaugment: str = ""          # DiffAugment policy on everything D sees, e.g. "color,translation" ("" = none)
    mode_seeking: float = 0.0      # weight of the mode-seeking term against collapse over z (MSGAN; 0 = off)


@dataclass
class BigGANConfig:
    name: str = "biggan"
    out_dir: str = "runs"
    model: BigGANModelConfig = field(default_factory=BigGANModelConfig)
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    loss: BigGANLossConfig = field(default_factory=BigGANLossConfig)
    train: BigGANTrainConfig = field(default_factory=BigGANTrainConfig)

