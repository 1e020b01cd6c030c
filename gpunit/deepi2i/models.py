"""DeepI2I's encoder, adaptors and translation network (Wang et al., NeurIPS 2020, Sec. 3.1-3.2, Suppl. A).

    y_hat = Phi(Lambda(Upsilon(x)), z, c)        generator(adaptors(encoder(x)), z, c)

- Encoder Upsilon: the BigGAN discriminator's residual trunk (initialised from the pretrained D); it
  returns the outputs of its last four residual blocks, 32x32 / 16x16 / 8x8 / 4x4 at 128 px.
- Adaptors Lambda_l: one per fused width, a pre-activated residual block without pooling (ReLU,
  two 3x3 convs, a 1x1 shortcut where the channel count changes; Suppl. A), mapping the encoder's
  channels to the generator's at that width. The identity may replace an adaptor (the paper's
  "dagger DeepI2I" ablation) where the channel counts agree, a parameter-free channel repetition
  where the generator has m times the encoder's channels (BigGAN: m = 2 at 32, 16 and 8 px), and
  any subset of widths may be fused ("DeepI2I w-3").
- Fusion (Eq. 5): ``Phi_l <- Phi_l + w_l Lambda_l``, added to the generator's activation of the same
  width (its 4x4 stem and the outputs of its first three blocks at 128 px).

The published weights of the fusion: 0.1 at every width for a model initialised from BigGAN (the
paper's runs), 1/1/1/0.1 at 4/8/16/32 when trained from scratch (``--training_scratch``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from gpunit.biggan.models import SN_EPS, BigGANGenerator, DBlock, DiscriminatorTrunk, rectified_last

PRETRAINED_FUSION_WEIGHTS = {4: 0.1, 8: 0.1, 16: 0.1, 32: 0.1}
SCRATCH_FUSION_WEIGHTS = {4: 1.0, 8: 1.0, 16: 1.0, 32: 0.1}
PUBLISHED_REC_WEIGHTS = {4: 0.1, 8: 0.1, 16: 0.1, 32: 0.01}  # D_fea_w: alpha_l of L_rec (Eq. 3)


def by_width(table: Mapping[int, float], widths: Iterable[int]) -> dict[int, float]:
    """The weight of each feature width from a table keyed by width, as the published ``E1_fea_w`` and ``D_fea_w``
    are (a 64 px model has the widths 16, 8 and 4 of a 128 px one's 32, 16, 8 and 4, and takes their weights);
    a width the table does not name takes the weight of the nearest one it names (by factors of two)."""
    if not table:
        raise ValueError("an empty table of weights by width")
    keys = sorted(int(k) for k in table)
    return {int(w): float(table[min(keys, key=lambda k: (abs(math.log2(k / int(w))), k))]) for w in widths}


class Encoder(DiscriminatorTrunk):
    """The discriminator's trunk: ``forward(x)`` returns ``{width: feature map}`` (32, 16, 8, 4 at 128 px).

    It has the discriminator's module tree and key names without ``linear`` and ``embed`` (the
    published encoder keeps both but never uses them for its features). The deepest map is
    rectified, as the published encoder's in-place head ReLU leaves it.
    """

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return rectified_last(*self.trunk(x))[1]


class ChannelRepeat(nn.Module):
    """No adaptor where the generator has ``times`` x the encoder's channels: the map tiled along channels."""

    def __init__(self, times: int):
        super().__init__()
        self.times = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, self.times, 1, 1)


