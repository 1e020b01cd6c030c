"""Output diversity with LPIPS (paper Sec. 5.1, Table 1 "Diversity").

For each input we translate K times (random style codes or exemplars) and average the LPIPS
distance over all K(K-1)/2 pairs of outputs; the score is that mean over all inputs.
LPIPS's linear layers ship with the ``lpips`` package, but its AlexNet backbone is
torchvision's ImageNet download, so we load that file from disk.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import lpips
import torch
from torchvision.models import AlexNet_Weights

from gpunit.engine.pretrained import find_weights, load_state_dict

ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"


def alexnet_features_to_lpips(state_dict: dict, lpips_net: torch.nn.Module) -> dict:
    """Rename torchvision AlexNet ``features.<i>.*`` keys to lpips's ``slice<k>.<i>.*``.

    lpips splits ``alexnet().features`` into slices, keeping each layer's index as its name,
    so the mapping follows from the slices' children; the classifier is not used.
    """
    slice_of_index = {index: slice_name for slice_name, part in lpips_net.named_children()
                      for index in part._modules}
    renamed = {}
    for key, value in state_dict.items():
        prefix, _, rest = key.partition(".")
        index, _, param = rest.partition(".")
        if prefix == "features" and index in slice_of_index:
            renamed[f"{slice_of_index[index]}.{index}.{param}"] = value
    return renamed


def build_lpips_alex() -> lpips.LPIPS:
    """LPIPS (AlexNet) with its packaged linear layers and a random backbone (pnet_rand: no download)."""
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)


def load_lpips_alex(alexnet_weights: str | os.PathLike | None = None) -> tuple[lpips.LPIPS, Path]:
    """LPIPS (AlexNet) with torchvision's AlexNet weights file found on disk; returns (model, file used)."""
    path = find_weights(ALEXNET_WEIGHTS_FILE, AlexNet_Weights.IMAGENET1K_V1.url, path=alexnet_weights,
                        what="AlexNet (LPIPS diversity)", option="--lpips-weights")
    model = build_lpips_alex()
    backbone = alexnet_features_to_lpips(load_state_dict(path), model.net)
    missing = sorted(set(model.net.state_dict()) - set(backbone))
    if missing:
        raise ValueError(f"{path} is not torchvision's AlexNet weights file {ALEXNET_WEIGHTS_FILE} "
                         f"(no 'features.*' weights for {missing}); download it from "
                         f"{AlexNet_Weights.IMAGENET1K_V1.url}")
    model.net.load_state_dict(backbone)
    return model.eval(), path


class LPIPSDiversity:
    """Mean pairwise LPIPS (AlexNet) among the K outputs of each input, averaged over inputs."""

    def __init__(self, alexnet_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 pairs_per_batch: int = 64):
        self.model, self.weights_file = load_lpips_alex(alexnet_weights)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.pairs_per_batch = pairs_per_batch

    @torch.inference_mode()
    def __call__(self, groups: torch.Tensor) -> float:
        """groups: (N, K, 3, H, W) in [-1, 1], K >= 2 outputs per input -> mean pairwise LPIPS."""
        if groups.ndim != 5 or groups.shape[2] != 3 or groups.shape[1] < 2:
            raise ValueError(f"expected (N, K >= 2, 3, H, W) translation groups, got {tuple(groups.shape)}")
        if groups.abs().max() > 2:  # slight overshoot from a generator is fine
            raise ValueError("expected images in [-1, 1] (got values beyond +-2; 0..255 images?)")
        pairs = torch.combinations(torch.arange(groups.shape[1]), r=2)  # all (i, j), i < j
        per_input = []
        for group in groups:  # one input at a time keeps memory at K images
            group = group.to(self.device, torch.float32)
            distances = torch.cat([self.model(group[chunk[:, 0]], group[chunk[:, 1]]).flatten()
                                   for chunk in pairs.split(self.pairs_per_batch)])
            per_input.append(distances.mean())
        return torch.stack(per_input).mean().item()
