"""BigGAN as the published DeepI2I code builds it (a fork of BigGAN-PyTorch, Brock et al., ICLR 2019).

DeepI2I (Wang et al., NeurIPS 2020), Sec. 3.2 and Suppl. A: the generator Phi and the
discriminator Psi "directly duplicate the structure of BigGAN"; the encoder is the discriminator's
trunk (:mod:`gpunit.deepi2i.models`). The paper's configuration is 128x128, ``ch=96``, attention at
64x64, ``dim_z=120`` split into 6 chunks of 20 ("hierarchical z"), a shared 128-d class embedding,
1000 ImageNet classes.

What defines the outputs of the published weights and is reproduced here (see
``../shared/fixtures/deepi2i/README.md``):
- BigGAN-PyTorch's own spectral norm (:class:`SpectralNorm`): one power iteration from the stored
  ``u0`` in every forward, written back only in train mode; ``sv0`` is logged, never used. Eval mode
  therefore differs from ``torch.nn.utils.spectral_norm``, which does no iteration in eval.
- Class-conditional BatchNorm ``BN(x) * (1 + W_g [e_c, z_i]) + W_b [e_c, z_i]`` in every generator
  block, the class embedding first, no BN affine parameters.
- The discriminator head's in-place ReLU: the last trunk feature map (4x4 at 128 px), which the
  DeepI2I code also returns as a feature, is rectified.
- State dict keys and parameter order of the published modules (``blocks.<i>.<j>.conv1.u0`` ...).

Images are (N, 3, R, R) in [-1, 1]; the generator ends in tanh.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

SN_EPS = 1e-6  # the paper's --SN_eps
BN_EPS = 1e-5  # --BN_eps
BN_MOMENTUM = 0.1

# Channel multipliers of BigGAN-PyTorch's architectures per resolution (G_arch / D_arch, D_wide).
_G_IN = {64: [16, 16, 8, 4], 128: [16, 16, 8, 4, 2], 256: [16, 16, 8, 8, 4, 2]}
_G_OUT = {64: [16, 8, 4, 2], 128: [16, 8, 4, 2, 1], 256: [16, 8, 8, 4, 2, 1]}
_D_OUT = {64: [1, 2, 4, 8, 16], 128: [1, 2, 4, 8, 16, 16], 256: [1, 2, 4, 8, 8, 16, 16]}
BOTTOM_WIDTH = 4  # G's first feature map is 4x4 at every resolution
RESOLUTIONS = tuple(sorted(_G_IN))


def _check_resolution(resolution: int) -> None:
    if resolution not in _G_IN:
        raise ValueError(f"BigGAN is defined for {', '.join(map(str, RESOLUTIONS))} px, got {resolution}")


def discriminator_block_resolutions(resolution: int) -> list[int]:
    """Output width of each discriminator block: every block halves the size except the last."""
    _check_resolution(resolution)
    n = len(_D_OUT[resolution])
    return [resolution // 2 ** (i + 1) for i in range(n - 1)] + [resolution // 2 ** (n - 1)]


def fused_resolutions(resolution: int) -> list[int]:
    """Where DeepI2I passes encoder features to the generator: widths resolution/32 .. resolution/4,
    deepest last (32, 16, 8, 4 at 128 px), as the published code selects them."""
    _check_resolution(resolution)
    return [r for r in (resolution // 4, resolution // 8, resolution // 16, resolution // 32) if r >= BOTTOM_WIDTH]


# ----------------------------------------------------------------------------- spectral norm
class SpectralNorm:
    """BigGAN-PyTorch's spectral norm as a mixin for a layer with a ``weight`` (one singular vector,
    one power iteration per forward, ``SN_eps``).

    W is the weight viewed as (out, -1); the buffers are ``u0`` (1, out) and ``sv0`` (1,):
        v = normalize(u0 W),  u = normalize(v W^T)      (no gradient)
        sigma = (v W^T) u^T                              (gradient w.r.t. W)
    In train mode ``u0 <- u`` and ``sv0 <- sigma``; in eval mode the same iteration runs from the
    stored ``u0`` and nothing is written. Plain buffers keep the module deepcopy-safe.
    """

    _sn_mode = None  # gradient accumulation: None, "record" or "replay" (hold_power_iteration); never saved

    def _init_spectral_norm(self, num_outputs: int, eps: float) -> None:
        self.sn_eps = eps
        self.register_buffer("u0", torch.randn(1, num_outputs))  # unnormalised, as published
        self.register_buffer("sv0", torch.ones(1))

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight.reshape(self.weight.shape[0], -1)  # reshape: the weight may be channels_last
        u0 = self.u0
        if self.training and self._sn_mode == "replay":  # call j of a later micro-batch: call j of the first
            u0 = self._sn_log[min(self._sn_call, len(self._sn_log) - 1)]
            self._sn_call += 1
        elif self.training and self._sn_mode == "record":
            self._sn_log.append(self.u0.clone())
        with torch.no_grad():
            v = F.normalize(u0 @ w, dim=1, eps=self.sn_eps)
            u = F.normalize(v @ w.t(), dim=1, eps=self.sn_eps)
        sigma = ((v @ w.t()) @ u.t()).squeeze()
        if self.training and self._sn_mode != "replay":
            with torch.no_grad():
                self.u0.copy_(u)
                self.sv0.copy_(sigma)
        return self.weight / sigma

    # Gradient accumulation (gpunit.engine.accumulate.power_iteration_once): the first micro-batch of an update
    # iterates as usual and records the vector each call started from; the others replay those calls
    # without writing, so every micro-batch normalises by the sigmas of one batch; the release leaves the
    # vectors as the first micro-batch left them.
    def hold_power_iteration(self) -> None:
        self._sn_mode, self._sn_log = "record", []

    def replay_power_iteration(self) -> None:
        if self._sn_mode == "record" and not self._sn_log:  # it did not run: nothing to replay
            self._sn_mode = None
        elif self._sn_mode is not None:
            self._sn_mode, self._sn_call = "replay", 0

    def release_power_iteration(self) -> None:
        self._sn_mode, self._sn_log = None, None


class SNConv2d(nn.Conv2d, SpectralNorm):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 bias: bool = True, eps: float = SN_EPS):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self._init_spectral_norm(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class SNLinear(nn.Linear, SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = SN_EPS):
        super().__init__(in_features, out_features, bias=bias)
        self._init_spectral_norm(out_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(nn.Embedding, SpectralNorm):
    """W is (num_embeddings, dim): sigma is taken over all rows, used or not."""

    def __init__(self, num_embeddings: int, embedding_dim: int, eps: float = SN_EPS):
        super().__init__(num_embeddings, embedding_dim)
        self._init_spectral_norm(num_embeddings, eps)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.embedding(y, self.normalized_weight())


def orthogonal_init_(module: nn.Module) -> nn.Module:
    """BigGAN's ``--G_init ortho`` / ``--D_init ortho``: orthogonal weights for every conv, linear and
    embedding (biases keep torch's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and not m.weight.is_meta:
            nn.init.orthogonal_(m.weight)
    return module


# ----------------------------------------------------------------------------- normalisation
class BatchNorm(nn.Module):
    """BigGAN-PyTorch's ``bn``: batch norm with parameters ``gain``/``bias`` and buffers
    ``stored_mean``/``stored_var`` (the published key names)."""

    def __init__(self, num_features: int, eps: float = BN_EPS, momentum: float = BN_MOMENTUM):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gain = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("stored_mean", torch.zeros(num_features))
        self.register_buffer("stored_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, self.training,
                            self.momentum, self.eps)


class ClassConditionalBatchNorm(nn.Module):
    """``ccbn``: ``BN(x) * (1 + gain(cond)) + bias(cond)``, with ``cond = [class embedding, z chunk]``
    and bias-free SN linears; train mode uses batch statistics and updates the stored ones."""

    def __init__(self, num_features: int, cond_dim: int, eps: float = BN_EPS, momentum: float = BN_MOMENTUM,
                 sn_eps: float = SN_EPS):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gain = SNLinear(cond_dim, num_features, bias=False, eps=sn_eps)
        self.bias = SNLinear(cond_dim, num_features, bias=False, eps=sn_eps)
        self.register_buffer("stored_mean", torch.zeros(num_features))
        self.register_buffer("stored_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(cond)).view(cond.shape[0], -1, 1, 1)
        bias = self.bias(cond).view(cond.shape[0], -1, 1, 1)
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training, self.momentum, self.eps)
        return out * gain + bias


# ----------------------------------------------------------------------------- blocks
class SelfAttention(nn.Module):
    """SA-GAN attention with BigGAN's 2x2 max-pooled keys/values and a learned residual gate ``gamma``
    (0 at init)."""

    def __init__(self, channels: int, sn_eps: float = SN_EPS):
        super().__init__()
        if channels < 8:
            raise ValueError(f"self-attention needs at least 8 channels (it projects to channels / 8), got {channels}; "
                             "use a wider network or attention at another resolution")
        self.channels = channels
        self.gamma = nn.Parameter(torch.tensor(0.0))  # registered first: the published parameter order
        self.theta = SNConv2d(channels, channels // 8, 1, padding=0, bias=False, eps=sn_eps)
        self.phi = SNConv2d(channels, channels // 8, 1, padding=0, bias=False, eps=sn_eps)
        self.g = SNConv2d(channels, channels // 2, 1, padding=0, bias=False, eps=sn_eps)
        self.o = SNConv2d(channels // 2, channels, 1, padding=0, bias=False, eps=sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # reshape, not view: the maps may be channels_last (train.channels_last)
        theta = self.theta(x).reshape(n, c // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).reshape(n, c // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).reshape(n, c // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)  # (N, HW, HW/4)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).reshape(n, c // 2, h, w))
        return self.gamma * o + x


class GBlock(nn.Module):
    """Up-sampling residual block: ``conv2(relu(ccbn2(conv1(up(relu(ccbn1(x)))))) + conv_sc(up(x))``."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, sn_eps: float = SN_EPS,
                 bn_eps: float = BN_EPS):
        super().__init__()
        self.conv1 = SNConv2d(in_channels, out_channels, eps=sn_eps)
        self.conv2 = SNConv2d(out_channels, out_channels, eps=sn_eps)
        self.conv_sc = SNConv2d(in_channels, out_channels, 1, padding=0, eps=sn_eps)  # it always up-samples
        self.bn1 = ClassConditionalBatchNorm(in_channels, cond_dim, bn_eps, sn_eps=sn_eps)
        self.bn2 = ClassConditionalBatchNorm(out_channels, cond_dim, bn_eps, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Discriminator residual block (``D_wide``: hidden = out channels):
    ``pool(conv2(relu(conv1(relu?(x))))) + shortcut(x)``. The pre-activation ReLU is out of place,
    so a feature map handed to the next block stays as it is. The first block has none; it pools
    before its 1x1 shortcut conv, the others after it. DeepI2I's adaptor blocks are DBlocks without
    pooling."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, preactivation: bool,
                 sn_eps: float = SN_EPS):
        super().__init__()
        self.downsample, self.preactivation = downsample, preactivation
        self.conv1 = SNConv2d(in_channels, out_channels, eps=sn_eps)
        self.conv2 = SNConv2d(out_channels, out_channels, eps=sn_eps)
        self.conv_sc = (SNConv2d(in_channels, out_channels, 1, padding=0, eps=sn_eps)
                        if in_channels != out_channels or downsample else None)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_sc is None:
            return x
        if self.preactivation:
            x = self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        x = F.avg_pool2d(x, 2) if self.downsample else x
        return self.conv_sc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


def _attention_set(attention: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted({int(r) for r in attention}))


# ----------------------------------------------------------------------------- generator
class BigGANGenerator(nn.Module):
    """BigGAN's generator with hierarchical z and a shared class embedding, plus DeepI2I's feature inputs.

    ``forward(z, y, features)``: ``y = G.shared(c)`` is the class embedding (N, shared_dim) (the
    published G takes the embedding, not the class index); ``z`` (N, dim_z) is split into
    ``num_blocks + 1`` chunks, chunk 0 feeds the linear stem, chunk i+1 conditions block i together
    with ``y``. ``features`` maps a width to a map added to G's activation at that width
    (DeepI2I Eq. 5): the stem's 4x4 map, then each block's output. The caller applies the fusion
    weights (:class:`gpunit.deepi2i.models.DeepI2I`).
    """

    def __init__(self, resolution: int = 128, ch: int = 96, num_classes: int = 1000, dim_z: int = 120,
                 shared_dim: int = 128, attention: Iterable[int] = (64,), sn_eps: float = SN_EPS,
                 bn_eps: float = BN_EPS, ortho_init: bool = True):
        super().__init__()
        _check_resolution(resolution)
        num_blocks = len(_G_IN[resolution])
        if dim_z % (num_blocks + 1):
            raise ValueError(f"dim_z={dim_z} does not split into {num_blocks + 1} equal chunks "
                             f"(the hierarchical z of a {resolution} px BigGAN)")
        self.resolution, self.ch, self.num_classes = resolution, ch, num_classes
        self.dim_z, self.shared_dim, self.attention = dim_z, shared_dim, _attention_set(attention)
        self.z_chunk = dim_z // (num_blocks + 1)
        self.in_channels = [ch * m for m in _G_IN[resolution]]
        self.out_channels = [ch * m for m in _G_OUT[resolution]]
        self.block_resolutions = [BOTTOM_WIDTH * 2 ** (i + 1) for i in range(num_blocks)]
        unknown = set(self.attention) - set(self.block_resolutions)
        if unknown:
            raise ValueError(f"attention resolutions {sorted(unknown)} are not block outputs of a {resolution} px "
                             f"generator ({self.block_resolutions})")

        self.shared = nn.Embedding(num_classes, shared_dim)  # not spectrally normalised, as published
        self.linear = SNLinear(self.z_chunk, self.in_channels[0] * BOTTOM_WIDTH ** 2, eps=sn_eps)
        cond_dim = shared_dim + self.z_chunk
        self.blocks = nn.ModuleList()
        for cin, cout, res in zip(self.in_channels, self.out_channels, self.block_resolutions):
            stage = [GBlock(cin, cout, cond_dim, sn_eps, bn_eps)]
            if res in self.attention:
                stage.append(SelfAttention(cout, sn_eps))
            self.blocks.append(nn.ModuleList(stage))
        self.output_layer = nn.Sequential(BatchNorm(self.out_channels[-1], bn_eps), nn.ReLU(),
                                          SNConv2d(self.out_channels[-1], 3, eps=sn_eps))
        if ortho_init:
            orthogonal_init_(self)

    def channels_at(self, width: int) -> int:
        """Channels of G's activation at ``width`` (where a DeepI2I feature of that width is added)."""
        if width == BOTTOM_WIDTH:
            return self.in_channels[0]
        if width in self.block_resolutions:
            return self.out_channels[self.block_resolutions.index(width)]
        raise ValueError(f"a {self.resolution} px generator has no activation of width {width} "
                         f"(it has {[BOTTOM_WIDTH] + self.block_resolutions})")

    def forward(self, z: torch.Tensor, y: torch.Tensor,
                features: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        features = features or {}
        for width in features:
            self.channels_at(width)  # a clear error for a width G does not have
        zs = torch.split(z, self.z_chunk, 1)
        conds = [torch.cat([y, chunk], 1) for chunk in zs[1:]]  # embedding first
        h = self.linear(zs[0]).view(z.shape[0], -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
        if BOTTOM_WIDTH in features:
            h = h + features[BOTTOM_WIDTH]
        for stage, cond, width in zip(self.blocks, conds, self.block_resolutions):
            h = stage[0](h, cond)
            if width in features:  # after the residual block, before attention (docs/deepi2i.md, differences)
                h = h + features[width]
            for attention in stage[1:]:
                h = attention(h)
        return torch.tanh(self.output_layer(h))


# ----------------------------------------------------------------------------- discriminator
class DiscriminatorTrunk(nn.Module):
    """BigGAN's discriminator without its output layers: ``blocks`` of DBlocks (+ attention), 3 -> ch ->
    2ch -> 4ch -> 8ch -> 16ch (each halving the size), then 16ch -> 16ch at the same size (128 px).

    ``trunk(x)`` returns the last block's output and the block outputs at the widths DeepI2I fuses
    (:func:`fused_resolutions`: 32, 16, 8, 4 at 128 px; of two blocks with one width, the later wins).
    """

    def __init__(self, resolution: int = 128, ch: int = 96, attention: Iterable[int] = (64,),
                 sn_eps: float = SN_EPS, ortho_init: bool = True):
        super().__init__()
        _check_resolution(resolution)
        self.resolution, self.ch, self.attention = resolution, ch, _attention_set(attention)
        outs = [ch * m for m in _D_OUT[resolution]]
        ins = [3] + outs[:-1]
        self.block_resolutions = discriminator_block_resolutions(resolution)
        self.out_channels = outs
        unknown = set(self.attention) - set(self.block_resolutions)
        if unknown:
            raise ValueError(f"attention resolutions {sorted(unknown)} are not block outputs of a {resolution} px "
                             f"discriminator ({sorted(set(self.block_resolutions))})")
        self.feature_resolutions = fused_resolutions(resolution)
        self.blocks = nn.ModuleList()
        for i, (cin, cout, res) in enumerate(zip(ins, outs, self.block_resolutions)):
            stage = [DBlock(cin, cout, downsample=i < len(outs) - 1, preactivation=i > 0, sn_eps=sn_eps)]
            if res in self.attention:
                stage.append(SelfAttention(cout, sn_eps))
            self.blocks.append(nn.ModuleList(stage))
        if ortho_init:
            orthogonal_init_(self)

    def feature_channels(self) -> dict[int, int]:
        """Channels of each returned feature map, by width."""
        found = {}
        for cout, res in zip(self.out_channels, self.block_resolutions):
            if res in self.feature_resolutions:
                found[res] = cout
        return found

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        h, features = x, {}
        for stage, res in zip(self.blocks, self.block_resolutions):
            for module in stage:
                h = module(h)
            if res in self.feature_resolutions:
                features[res] = h
        return h, features


def rectified_last(h: torch.Tensor, features: dict[int, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """ReLU of the last block's output ``h``, and ``features`` with the map that *is* ``h`` replaced by it.

    The published head applies ReLU in place to the last block's output, which is also the deepest
    returned feature map (4x4 at 128 px): that feature therefore comes out rectified (>= 0), for the
    discriminator and for the encoder built from it."""
    rectified = F.relu(h)
    return rectified, {res: (rectified if f is h else f) for res, f in features.items()}


class BigGANDiscriminator(DiscriminatorTrunk):
    """The projection discriminator: ``linear(s) + <embed(y), s>`` with ``s`` the spatial sum of the
    rectified last feature map. ``forward(x, y)`` gives logits (N, 1); with ``return_features=True``
    also the feature maps by width (the deepest one rectified, as published)."""

    def __init__(self, resolution: int = 128, ch: int = 96, num_classes: int = 1000,
                 attention: Iterable[int] = (64,), sn_eps: float = SN_EPS, ortho_init: bool = True):
        super().__init__(resolution, ch, attention, sn_eps, ortho_init=False)
        self.num_classes = num_classes
        self.linear = SNLinear(self.out_channels[-1], 1, eps=sn_eps)
        self.embed = SNEmbedding(num_classes, self.out_channels[-1], eps=sn_eps)
        if ortho_init:
            orthogonal_init_(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor, return_features: bool = False):
        h, features = rectified_last(*self.trunk(x))
        s = h.sum([2, 3])  # (N, 16ch)
        logits = self.linear(s) + (self.embed(y) * s).sum(1, keepdim=True)
        return (logits, features) if return_features else logits
