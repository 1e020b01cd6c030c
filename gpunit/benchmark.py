"""Speed measurements: Stage I step, Stage II step (G, D, both), the data loader, and translation.

Each measurement runs the real trainer code on a small throw-away data set of random images at
the config's resolution (so the paper's configs can be timed without their data), times
``steps`` iterations after ``warmup`` and reports the median milliseconds per step and images per
second (synchronised on CUDA), plus peak memory (CUDA max allocated, or the process's RSS on CPU).
"""
from __future__ import annotations

import copy
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gpunit.checkpoints import save_content_encoder
from gpunit.config import Stage1Config, Stage2Config
from gpunit.models import ContentEncoder
from gpunit.translate import Translator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _timed(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _row(name: str, times: list[float], images_per_call: int, device: torch.device) -> dict:
    ms = statistics.median(times) * 1000
    return {"measure": name, "ms_per_step": ms, "images_per_s": images_per_call / (ms / 1000),
            "peak_memory_mb": _peak_memory_mb(device)}


def _random_images(folder: Path, count: int, size: int, seed: int, mask: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        if mask:
            a = (rng.random((size, size)) > 0.5).astype(np.uint8) * 255
        else:
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i:05d}.png")


def benchmark_stage2(cfg: Stage2Config, device: torch.device, steps: int = 10, warmup: int = 3) -> list[dict]:
    from gpunit.train.stage2 import Stage2Trainer

    cfg = copy.deepcopy(cfg)
    size, batch = cfg.model.image_size, cfg.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = max(2 * batch, 8)
        _random_images(tmp / "source", count, size, 0)
        _random_images(tmp / "target", count, size, 1)
        cfg.data.source, cfg.data.target = [str(tmp / "source")], [str(tmp / "target")]
        cfg.data.source_counts = cfg.data.target_counts = []
        m = cfg.model  # a random content encoder of the configured widths: timing needs no trained weights
        cfg.content_encoder = str(save_content_encoder(
            ContentEncoder(m.image_size, m.content_size, m.base_channels, m.max_channels), tmp / "ec.pt"))
        trainer = Stage2Trainer(cfg, device)
        step = [0]

        def batch_once():
            step[0] += 1
            return trainer.next_batch(step[0])

        rows = [_row("stage2 loader", _timed(lambda: next(trainer.loader), steps, warmup, device), 2 * batch, device)]
        b = batch_once()
        rows.append(_row("stage2 G step", _timed(lambda: trainer.g_step(b), steps, warmup, device), 2 * batch, device))
        rows.append(_row("stage2 D step", _timed(lambda: trainer.d_step(b), steps, warmup, device), 2 * batch, device))
        rows.append(_row("stage2 step (G+D+EMA, data)", _timed(lambda: trainer.train_step(step[0] + 1), steps,
                                                               warmup, device), 2 * batch, device))
        rows.append(_row("stage2 step, published code", _timed(lambda: published_step(trainer, b), steps, warmup,
                                                                device), 2 * batch, device))
        translator = Translator(trainer.encoder, trainer.generator_ema, trainer.sampler).to(device)
        x = b["x"]
        rows.append(_row("translate (exemplar)", _timed(lambda: translator.translate(x, style=x), steps, warmup,
                                                        device), len(x), device))
    return rows


def published_step(trainer, b: dict) -> None:
    """One Stage II iteration done the way the authors' train.py does it, with our modules, as the
    reference for speed-ups: Ec left in train mode (spectral-norm power iteration on every call),
    the style encoded anew by each of the three G calls, every G layer's RGB head computed, D's
    weight gradients computed (and discarded) in the G step, the translation recomputed for the D
    step, plain (for-loop) Adam, fp32."""
    from gpunit import losses

    G, D, Ec, lam = trainer.generator, trainer.discriminator, trainer.encoder, trainer.cfg.loss
    if not hasattr(trainer, "plain_adam"):
        t = trainer.cfg.train
        trainer.plain_adam = [torch.optim.Adam(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                               foreach=False) for params in (trainer.g_params, trainer.d_params)]
    opt_g, opt_d = trainer.plain_adam
    def rgb_head(layer, inputs, out):  # computed and dropped, as the published G does at every layer
        layer.to_rgb(out)

    hooks = [layer.register_forward_hook(rgb_head) for layer in G.model[:-1]]
    Ec.train()
    try:
        x, y, y_style = b["x"], b["y"], b["y_style"]
        with torch.no_grad():
            c_x, c_y = Ec(x, all_features=True), Ec(y, all_features=True)
        y_hat, masks = G(c_x, G.style_encoder(y_style))
        y_bar, _ = G(c_y, G.style_encoder(y_style), use_skip=lam.use_allskip)
        logits, f_d = D(torch.cat([y_hat, y]), lam.style_layer)
        f_fake, f_real = f_d.chunk(2)
        g_loss = (losses.adv_loss(logits.chunk(2)[0], True) + lam.lambda_con * losses.content_loss(Ec(y_hat), c_x[0])
                  + lam.lambda_sty * losses.style_loss(f_fake, f_real) + lam.lambda_msk * losses.mask_loss(masks)
                  + lam.lambda_rec * torch.nn.functional.l1_loss(y_bar, y))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        with torch.no_grad():
            y_fake, _ = G(c_x, G.style_encoder(y_style))
        y_real = y.detach().requires_grad_(True)
        fake_logits, real_logits = D(torch.cat([y_fake, y_real]))[0].chunk(2)
        d_loss = (losses.adv_loss(real_logits, True) + losses.adv_loss(fake_logits, False)
                  + losses.r1_penalty(real_logits, y_real))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
    finally:
        for h in hooks:
            h.remove()
        Ec.eval()


def benchmark_stage1(cfg: Stage1Config, device: torch.device, steps: int = 10, warmup: int = 3) -> list[dict]:
    from gpunit.train.stage1 import Stage1Trainer

    cfg = copy.deepcopy(cfg)
    size, batch = cfg.model.image_size, cfg.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = max(batch, 4)
        for root in ("pairs", "unpaired"):
            for c, name in enumerate(("0_a", "1_b")):
                _random_images(tmp / root / name, count, size, c)
                _random_images(tmp / f"{root}_mask" / name, count, size, c, mask=True)
        d = cfg.data
        d.paired_root, d.paired_mask_root = str(tmp / "pairs"), str(tmp / "pairs_mask")
        d.unpaired_root, d.unpaired_mask_root = str(tmp / "unpaired"), str(tmp / "unpaired_mask")
        d.images_per_domain, d.test_root = 0, None
        trainer = Stage1Trainer(cfg, device)
        counter = [0]

        def step():
            counter[0] += 1
            trainer.train_step(counter[0])

        return [_row("stage1 step (data)", _timed(step, steps, warmup, device), trainer.images_per_step, device)]


def format_table(rows: list[dict], header: str = "") -> str:
    lines = [header] if header else []
    lines.append(f"{'measure':<30} {'ms/step':>10} {'images/s':>10} {'peak MB':>10}")
    for r in rows:
        lines.append(f"{r['measure']:<30} {r['ms_per_step']:>10.1f} {r['images_per_s']:>10.1f} {r['peak_memory_mb']:>10.0f}")
    return "\n".join(lines)
