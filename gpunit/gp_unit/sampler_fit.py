"""Fitting the style sampler after Stage II (paper Sec. 4, "Style sampling").

GLANN's implicit maximum likelihood estimation (Hoshen, Li & Malik, CVPR 2019), as the published
code runs it: each epoch draws 2x as many noise vectors as there are style codes, maps them
through the sampler, matches every real style code to its nearest generated code, and regresses the
matched noise onto the real codes (MSE). Nearest neighbours are computed with torch (no faiss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gpunit.engine.progress import progress_bar
from gpunit.gp_unit.models import StyleSampler


@torch.no_grad()
def collect_style_codes(style_encoder, dataset, batch_size: int, device: torch.device,
                        num_workers: int = 0) -> torch.Tensor:
    """Es(y) for every image of ``dataset`` (items with key ``x``): (N, style_dim) on the CPU."""
    was_training = style_encoder.training
    style_encoder.eval()
    codes = [style_encoder(batch["x"].to(device)).cpu()
             for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)]
    style_encoder.train(was_training)
    return torch.cat(codes)


def oversample_rare_styles(codes: torch.Tensor) -> torch.Tensor:
    """``mitigate_style_bias``: append the styles farthest from the mean, halving the count each
    round (one round per 1000 codes), so rare styles weigh more in the fit (published procedure)."""
    order = (codes - codes.mean(0, keepdim=True)).abs().sum(1).argsort()
    extra, num = [], len(codes)
    for _ in range(len(codes) // 1000):
        num = max(num // 2, 1)
        extra.append(codes[order[-num:]])
    return torch.cat([codes, *extra])


def nearest_sample_distance(sampler: StyleSampler, codes: torch.Tensor, num_samples: int = 2048) -> float:
    """Mean L2 distance from each real code to its nearest sampled code (eval mode): lower = better coverage."""
    was_training = sampler.training
    sampler.eval()
    with torch.no_grad():
        device = next(sampler.parameters()).device
        samples = sampler(torch.randn(num_samples, sampler.noise_dim, device=device))
        dist = torch.cdist(codes.to(device), samples).min(1).values.mean()
    sampler.train(was_training)
    return float(dist)


def fit_sampler(sampler: StyleSampler, codes: torch.Tensor, epochs: int, batch_size: int = 128,
                lr: float = 1e-3, decay_epochs: int = 50, decay_rate: float = 0.5, progress: bool = True,
                refit: bool = False) -> list[float]:
    """Fit ``sampler`` to ``codes`` (N, style_dim); returns the mean loss of each epoch (on the codes
    scaled to unit RMS).

    A new sampler starts from its initialisation at the codes' unit scale; ``refit`` continues from
    a sampler fitted before (``sampler.warm_start``)."""
    device = next(sampler.parameters()).device
    # Fit at unit RMS and scale the (bias-free) output layer back at the end: the same fit for codes
    # of any scale. Stage II at a high learning rate can leave codes of RMS ~0.04, which a new sampler
    # fitted on the raw codes overshoots by 3x and G renders as noise (docs/gp_unit.md, "How the demo draws stars").
    scale = codes.pow(2).mean().sqrt().clamp(min=1e-12).to(device)
    codes = codes.to(device) / scale
    if refit:  # the sampler fits codes at their own scale: continue from the same function
        with torch.no_grad():
            sampler.lin_out.weight /= scale
    n = len(codes)
    bs = min(batch_size, n)
    batches = n // bs
    history = []
    bar = progress_bar(range(epochs), desc="style sampler", disable=not progress, leave=False)
    for epoch in bar:
        # A fresh optimiser each epoch with a step-decayed rate, as in GLANN's code.
        opt = torch.optim.Adam(sampler.parameters(), lr=lr * decay_rate ** (epoch // decay_epochs),
                               betas=(0.5, 0.999), weight_decay=1e-5)
        sampler.train()
        noise = torch.randn(2 * batches * bs, sampler.noise_dim, device=device)
        with torch.no_grad():  # train-mode BatchNorm, batch by batch, as when the samples are drawn
            generated = torch.cat([sampler(chunk) for chunk in noise.split(bs)])
        nearest = torch.cdist(codes, generated).argmin(1)  # the IMLE match of every real code
        order = torch.randperm(n, device=device)
        total = 0.0
        for i in range(batches):
            idx = order[i * bs:(i + 1) * bs]
            loss = F.mse_loss(sampler(noise[nearest[idx]]), codes[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        history.append(float(total) / batches)
        if progress and (epoch % 20 == 0 or epoch == epochs - 1):
            # no refresh of its own: tqdm's count of an iterated bar is stale between its own redraws
            bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    with torch.no_grad():
        sampler.lin_out.weight *= scale
    sampler.eval()
    return history