class Adaptors(nn.Module):
    """One adaptor per fused width: ``forward(features) -> {width: adapted map}``.

    ``resolutions``, ``in_channels`` (encoder) and ``out_channels`` (generator) are parallel lists;
    widths in ``identity`` pass through unchanged (their in and out channels must agree), widths in
    ``repeat`` are tiled along channels (out must be a multiple of in). Module names follow the
    published ``A1`` (``blocks.<i>.0.conv1`` ...; 32, 16, 8, 4 for i = 0..3).
    """

    def __init__(self, resolutions: Sequence[int] = (32, 16, 8, 4), in_channels: Sequence[int] = (192, 384, 768, 1536),
                 out_channels: Sequence[int] = (384, 768, 1536, 1536), identity: Iterable[int] = (),
                 sn_eps: float = SN_EPS, repeat: Iterable[int] = ()):
        super().__init__()
        if not len(resolutions) == len(in_channels) == len(out_channels):
            raise ValueError(f"adaptors: {len(resolutions)} widths but {len(in_channels)} input and "
                             f"{len(out_channels)} output channel counts")
        if len(set(resolutions)) != len(resolutions):
            raise ValueError(f"adaptors: a width appears twice in {list(resolutions)}")
        self.resolutions = [int(r) for r in resolutions]
        self.identity = sorted({int(r) for r in identity})
        self.repeat = sorted({int(r) for r in repeat})
        unknown = set(self.identity + self.repeat) - set(self.resolutions)
        if unknown:
            raise ValueError(f"identity adaptors at {sorted(unknown)}, which are not fused widths {self.resolutions}")
        if set(self.identity) & set(self.repeat):
            raise ValueError(f"widths {sorted(set(self.identity) & set(self.repeat))} are both identity and repeat")
        self.in_channels, self.out_channels = list(in_channels), list(out_channels)
        self.blocks = nn.ModuleList()
        for res, cin, cout in zip(self.resolutions, self.in_channels, self.out_channels):
            if res in self.identity:
                if cin != cout:
                    raise ValueError(f"an identity adaptor at {res}x{res} needs the encoder's and the generator's "
                                     f"channels to agree, got {cin} and {cout}; use an adaptor there")
                block = nn.Identity()
            elif res in self.repeat:
                if cout % cin:
                    raise ValueError(f"a channel-repeat adaptor at {res}x{res} needs the generator's channels ({cout}) "
                                     f"to be a multiple of the encoder's ({cin}); use an adaptor there")
                block = ChannelRepeat(cout // cin)
            else:
                block = DBlock(cin, cout, downsample=False, preactivation=True, sn_eps=sn_eps)
            self.blocks.append(nn.ModuleList([block]))

    def forward(self, features: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        missing = [r for r in self.resolutions if r not in features]
        if missing:
            raise ValueError(f"adaptors need encoder features at widths {missing}; got {sorted(features)}")
        return {res: stage[0](features[res]) for res, stage in zip(self.resolutions, self.blocks)}


class DeepI2I(nn.Module):
    """The translator network ``y_hat = G(A(E(x)), z, c)``; the discriminator trains beside it.

    ``fusion_weights`` maps each fused width to its ``w_l`` (Eq. 5); its keys are the adaptors'
    widths.
    """

    def __init__(self, encoder: Encoder, adaptors: Adaptors, generator: BigGANGenerator,
                 fusion_weights: Mapping[int, float] = PRETRAINED_FUSION_WEIGHTS):
        super().__init__()
        self.encoder, self.adaptors, self.generator = encoder, adaptors, generator
        self.fusion_weights = {int(r): float(fusion_weights[r]) for r in adaptors.resolutions
                               if r in fusion_weights}
        check_compatible(encoder, adaptors, generator, self.fusion_weights)

    @property
    def image_size(self) -> int:
        return self.generator.resolution

    def adapted_features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """``w_l * Lambda_l(Upsilon_l(x))`` by width: what is added to G's activations (Eq. 5)."""
        adapted = self.adaptors(self.encoder(x))
        return {res: self.fusion_weights[res] * f for res, f in adapted.items()}

    def generate(self, features: Mapping[int, torch.Tensor], z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """G with the already weighted features of :meth:`adapted_features` (one row per output)."""
        return self.generator(z, self.generator.shared(c), dict(features))

    def forward(self, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.generate(self.adapted_features(x), z, c)


def check_compatible(encoder: Encoder, adaptors: Adaptors, generator: BigGANGenerator,
                     fusion_weights: Mapping[int, float]) -> None:
    """Sizes, widths and channels must line up along E -> A -> G; one clear message otherwise."""
    problems = []
    if encoder.resolution != generator.resolution:
        problems.append(f"the encoder takes {encoder.resolution} px images, "
                        f"the generator makes {generator.resolution} px")
    enc = encoder.feature_channels()
    for res, cin, cout in zip(adaptors.resolutions, adaptors.in_channels, adaptors.out_channels):
        if res not in enc:
            problems.append(f"the adaptors read the encoder at {res}x{res}, which it does not return ({sorted(enc)})")
        elif enc[res] != cin:
            problems.append(f"the adaptor at {res}x{res} takes {cin} channels, the encoder gives {enc[res]}")
        try:
            g = generator.channels_at(res)
        except ValueError as err:
            problems.append(str(err))
            continue
        if g != cout:
            problems.append(f"the adaptor at {res}x{res} makes {cout} channels, the generator has {g} there")
        if res not in fusion_weights:
            problems.append(f"no fusion weight for width {res}")
    if problems:
        raise ValueError("the encoder, adaptors and generator do not fit together: " + "; ".join(problems))


def build_adaptors(encoder: Encoder, generator: BigGANGenerator, resolutions: Sequence[int] | None = None,
                   identity: Iterable[int] = (), sn_eps: float = SN_EPS, repeat: Iterable[int] = ()) -> Adaptors:
    """Adaptors from the encoder's channels to the generator's at ``resolutions`` (default: every
    width the encoder returns: 32, 16, 8, 4 at 128 px). PyTorch's default init, as the published code
    leaves them when it starts from BigGAN."""
    enc = encoder.feature_channels()
    resolutions = list(enc) if resolutions is None else [int(r) for r in resolutions]
    unknown = [r for r in resolutions if r not in enc]
    if unknown:
        raise ValueError(f"the encoder returns features at {sorted(enc)}, not at {unknown}")
    return Adaptors(resolutions, [enc[r] for r in resolutions], [generator.channels_at(r) for r in resolutions],
                    identity, sn_eps, repeat)
