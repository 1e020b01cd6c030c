"""Speed measurements: Stage I step, Stage II step (G, D, both), the data loader, and translation.

Each measurement runs the real trainer code, on the config's Stage II image folders when they
exist or else on a small throw-away set of random images at the config's resolution (so the
paper's configs can be timed without their data), times ``steps`` iterations after ``warmup`` and reports the median milliseconds per step and images per
second (synchronised on CUDA), plus peak memory (CUDA max allocated, or the process's RSS on CPU).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import resource
import statistics
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gpunit import losses
from gpunit.engine import flops, precision_probe
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.gp_unit.config import Stage1Config, Stage2Config
from gpunit.gp_unit.models import ContentEncoder
from gpunit.gp_unit.models.arcface import IRSE50, IdentityLoss
from gpunit.gp_unit.models.discriminator import DownResBlock
from gpunit.gp_unit.models.generator import AdaResBlock, DynamicSkipLayer
from gpunit.gp_unit.stage1 import Stage1Trainer
from gpunit.gp_unit.stage2 import Stage2Trainer, generator_loss_weights
from gpunit.gp_unit.translator import Translator
from gpunit.gp_unit.weights import save_content_encoder
from gpunit.losses import VGGPerceptualLoss, build_perceptual
from gpunit.nn import upsample_nearest

log = logging.getLogger("gpunit.gp_unit.benchmark")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _timed(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    return _timed_in_turns({"fn": fn}, steps, warmup, device)["fn"]


def _timed_in_turns(fns: dict, steps: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turns (a, b, a, b, ...) so that a shared
    machine's drift hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
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


@contextlib.contextmanager
def stage2_trainers(cfg: Stage2Config, device: torch.device):
    """(ours, reference): a Stage II trainer as configured and one in plain fp32 (no autocast,
    channels_last or compile) for the published step, with the same initial weights and a random
    content encoder of the configured widths. They read the config's image folders when these exist
    (so the loader row measures the real decoding), else a throw-away set of random images."""

    cfg = copy.deepcopy(cfg)
    size, batch = cfg.model.image_size, cfg.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = cfg.data.source + cfg.data.target
        if not folders or not all(Path(f).is_dir() for f in folders):
            log.info("data folders not found: timing on random %dx%d images", size, size)
            count = max(2 * batch, 8)
            _random_images(tmp / "source", count, size, 0)
            _random_images(tmp / "target", count, size, 1)
            cfg.data.source, cfg.data.target = [str(tmp / "source")], [str(tmp / "target")]
            cfg.data.source_counts = cfg.data.target_counts = []
        m = cfg.model
        cfg.content_encoder = str(save_content_encoder(
            ContentEncoder(m.image_size, m.content_size, m.base_channels, m.max_channels), tmp / "ec.pt"))
        loss_nets = _loss_networks(cfg)
        plain = copy.deepcopy(cfg)
        plain.train.precision, plain.train.channels_last, plain.train.compile = "fp32", False, False
        trainers = []
        for c in (cfg, plain):
            torch.manual_seed(cfg.train.seed)
            trainers.append(Stage2Trainer(c, device, **loss_nets))
        use_published_layer_order(trainers[1])
        trainers[0].resolve_auto_settings(1)  # precision / channels_last = auto: timed now, not inside a row
        yield tuple(trainers)


def use_published_layer_order(trainer) -> None:
    """Give the reference trainer's G and D the published layer order: G upsamples before each AdaRes
    block and each skip layer's W_h, D pools after its convs. Ours reorders and folds these (the same
    functions at a fraction of the cost, see the models' blocks), which the published step must not get."""


    def upsample_first(block, x, s):  # the block's plain path (upsample off) on the upsampled map
        return AdaResBlock.forward(block, upsample_nearest(x), s)

    def pool_after_shortcut_conv(block, x):
        shortcut = F.avg_pool2d(x if block.conv_s is None else block.conv_s(x), 2)
        dx = F.avg_pool2d(block.conv_0(F.leaky_relu(x, 0.2)), 2)
        dx = block.conv_1(F.leaky_relu(dx, 0.2))
        return (shortcut + dx) / math.sqrt(2)

    def upsample_then_transition(layer, h):
        return F.leaky_relu(layer.trans(upsample_nearest(h)), 0.2)

    for net in (trainer.generator, trainer.generator_ema, trainer.discriminator):
        for module in net.modules():
            if isinstance(module, AdaResBlock) and module.upsample:
                module.upsample = False
                module.forward = types.MethodType(upsample_first, module)
            elif isinstance(module, DownResBlock):
                module.forward = types.MethodType(pool_after_shortcut_conv, module)
            elif isinstance(module, DynamicSkipLayer):
                module.transition = types.MethodType(upsample_then_transition, module)


