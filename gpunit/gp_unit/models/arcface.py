"""Identity loss for face translation (paper Sec. 5: Cat/Dog -> Human Face and Face -> MetFace
use "an additional identity loss [10] with weight 1").

The loss compares ArcFace embeddings of the translation and the target image, as in the
published GP-UNIT code, which takes it from pixel2style2pixel: an IR-SE50 backbone (Deng et al.,
ArcFace; weights ``model_ir_se50.pth`` from TreB1eN/InsightFace_Pytorch). Module names and
shapes below follow that file so it loads strictly.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.engine.checkpoints import load_into
from gpunit.engine.pretrained import find_weights, load_state_dict

IRSE50_WEIGHTS_FILE = "model_ir_se50.pth"
IRSE50_WEIGHTS_URL = "https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view?usp=sharing"

# (output channels, units) of the four IR-SE50 stages; each stage's first unit halves the size.
IRSE50_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
FACE_SIZE = 112
# The face region of a 256x256 aligned face (top, bottom, left, right), as published.
FACE_CROP_256 = (35, 223, 32, 220)


class SEModule(nn.Module):
    """Squeeze-and-excitation channel gate; 1x1 convs without bias, as in the weights file."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """Pre-activation residual unit: BN-conv3x3-PReLU-conv3x3(stride)-BN-SE plus a shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if in_ch == out_ch:  # a 1x1 max pool is plain subsampling: no parameters in the file
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                                nn.BatchNorm2d(out_ch))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            SEModule(out_ch, 16),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 for 112x112 faces in [-1, 1] -> (N, 512) l2-normalised embeddings."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, in_ch = [], 64
        for out_ch, num_units in IRSE50_STAGES:
            units += [BottleneckIRSE(in_ch if k == 0 else out_ch, out_ch, 2 if k == 0 else 1)
                      for k in range(num_units)]
            in_ch = out_ch
        self.body = nn.Sequential(*units)  # 112 -> 7
        final = FACE_SIZE >> len(IRSE50_STAGES)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * final * final, 512),
            nn.BatchNorm1d(512),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)  # (N, 512)


def load_irse50(weights_path: str | os.PathLike | None = None) -> IRSE50:
    """IR-SE50 with the published ``model_ir_se50.pth`` (found as in :mod:`gpunit.engine.pretrained`)."""
    path = find_weights(IRSE50_WEIGHTS_FILE, IRSE50_WEIGHTS_URL, path=weights_path,
                        what="IR-SE50 identity network (identity loss for faces)",
                        option="loss.identity_weights")
    net = IRSE50()
    state = dict(load_state_dict(path))
    # Files saved before PyTorch 0.4.1 lack the BN step counters, which eval mode never reads.
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    return load_into(net, state, f"IR-SE50 ArcFace backbone ({IRSE50_WEIGHTS_FILE} from {IRSE50_WEIGHTS_URL})",
                     str(path))


def face_crop(x: torch.Tensor) -> torch.Tensor:
    """The published 256px face crop ``x[:, :, 35:223, 32:220]``, scaled to the size of ``x``."""
    h, w = x.shape[-2:]
    top, bottom, left, right = FACE_CROP_256
    return x[:, :, round(top * h / 256):round(bottom * h / 256), round(left * w / 256):round(right * w / 256)]


class IdentityLoss(nn.Module):
    """``loss(y_hat, y)``: mean over the batch of 1 - cos(ArcFace(y_hat), ArcFace(y)); images in [-1, 1].

    The backbone is frozen and stays in eval mode even when a parent module calls ``.train()``.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 facenet: IRSE50 | None = None):
        """``facenet`` (tests, benchmarks) skips the file lookup."""
        super().__init__()
        facenet = load_irse50(weights_path) if facenet is None else facenet
        self.facenet = facenet.requires_grad_(False).eval()
        self.to(device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.facenet.eval()  # BN statistics and dropout of a pretrained embedding must not change
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected face images of shape (N, 3, H, W), got {tuple(x.shape)}")
        return self.facenet(F.adaptive_avg_pool2d(face_crop(x), FACE_SIZE))  # (N, 512)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f_hat, f = self.embed(y_hat), self.embed(y).detach()
        return (1 - (f_hat * f).sum(dim=1)).mean()  # unit vectors: the dot product is the cosine
