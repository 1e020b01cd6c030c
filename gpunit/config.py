"""Typed configuration for both training stages.

A config file is YAML that sets only what differs from the defaults below; ``base:`` names
another YAML file (relative to the including file) whose values are applied first.
Command-line overrides (``--set train.lr=2e-4 model.image_size=64``) come last. Unknown
keys and values of the wrong type raise :class:`ConfigError` with the key, the file and a
did-you-mean hint. The resolved config is written next to every run.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
    images_per_domain: int = 600   # per class folder; 0 = all
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
class TrainConfig:
    iterations: int = 45000
    batch_size: int = 16
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    log_every: int = 50            # scalars to TensorBoard / JSONL
    image_every: int = 500         # image grids
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "auto"           # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"


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
    num_workers: int = 2


@dataclass
class Stage2LossConfig:
    lambda_adv: float = 1.0
    lambda_con: float = 1.0        # lambda_1, L_con (Eq. 5)
    lambda_sty: float = 50.0       # lambda_2, L_sty (Eq. 4)
    lambda_msk: float = 1.0        # lambda_3, L_msk (Eq. 6)
    lambda_rec: float = 1.0        # lambda_4, L_rec
    lambda_r1: float = 1.0         # R1 penalty on real images
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


@dataclass
class Stage2TrainConfig(TrainConfig):
    iterations: int = 75000
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    image_every: int = 1000


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
