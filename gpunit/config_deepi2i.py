"""Typed configuration of DeepI2I training and of our class-conditional BigGAN.

Loaded like every gpunit config (:func:`gpunit.config.load_config`: YAML with ``base:``, ``--set``
overrides, unknown keys rejected). The defaults are the published recipes:
- DeepI2I (Wang et al., NeurIPS 2020; the published ``scripts/DeepI2I.sh``): 128 px, from BigGAN-PyTorch's
  release, hinge loss, feature reconstruction (MSE, 0.01 at the shallowest width, 0.1 elsewhere), Adam
  (0, 0.999) eps 1e-6, G lr 1e-4, adaptors and D 4e-4, batch 32 as 4 x 8 accumulations, 500 steps of
  phase 1.
- BigGAN (BigGAN-PyTorch's ``launch_BigGAN_bs256x8.sh``, the 128 px release): ch 96, hierarchical z of
  120, shared embedding of 128, attention at 64, orthogonal init, G lr 1e-4, D lr 4e-4, Adam (0, 0.999)
  eps 1e-6, batch 2048 as 256 x 8 accumulations, one D step per G step, EMA 0.9999 from step 20000.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpunit.config import TrainConfig


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
    ema: bool = True               # keep a moving average of G for samples and export
    ema_decay: float = 0.9999
    ema_start: int = 20000         # before this step the average is a copy of G (BigGAN-PyTorch's ema_start)
    image_every: int = 1000
    checkpoint_every: int = 2000


@dataclass
class BigGANLossConfig:
    adversarial: str = "hinge"     # "hinge" (BigGAN) or "log" (non-saturating)


@dataclass
class BigGANConfig:
    name: str = "biggan"
    out_dir: str = "runs"
    model: BigGANModelConfig = field(default_factory=BigGANModelConfig)
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    loss: BigGANLossConfig = field(default_factory=BigGANLossConfig)
    train: BigGANTrainConfig = field(default_factory=BigGANTrainConfig)


# ----------------------------------------------------------------------------- DeepI2I
@dataclass
class DeepI2IInitConfig:
    source: str = "biggan_release"  # "biggan_release" (BigGAN-PyTorch's G_ema.pth/G.pth + D.pth), "gpunit_biggan"
                                    # (biggan.pt of scripts/train_biggan.py) or "scratch" (DeepI2I (scratch))
    path: str | None = None         # the release folder (default: $TORCH_HOME/hub/checkpoints/BigGAN_ch96_bs256x8_138k)
                                    # or the biggan.pt file
    generator: str = "ema"          # "ema" (G_ema.pth / the EMA generator; the published README's advice) or "raw"
    scratch: list[str] = field(default_factory=list)  # partial transfer: any of encoder, generator, discriminator
                                                      # start from scratch (orthogonal init)
    optimizer_states: bool = True   # continue the source's Adam moments and step counts where it has them (published)
    truncate_class_embeddings: bool = False  # keep only the data's rows of the class embeddings (published: all)


@dataclass
class DeepI2IModelConfig(BigGANModelConfig):
    adaptor_resolutions: list[int] = field(default_factory=list)  # fused widths (empty = all: 32, 16, 8, 4 at 128 px);
                                                                  # [32] is the paper's "DeepI2I (w-3)"
    no_adaptor: list[int] = field(default_factory=list)  # fused widths without an adaptor (identity, or the encoder's
                                                         # channels tiled where G has more): the paper's dagger ablation
    fusion_weights: list[float] = field(default_factory=list)  # w_l of Eq. 5, shallowest fused width first (empty:
                                                               # 0.1 each when transferred, 0.1/1/1/1 from scratch)


@dataclass
class DeepI2ILossConfig:
    adversarial: str = "hinge"     # "hinge" (published code) or "log" (Eq. 1, non-saturating for E, A, G)
    reconstruction: str = "mse"    # distance of L_rec: "mse" (published code) or "l1" (Eq. 3)
    rec_weights: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.1, 0.1])  # alpha_l, shallowest D feature
                                   # first (32, 16, 8, 4 at 128 px); a smaller D uses the first entries
    pairing: str = "input"         # "input": each translation against its own input; "rows01": the published code's
                                   # rows 0 and 1 of [translations; inputs] (two translations on one device; for
                                   # reproducing it only, see README)
    lambda_adv: float = 1.0
    lambda_rec: float = 1.0


@dataclass
class DeepI2ITrainConfig(TrainConfig):
    iterations: int = 50000
    batch_size: int = 32
    accumulate: int = 8            # 4 x 8, as published (BatchNorm then sees 4 images; 1 if memory allows)
    lr: float = 1e-4               # the generator's
    lr_d: float = 4e-4             # the discriminator's
    lr_adaptors: float = 4e-4      # published: the adaptors use D's settings
    lr_encoder: float = 4e-4       # when the encoder trains
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    eps: float = 1e-6
    phase1_steps: int | None = None  # steps of phase 1 (adaptors + D); None: 500 when G is transferred, else 0
    train_encoder: bool | None = None  # None: only when the encoder starts from scratch (published --training_scratch)
    frozen_mode: str = "eval"      # frozen E (and G in phase 1): "eval" (fixed spectral-norm vectors, stored BatchNorm
                                   # statistics) or "train" (published: both keep moving; parameters stay fixed)
    ema: bool = False              # a moving average of G for samples and export (not in the published code)
    ema_decay: float = 0.999
    ema_start: int = 0             # before this step the average is a copy of G
    image_every: int = 1000
    checkpoint_every: int = 2000


@dataclass
class DeepI2IConfig:
    name: str = "deepi2i"
    out_dir: str = "runs"
    init: DeepI2IInitConfig = field(default_factory=DeepI2IInitConfig)
    model: DeepI2IModelConfig = field(default_factory=DeepI2IModelConfig)
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    loss: DeepI2ILossConfig = field(default_factory=DeepI2ILossConfig)
    train: DeepI2ITrainConfig = field(default_factory=DeepI2ITrainConfig)
