"""Style sampler: maps unit Gaussian noise to Stage II style codes (paper Sec. 4, "Style sampling").

The mapping network of GLANN's implicit maximum likelihood step (Hoshen et al., CVPR 2019), fitted
after training by :mod:`gpunit.gp_unit.sampler_fit`. Use it in eval mode (running BatchNorm
statistics); the published inference script leaves it in train mode by mistake.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class StyleSampler(nn.Module):
    def __init__(self, noise_dim: int = 128, hidden_dim: int = 128, style_dim: int = 256):
        super().__init__()
        self.noise_dim = noise_dim
        self.lin1 = nn.Linear(noise_dim, hidden_dim, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_dim)
        self.lin_out = nn.Linear(hidden_dim, style_dim, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.lin1(z)))
        h = torch.relu(self.bn2(self.lin2(h)))
        return self.lin_out(h)
