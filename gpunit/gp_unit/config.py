"""GP-UNIT's typed configuration: Stage I (prior distillation) and Stage II (translation).

Loaded by :func:`gpunit.engine.config.load_config` (YAML over these defaults, ``base:``, ``--set``);
the defaults are the published recipes (paper Appendix A.3, the authors' training scripts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpunit.engine.config import TrainConfig


# ----------------------------------------------------------------------------- Stage I
@dataclass
class Stage1ModelConfig:
    image_size: int = 256          # training resolution; 64 and 128 drop stride-2 stages
    content_size: int = 8          # spatial size of the 1-channel content feature
    base_channels: int = 64        # width of the first encoder stage
    max_channels: int = 512        # channel cap of every stage
    num_domains: int = 0           # domain labels; 0 = number of paired + unpaired class folders
    label_dim: int = 128           # domain-label embedding size
    content_noise: float = 0.2     # std of the Gaussian noise added to Ec(x) (Sec. 3.2)


@dataclass
class Stage1DataConfig:
    paired_root: str = "data/synthetic/pairs"           # <root>/<label>_<name>/<k>.png, same k = same latent
    paired_mask_root: str = "data/synthetic/pairs_mask"  # same layout; the instance masks
    unpaired_root: str | None = "data/synthetic/unpaired"  # real images for the unary losses (None: paired only)
    unpaired_mask_root: str | None = "data/synthetic/unpaired_mask"
    test_root: str | None = "data/synthetic/pairs_test"  # held-out pairs: content-feature check at the end
    images_per_domain: int = 600   # first n images of each class folder of both roots; 0 = all
    # Class folders (by name, in either root) that take another count, e.g. {1001_face: 29000}; 0 = all.
    domain_counts: dict[str, int] = field(default_factory=dict)
    load_size: int = 286           # resize to this, then random-crop image_size (0 = no resize/crop jitter)
    flip: bool = True              # random horizontal flip of the whole sample
    num_workers: int = 2


@dataclass
class Stage1LossConfig:
    lambda_arec: float = 1.0       # L_arec: L2 + perceptual appearance reconstruction
    lambda_srec: float = 5.0       # lambda_s in L_srec (Eq. 2)
    lambda_fdist: float = 1.0      # content-feature distance term of L_dis
    lambda_sdist: float = 5.0      # lambda_s in the swapped-shape term of L_dis
    lambda_cls: float = 1.0        # domain classification through gradient reversal (L_reg)
    lambda_reg: float = 0.001      # lambda_r: L2 norm of the content feature (L_reg)
    perceptual: str = "vgg19"      # "vgg19" or "none"
    vgg_weights: str | None = None  # path to vgg19-dcbb9e9d.pth (default: torch hub cache)
    style_flip_prob: float = 0.5   # probability of flipping the style-encoder input


@dataclass
class Stage1Config:
    name: str = "stage1"
    out_dir: str = "runs"          # the run folder is <out_dir>/<name>
    model: Stage1ModelConfig = field(default_factory=Stage1ModelConfig)
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    loss: Stage1LossConfig = field(default_factory=Stage1LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------- Stage II
@dataclass
class Stage2ModelConfig:
    image_size: int = 256
    content_size: int = 8
    base_channels: int = 64        # content encoder and generator width
    max_channels: int = 512
    style_base_channels: int = 64  # Stage II style encoder
    style_dim: int = 256
    style_hidden: int = 64         # the style MLP's bottleneck (256-64-256-256)
    disc_base_channels: int = 64
    disc_max_channels: int = 512
    disc_spectral_norm: bool = True  # false: R1 alone regularises D (the built-in demo: docs/gp_unit.md, "How the demo draws stars")
    skip_resolutions: list[int] = field(default_factory=lambda: [16, 32])  # dynamic skip layers
    noise_dim: int = 128           # style sampler input
    sampler_hidden: int = 128


@dataclass
class Stage2DataConfig:
    source: list[str] = field(default_factory=list)   # folders of the source domain
    target: list[str] = field(default_factory=list)   # folders of the target domain
    source_counts: list[int] = field(default_factory=list)  # images per folder (empty or 0 = all)
    target_counts: list[int] = field(default_factory=list)
    load_size: int = 286           # resize, then random-crop image_size (0 = resize to image_size only)
    flip: bool = True
    same_crop: bool = False        # x and y share one crop and flip, as published (default: independent draws)
    num_workers: int = 2


@dataclass
class Stage2LossConfig:
    lambda_adv: float = 1.0
    lambda_con: float = 1.0        # lambda_1, L_con (Eq. 5)
    lambda_sty: float = 50.0       # lambda_2, L_sty (Eq. 4)
    lambda_msk: float = 1.0        # lambda_3, L_msk (Eq. 6)
    lambda_rec: float = 1.0        # lambda_4, L_rec
    lambda_r1: float = 1.0         # R1 penalty on real images
    r1_every: int = 1              # R1 on every k-th D step only, weighted by k (lazy regularisation, StyleGAN2
                                   # Sec. 3.1); 1 = every step, as published
    lambda_id: float = 0.0         # identity loss (faces); needs identity_weights
    style_layer: int = 4           # discriminator layer whose channel means are f_D
    use_allskip: bool = False      # dynamic skip connections also for the reconstruction
    flip_style: bool = True        # random horizontal flip of the style image (not_flip_style = False)
    perceptual: str = "vgg19"
    vgg_weights: str | None = None
    identity_weights: str | None = None  # model_ir_se50.pth


@dataclass
class SamplerConfig:
    epochs: int = 0                # 0 = the published schedule: 2,000,000 / number of style codes
    max_epochs: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    mitigate_style_bias: bool = False  # oversample styles far from the mean
    augment: bool = True           # codes of target images with the training crop and flip, fresh at each fit
                                   # (published); false: plain resize to image_size
    warm_start: bool = False       # refit the previous sampler instead of a new one at each checkpoint


@dataclass
class Stage2TrainConfig(TrainConfig):
    iterations: int = 75000
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    image_every: int = 1000
    reuse_translation_for_d: bool = False  # D step reuses the G step's y_hat (faster; the paper re-translates)


@dataclass
class Stage2Config:
    name: str = "stage2"
    out_dir: str = "runs"
    content_encoder: str = "checkpoints/content_encoder.pt"  # Stage I output (ours or published)
    train_content_encoder: bool = False  # ablation: no prior, Ec trained from scratch with G
    model: Stage2ModelConfig = field(default_factory=Stage2ModelConfig)
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    loss: Stage2LossConfig = field(default_factory=Stage2LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: Stage2TrainConfig = field(default_factory=Stage2TrainConfig)
