"""Typed configuration of DeepI2I training (Wang et al., NeurIPS 2020).

Loaded like every gpunit config (:func:`gpunit.engine.config.load_config`). The defaults are the published
recipe (``scripts/DeepI2I.sh``): 128 px, from BigGAN-PyTorch's release, hinge loss, feature reconstruction
(MSE, alpha by feature width: 0.01 at 32x32, 0.1 at 16, 8 and 4), Adam (0, 0.999) eps 1e-6, G lr 1e-4,
adaptors and D 4e-4, batch 32 as 4 x 8 accumulations, 500 steps of phase 1 (adaptors and D only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpunit.biggan.config import BigGANModelConfig, LabelledDataConfig
from gpunit.engine.config import TrainConfig


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
    fusion_weights: dict[int, float] = field(default_factory=dict)  # w_l of Eq. 5 by feature width, e.g.
                                   # {16: 1, 8: 1, 4: 1}; empty: the published E1_fea_w (0.1 at every width when
                                   # transferred; {4: 1, 8: 1, 16: 1, 32: 0.1} from scratch). A width a table does not
                                   # name takes the weight of the nearest width it names (deepi2i.models.by_width)


@dataclass
class DeepI2ILossConfig:
    adversarial: str = "hinge"     # "hinge" (published code) or "log" (Eq. 1, non-saturating for E, A, G)
    reconstruction: str = "mse"    # distance of L_rec: "mse" (published code) or "l1" (Eq. 3)
    rec_weights: dict[int, float] = field(default_factory=lambda: {32: 0.01, 16: 0.1, 8: 0.1, 4: 0.1})  # alpha_l of
                                   # Eq. 3 by D feature width, the published D_fea_w; other widths take the nearest
    pairing: str = "input"         # "input": each translation against its own input; "rows01": the published code's
                                   # rows 0 and 1 of [translations; inputs] (two translations on one device; for
                                   # reproducing it only, see docs/deepi2i.md)
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