def benchmark_stage2(trainer, reference, steps: int = 10, warmup: int = 3,
                     translate_batch: int | None = None) -> list[dict]:
    """Timing rows for the trainers of :func:`stage2_trainers`."""
    cfg, device = trainer.cfg, trainer.device
    batch = cfg.train.batch_size
    step = iter(range(1, 1_000_000))
    rows = [_row("stage2 loader", _timed(trainer.next_batch, steps, warmup, device), 2 * batch, device)]
    b, b_plain = trainer.prepare_batch(0), reference.prepare_batch(0)
    rows.append(_row("stage2 G step", _timed(lambda: trainer.g_step(b), steps, warmup, device), 2 * batch, device))
    rows.append(_row("stage2 D step", _timed(lambda: trainer.d_step(b), steps, warmup, device), 2 * batch, device))
    paired = _timed_in_turns({"ours": lambda: trainer.train_step(next(step)),
                              "published": lambda: published_step(reference, b_plain)}, steps, warmup, device)
    ours_flops = flops.count_step(trainer, next(step))

    def published_copy():
        clone = precision_probe.trainer_copy(reference, precision_probe.Setting("fp32", False))
        return (lambda: published_step(clone, b_plain)), {n: getattr(clone, n) for n in
                                                          ("encoder", "generator", "discriminator", "vgg")
                                                          if getattr(clone, n) is not None}

    published_flops = flops.count_modules(published_copy)
    rows.append(_with_flops(_row(STAGE2_STEP, paired["ours"], 2 * batch, device), ours_flops, trainer))
    rows.append(_with_flops(_row(PUBLISHED_STEP, paired["published"], 2 * batch, device), published_flops, reference))

    translator = Translator(trainer.encoder, trainer.generator_ema, trainer.sampler,
                            trainer.precision).to(device)
    n = translate_batch or batch
    x = b["x"].repeat((n + batch - 1) // batch, 1, 1, 1)[:n]
    rows.append(_row(f"translate (exemplar, batch {n})", _timed(lambda: translator.translate(x, style=x), steps,
                                                                 warmup, device), n, device))
    return rows


def loss_agreement(trainer, reference, steps: int = 20) -> list[dict]:
    """Our step as configured and the published fp32 step, run side by side on the fresh trainers of
    :func:`stage2_trainers` (same initial weights) on the same batches: each loss term's mean over
    ``steps`` both ways and the difference relative to the published value's magnitude."""
    ours, published = [], []
    for step in range(1, steps + 1):
        ours.append(trainer.train_step(step))
        published.append(published_step(reference, reference.prepare_batch(step)))
    rows = []
    for tag in published[0]:
        a = statistics.fmean(float(o[tag]) for o in ours)
        p = statistics.fmean(float(o[tag]) for o in published)
        rows.append({"term": tag, "ours": a, "published": p, "relative_difference": abs(a - p) / max(abs(p), 1e-8)})
    return rows


def _loss_networks(cfg: Stage2Config) -> dict:
    """The perceptual and identity networks the config asks for, with random weights where their
    files are missing: the time they take does not depend on the weights."""
    from torchvision.models import vgg19


    lam, nets = cfg.loss, {}
    try:
        nets["perceptual_net"] = build_perceptual(lam.perceptual, lam.vgg_weights)
    except MissingWeightsError:
        log.warning("VGG19 weights not found: timing the perceptual loss with random weights")
        nets["perceptual_net"] = VGGPerceptualLoss(state_dict=vgg19(weights=None).state_dict())
    if lam.lambda_id > 0:
        try:
            nets["identity_net"] = IdentityLoss(lam.identity_weights)
        except MissingWeightsError:
            log.warning("IR-SE50 weights not found: timing the identity loss with random weights")
            nets["identity_net"] = IdentityLoss(facenet=IRSE50())
    return nets


STAGE2_STEP, PUBLISHED_STEP = "stage2 step (G+D+EMA, data)", "stage2 step, published fp32"


def speedup_over_published(rows: list[dict]) -> float | None:
    """images/s of our Stage II step over the published step's, timed in turns in the same run."""
    by_name = {r["measure"]: r for r in rows}
    if STAGE2_STEP not in by_name or PUBLISHED_STEP not in by_name:
        return None
    return by_name[STAGE2_STEP]["images_per_s"] / by_name[PUBLISHED_STEP]["images_per_s"]


def published_step(trainer, b: dict) -> dict[str, torch.Tensor]:
    """One Stage II iteration done the way the authors' train.py does it, with our modules, as the
    reference for speed-ups: Ec left in train mode (spectral-norm power iteration on every call),
    the style encoded anew by each of the three G calls, every G layer's RGB head computed, D's
    weight gradients computed (and discarded) in the G step, one D call on fakes and reals together
    (R1's double backward through both), the translation recomputed for the D step, plain
    (for-loop) Adam and moving average, fp32. Returns the loss terms under our tags."""

    G, D, Ec, lam = trainer.generator, trainer.discriminator, trainer.encoder, trainer.cfg.loss
    if not hasattr(trainer, "plain_adam"):
        t = trainer.cfg.train
        trainer.plain_adam = [torch.optim.Adam(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                               foreach=False) for params in (trainer.parameters_of("generator"),
                                                                              trainer.parameters_of("discriminator"))]
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
        g = {"loss/g/adv": losses.adv_loss(logits.chunk(2)[0], True),
             "loss/g/con": losses.content_loss(Ec(y_hat), c_x[0]),
             "loss/g/sty": losses.style_loss(f_fake, f_real),
             "loss/g/msk": losses.mask_loss(masks),
             "loss/g/rec": torch.nn.functional.l1_loss(y_bar, y) + losses.perceptual(trainer.vgg, y_bar, y)}
        if trainer.identity is not None and lam.lambda_id > 0:
            g["loss/g/id"] = trainer.identity(y_hat, y)
        weights = generator_loss_weights(lam)
        opt_g.zero_grad()
        sum(weights[k] * v for k, v in g.items()).backward()
        opt_g.step()
        with torch.no_grad():
            y_fake, _ = G(c_x, G.style_encoder(y_style))
        y_real = y.detach().requires_grad_(True)
        fake_logits, real_logits = D(torch.cat([y_fake, y_real]))[0].chunk(2)
        d = {"loss/d/adv": losses.adv_loss(real_logits, True) + losses.adv_loss(fake_logits, False),
             "loss/d/r1": losses.r1_penalty(real_logits, y_real)}
        opt_d.zero_grad()
        (d["loss/d/adv"] + lam.lambda_r1 * d["loss/d/r1"]).backward()
        opt_d.step()
        decay = trainer.cfg.train.ema_decay
        with torch.no_grad():  # the published moving average: one tensor at a time
            for p_ema, p in zip(trainer.generator_ema.parameters(), G.parameters()):
                p_ema.mul_(decay).add_(p, alpha=1 - decay)
        return {k: v.detach() for k, v in {**g, **d}.items()}
    finally:
        for h in hooks:
            h.remove()
        Ec.eval()


def benchmark_stage1(cfg: Stage1Config, device: torch.device, steps: int = 10, warmup: int = 3) -> list[dict]:

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

        trainer.resolve_auto_settings(1)
        counted = flops.count_step(trainer, 1)
        row = _row("stage1 step (data)", _timed(step, steps, warmup, device), trainer.images_per_step, device)
        return [_with_flops(row, counted, trainer)]


def _with_flops(row: dict, counted: dict, trainer) -> dict:
    """``row`` with the step's FLOPs, FLOP/s and fraction of the device's peak in the trainer's precision."""
    row.update(precision=trainer.precision, channels_last=trainer.channels_last, flops_method=counted["method"],
               flops_by_network=counted["by_network"])
    return flops.annotate(row, counted["total"], flops.peak(trainer.device, trainer.precision)["flops"])


def format_table(rows: list[dict], header: str = "") -> str:
    lines = [header] if header else []
    lines.append(f"{'measure':<30} {'ms/step':>10} {'images/s':>10} {'peak MB':>10} {'GFLOP/step':>11} "
                 f"{'GFLOP/s':>9} {'of peak':>8}  setting")
    for r in rows:
        line = f"{r['measure']:<30} {r['ms_per_step']:>10.1f} {r['images_per_s']:>10.1f} {r['peak_memory_mb']:>10.0f}"
        if "gflop_per_step" in r:
            fraction = f"{r['peak_fraction']:.1%}" if r.get("peak_fraction") is not None else "?"
            line += (f" {r['gflop_per_step']:>11.3g} {r['gflop_per_s']:>9.1f} {fraction:>8}  {r['precision']}"
                     + (" + channels_last" if r["channels_last"] else ""))
        lines.append(line)
    return "\n".join(lines)


def format_agreement(rows: list[dict], steps: int) -> str:
    lines = [f"mean loss over {steps} steps from the same weights and batches",
             f"{'term':<14} {'ours':>10} {'published':>10} {'rel. diff':>10}"]
    for r in rows:
        lines.append(f"{r['term']:<14} {r['ours']:>10.4g} {r['published']:>10.4g} {r['relative_difference']:>10.1%}")
    return "\n".join(lines)
