"""The two networks of GP-UNIT's Table 1 protocol, wired as StarGAN v2's metric code wires them.

- FID: torchvision's Inception-v3 (IMAGENET1K_V1, ``inception_v3_google-0cc3c7bd.pth``) cut into StarGAN v2's
  four blocks up to Mixed_7c and its 2048-d global average pool. ``Inception3.forward`` is never called, so
  torchvision's ``transform_input`` is bypassed: the network sees ImageNet-normalised input, as in the paper.
- LPIPS: torchvision's AlexNet (``alexnet-owt-7be5be79.pth``) ReLU outputs with LPIPS v0.1's linear
  layers, which ship with the ``lpips`` package and hold the same tensors as StarGAN v2's
  ``metrics/lpips_weights.ckpt``. StarGAN v2 normalises each map as ``f * rsqrt(sum_c f^2 + 1e-10)``
  (the package divides by ``norm + 1e-10``) and averages each layer over (batch, 1, H, W).

The weights files are read from ``$TORCH_HOME/hub/checkpoints/`` (or a given path) under torchvision's names.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path

import lpips
import torch
import torchvision
from torch import nn
from torchvision.models import Inception_V3_Weights

from gpunit.engine.pretrained import find_weights, load_state_dict
from gpunit.metrics.lpips_diversity import load_lpips_alex

INCEPTION_URL = Inception_V3_Weights.IMAGENET1K_V1.url
INCEPTION_WEIGHTS_FILE = os.path.basename(INCEPTION_URL)  # inception_v3_google-0cc3c7bd.pth
LPIPS_EPS = 1e-10


def describe_weights(path: str | os.PathLike) -> dict:
    """File, sha256 and whether the hash matches the prefix in the file name (torch hub's convention,
    e.g. ``-0cc3c7bd.pth``): a stand-in file under a published name shows up as ``published: False``."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha256 = digest.hexdigest()
    prefix = torch.hub.HASH_REGEX.search(path.name)
    return {"file": str(path.resolve()), "sha256": sha256,
            "published": bool(prefix and prefix.group(1) and sha256.startswith(prefix.group(1)))}


def stargan_inception_blocks(net: torchvision.models.Inception3) -> nn.Sequential:
    """StarGAN v2's InceptionV3: block1..block4 of torchvision's layers, then the pool flattened to (N, 2048)."""
    return nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),  # block1
        net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),  # block2
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,  # block3
        net.Mixed_6d, net.Mixed_6e,
        net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d((1, 1)),  # block4
        nn.Flatten(),
    )


class PaperInception(nn.Module):
    """ImageNet-normalised (N, 3, 299, 299) images -> (N, 2048) float32 pool features (StarGAN v2's FID)."""

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        path = find_weights(INCEPTION_WEIGHTS_FILE, INCEPTION_URL, path=weights_path,
                            what="torchvision Inception-v3 (paper-protocol FID)", option="--inception-weights")
        # aux_logits=True: the published file holds AuxLogits; no init, the file overwrites every weight.
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            net.load_state_dict(load_state_dict(path))
        except RuntimeError as err:
            raise ValueError(f"{path} is not torchvision's Inception-v3 weights file {INCEPTION_WEIGHTS_FILE} "
                             f"(download it from {INCEPTION_URL}): {err}") from err
        self.blocks = stargan_inception_blocks(net)
        self.weights_file = path
        self.device = torch.device(device)
        self.to(self.device).eval()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(images.to(self.device, torch.float32)).float()


class PaperLPIPS(nn.Module):
    """StarGAN v2's LPIPS on (1, 3, H, W) images in [-1, 1]: per-image features, then pair distances.

    Features are computed once per image and reused for every pair it is in: the same numbers as
    StarGAN v2's ``lpips(x, y)``, which recomputes both images' features for each pair.
    """

    def __init__(self, alexnet_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        model, self.weights_file = load_lpips_alex(alexnet_weights)
        self.scaling, self.alexnet, self.lins = model.scaling_layer, model.net, model.lins
        self.linear_weights_file = Path(inspect.getfile(lpips.LPIPS)).parent / "weights" / "v0.1" / "alex.pth"
        self.device = torch.device(device)
        self.to(self.device).eval()

    @torch.inference_mode()
    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised ReLU maps of one image, (1, C_l, H_l, W_l) for the 5 layers."""
        maps = self.alexnet(self.scaling(image.to(self.device, torch.float32)))
        return [f * torch.rsqrt(torch.sum(f ** 2, dim=1, keepdim=True) + LPIPS_EPS) for f in maps]

    @torch.inference_mode()
    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor], per_layer: bool = False):
        """LPIPS between two images' features: a 0-d tensor (or the 5 layer terms with ``per_layer``)."""
        terms = [torch.mean(lin((a - b) ** 2)) for a, b, lin in zip(fx, fy, self.lins)]
        if per_layer:
            return terms
        total = 0
        for term in terms:  # summed in layer order, as StarGAN v2 does
            total = total + term
        return total
