"""Loss functions of both stages as pure functions (paper Eq. 1-6).

Stage I (Sec. 3.2):  L_arec + L_srec + L_dis + L_reg                       (Eq. 1)
Stage II (Sec. 4):   L_adv + l1 L_con + l2 L_sty + l3 L_msk + l4 L_rec (+ L_id for faces)
DeepI2I (Wang et al., NeurIPS 2020, Sec. 3.1): l_adv L_adv + l_rec L_rec  (Eq. 4), and BigGAN's hinge loss.
The trainers weight these terms by ``cfg.loss.lambda_*``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.engine.pretrained import find_weights, load_state_dict

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


# ----------------------------------------------------------------------------- adversarial
def adv_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Non-saturating GAN loss on logits: -log D(.) for real targets, -log(1 - D(.)) for fake (Eq. 3)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor,
               loss_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Zero-centred gradient penalty on real images: 0.5 * E ||grad_y D(y)||^2 (Mescheder et al., 2018).

    ``loss_scale`` (fp16 training) scales the logits before differentiating so that small
    gradients do not underflow, and is divided out again in fp32.
    """
    (grad,) = torch.autograd.grad(real_logits.sum() * loss_scale, real_images, create_graph=True)
    grad = grad.float() / loss_scale
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- Stage II terms
def content_loss(content_of_translation: torch.Tensor, content_of_input: torch.Tensor) -> torch.Tensor:
    """L_con = || Ec(y_hat) - Ec(x) ||_1 (Eq. 5)."""
    return F.l1_loss(content_of_translation, content_of_input)


def style_loss(style_feat_fake: torch.Tensor, style_feat_real: torch.Tensor) -> torch.Tensor:
    """L_sty = || f_D(y_hat) - f_D(y) ||_1, f_D = channel means of a middle layer of D (Eq. 4)."""
    return F.l1_loss(style_feat_fake, style_feat_real.detach())


def mask_loss(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_msk = sum_l || m_l ||_1, as the mean activation of each mask (Eq. 6): keeps masks sparse."""
    if not masks:
        return torch.zeros(())
    return torch.stack([m.mean() for m in masks]).sum()


# ----------------------------------------------------------------------------- DeepI2I and BigGAN
def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BigGAN's discriminator hinge loss, which the published DeepI2I code trains with (its default here):
    ``(E[relu(1 - D(y, l))], E[relu(1 + D(y_hat, c))])``, returned apart as the published code logs them."""
    return F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator side of the hinge loss: ``-E[D(y_hat, c)]``."""
    return -fake_logits.mean()


def log_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepI2I Eq. 1 for the discriminator: ``(-E[log D(y, l)], -E[log(1 - D(y_hat, c))])`` on logits."""
    return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()


def log_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for the generator in its non-saturating form, ``-E[log D(y_hat, c)]``."""
    return F.softplus(-fake_logits).mean()


GAN_LOSSES = {"hinge": (hinge_d_loss, hinge_g_loss), "log": (log_d_loss, log_g_loss)}


def gan_losses(kind: str):
    """(d_loss, g_loss) functions of ``kind``: "hinge" (published code) or "log" (the paper's Eq. 1)."""
    if kind not in GAN_LOSSES:
        raise ValueError(f"loss.adversarial must be one of {sorted(GAN_LOSSES)}, got '{kind}'")
    return GAN_LOSSES[kind]


def feature_reconstruction_terms(feat_translation: Mapping[int, torch.Tensor], feat_input: Mapping[int, torch.Tensor],
                                 weights: Mapping[int, float], distance: str = "mse") -> dict[int, torch.Tensor]:
    """DeepI2I's L_rec (Eq. 3) per discriminator width l: ``alpha_l * d(Psi_l(y_hat), Psi_l(x))``.

    Row i of ``feat_translation`` is compared with row i of ``feat_input`` (each translation with its own
    input); ``d`` is the mean over elements of the squared difference ("mse", the published code's) or
    of the absolute difference ("l1", Eq. 3). Widths with weight 0 are skipped. Sum the terms for L_rec.
    """
    if distance not in ("mse", "l1"):
        raise ValueError(f"loss.reconstruction must be 'mse' or 'l1', got '{distance}'")
    dist = F.mse_loss if distance == "mse" else F.l1_loss
    return {res: w * dist(feat_translation[res], feat_input[res]) for res, w in weights.items() if w != 0}


# ----------------------------------------------------------------------------- perceptual
class VGGPerceptualLoss(nn.Module):
    """L1 between VGG19 relu1_1 ... relu5_1 features (weights 0.3 each, as published)."""

    SLICES = (2, 7, 12, 21, 30)  # ends of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in vgg19.features
    WEIGHTS = (0.3, 0.3, 0.3, 0.3, 0.3)

    def __init__(self, weights_path: str | None = None, state_dict: dict | None = None):
        """``state_dict`` (tests) skips the file lookup; otherwise the torchvision VGG19 ImageNet
        weights are read from ``weights_path`` or the torch hub cache."""
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        if state_dict is None:
            path = find_weights(VGG19_FILE, VGG19_URL, weights_path, what="VGG19 (perceptual loss)",
                                option="loss.vgg_weights (or loss.perceptual=none to train without it)")
            state_dict = load_state_dict(path)
        net.load_state_dict(state_dict)
        starts = (0,) + self.SLICES[:-1]
        self.slices = nn.ModuleList(net.features[a:b] for a, b in zip(starts, self.SLICES))
        self.requires_grad_(False).eval()
        # ImageNet statistics for inputs in [-1, 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 2 - 1)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 2)

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for block in self.slices:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fx, ft = self.features(x), self.features(target)
        return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(self.WEIGHTS, fx, ft))


def build_perceptual(kind: str, weights_path: str | None = None) -> VGGPerceptualLoss | None:
    """``"vgg19"`` -> the VGG loss; ``"none"`` -> None (the reconstruction losses keep only L1/L2)."""
    if kind == "none":
        return None
    if kind == "vgg19":
        return VGGPerceptualLoss(weights_path)
    raise ValueError(f"loss.perceptual must be 'vgg19' or 'none', got '{kind}'")


def perceptual(vgg: VGGPerceptualLoss | None, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return vgg(x, target) if vgg is not None else x.new_zeros(())
