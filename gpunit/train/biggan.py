"""A class-conditional BigGAN of our own (Brock et al., ICLR 2019; BigGAN-PyTorch's 128 px recipe), trained on
labelled folders. It is what DeepI2I transfers from (DeepI2I Sec. 3.2) when no pretrained release fits a
domain, and what the built-in demo uses on the synthetic shape classes.

Per iteration (BigGAN-PyTorch's ``train_fns.GAN_training_function``):
    D step (``train.d_steps`` times, each on a new batch of reals y with labels l):
        max over D   E[min(0, -1 + D(y, l))] + E[min(0, -1 - D(G(z, c), c))]     (hinge; z ~ N(0, I), c ~ U{classes})
    G step:
        min over G   -E[D(G(z, c), c)]
The generator's moving average (``train.ema``) is a copy of G until ``train.ema_start`` and draws the samples
and the export. The networks are those of :mod:`gpunit.models.biggan`; the export ``biggan.pt`` holds G,
its average, D, their Adam states and the class names (:func:`gpunit.checkpoints_deepi2i.save_biggan`).
"""
from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torchvision.utils import make_grid

from gpunit import losses
from gpunit.checkpoints import CheckpointError
from gpunit.checkpoints_deepi2i import save_biggan
from gpunit.config import config_to_dict
from gpunit.config_deepi2i import BigGANConfig
from gpunit.data.datasets import LabelledImageDataset, make_loader
from gpunit.models.biggan import BigGANDiscriminator, BigGANGenerator
from gpunit.train import accumulate, distributed, speed
from gpunit.train.common import ema_update, run_training

log = logging.getLogger("gpunit.biggan")


# ----------------------------------------------------------------------------- helpers shared with DeepI2I
def adam(params, lr: float, betas: Sequence[float], eps: float, device: torch.device) -> torch.optim.Adam:
    """Adam as BigGAN-PyTorch configures it (its own epsilon), fused on CUDA and foreach elsewhere."""
    fused = device.type == "cuda"
    return torch.optim.Adam(list(params), lr=lr, betas=tuple(betas), eps=eps, weight_decay=0.0,
                            fused=fused or None, foreach=None if fused else True)


def load_adam_state(opt: torch.optim.Optimizer, state: Mapping, source: str,
                    rows: Mapping[int, Sequence[int]] | None = None) -> int:
    """Continue another run's Adam moments and step counts in ``opt``, keeping our hyper-parameters.

    Entry i of ``state`` belongs to our i-th parameter (the published parameter order; the source may
    have more entries, for heads we do not have). ``rows``: {parameter index: source rows} for class
    embeddings whose rows were reordered or dropped. Returns the number of entries loaded.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    found = state.get("state", {}) if isinstance(state, Mapping) else {}
    loaded = {}
    for i, p in enumerate(params):
        entry = found.get(i)
        if entry is None:
            continue
        entry = dict(entry)
        for key in ("exp_avg", "exp_avg_sq"):
            moment = entry[key]
            if rows and i in rows:
                moment = moment[list(rows[i])]
            if tuple(moment.shape) != tuple(p.shape):
                raise CheckpointError(f"{source}: Adam state {i} ({key}) has shape {tuple(moment.shape)}, but our "
                                      f"parameter {i} has {tuple(p.shape)}; the optimizer file is not from these "
                                      "weights (set init.optimizer_states=false to start Adam afresh)")
            entry[key] = moment
        loaded[i] = entry
    opt.load_state_dict({"state": loaded, "param_groups": opt.state_dict()["param_groups"]})
    return len(loaded)


@contextlib.contextmanager
def eval_mode(*networks: nn.Module | None) -> Iterator[None]:
    """Every module of ``networks`` in eval mode for the block; each module's own mode is restored after."""
    nets = [n for n in networks if n is not None]
    flags = [(m, m.training) for net in nets for m in net.modules()]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def shown_classes(num_classes: int, most: int) -> list[int]:
    """Up to ``most`` class indices spread evenly over ``num_classes`` (all of them when they fit)."""
    if num_classes <= most:
        return list(range(num_classes))
    return sorted({round(i * (num_classes - 1) / (most - 1)) for i in range(most)})


def step_noise(seed: int, step: int, stream: int, global_batch: int, dim_z: int, num_classes: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows of z ~ N(0, I) and classes c ~ U{0..classes-1} for the whole global batch of one
    update, drawn from (seed, step, stream) alone: N processes with batch B/N draw the noise of one process
    with batch B, and a resumed run draws it again."""
    state = np.random.SeedSequence([seed % 2**64, step, stream]).generate_state(1, np.uint64)[0]
    g = torch.Generator().manual_seed(int(state))
    z, c = torch.randn(global_batch, dim_z, generator=g), torch.randint(num_classes, (global_batch,), generator=g)
    local = distributed.local_batch(global_batch)
    rows = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
    return z[rows].to(device), c[rows].to(device)


def check_supported(t) -> None:
    if t.compile:
        raise ValueError("train.compile is not supported for BigGAN and DeepI2I (their spectral norm writes its "
                         "vectors inside the forward); set train.compile=false")


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


# ----------------------------------------------------------------------------- trainer
class LabelledBatches:
    """Data and noise of a class-conditional trainer (BigGAN's and DeepI2I's): a loader of labelled
    batches that resumes after ``consumed`` images, and z ~ N(0, I) with classes c ~ U{0..classes-1}.
    Uses the trainer's ``cfg``, ``device``, ``dataset``, ``batch``, ``consumed``, ``generator`` and
    ``num_classes``."""

    def _open_loader(self) -> None:
        self.loader = iter(make_loader(self.dataset, self.batch, self.cfg.train.seed, start=self.consumed,
                                       num_workers=self.cfg.data.num_workers, device_type=self.device.type,
                                       rank=distributed.rank(), world=distributed.world_size()))

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self.loader)
        self.consumed += self.batch
        return to_device(batch, self.device, self.cfg.train.channels_last)

    def sample_noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ N(0, I) and classes c ~ U{0..classes-1} (the data's classes, not every embedding row), from the
        global RNG (steps of a run draw theirs with :func:`step_noise`)."""
        z = torch.randn(n, self.generator.dim_z, device=self.device)
        return z, torch.randint(self.num_classes, (n,), device=self.device)


class BigGANTrainer(LabelledBatches):
    """Class-conditional BigGAN on labelled folders; driven by :func:`gpunit.train.common.train_loop`."""

    def __init__(self, cfg: BigGANConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        m, d, t = cfg.model, cfg.data, cfg.train
        check_supported(t)
        if t.d_steps < 1:
            raise ValueError(f"train.d_steps must be at least 1, got {t.d_steps}")
        self.dataset = LabelledImageDataset(d.root, m.image_size, d.load_size, d.flip, d.classes, d.per_class,
                                            d.class_subfolder, seed=t.seed)
        self.class_names = self.dataset.class_names
        self.num_classes = len(self.class_names)
        rows = m.num_classes or self.num_classes
        if rows < self.num_classes:
            raise ValueError(f"model.num_classes={rows} but the data has {self.num_classes} classes")
        log.info("BigGAN on %d classes, %d images (%s)", self.num_classes, len(self.dataset),
                 ", ".join(f"{k}: {v}" for k, v in list(self.dataset.counts.items())[:8]))

        self.generator = BigGANGenerator(m.image_size, m.g_ch, rows, m.dim_z, m.shared_dim, m.g_attention).to(device)
        self.discriminator = BigGANDiscriminator(m.image_size, m.d_ch, rows, m.d_attention).to(device)
        self.generator_ema = (copy.deepcopy(self.generator).requires_grad_(False).eval() if t.ema else None)
        for net in (self.generator, self.discriminator, self.generator_ema):
            if net is not None:
                speed.prepare_module(net, t.channels_last)
        self.g_params, self.d_params = list(self.generator.parameters()), list(self.discriminator.parameters())
        self.opt_g = adam(self.g_params, t.lr, t.betas, t.eps, device)
        self.opt_d = adam(self.d_params, t.lr_d, t.betas, t.eps, device)
        speed.tune_backends(device)
        self.precision = speed.resolve_precision(t.precision, device)
        self.autocast = speed.autocast(device, self.precision)
        self.scaler = speed.grad_scaler(device, self.precision)
        self.d_loss, self.g_loss = losses.gan_losses(cfg.loss.adversarial)

        self.batch = t.batch_size
        self.accumulate = t.accumulate
        self.local_batch = accumulate.micro_batch_size(self.batch, self.accumulate) * self.accumulate
        self.images_per_step = self.batch * t.d_steps
        self.consumed = 0
        self._open_loader()
        self.progress = True
        gen = torch.Generator().manual_seed(t.seed)
        self.preview_z = torch.randn(8, m.dim_z, generator=gen).to(device)

    # ------------------------------------------------------------------ one iteration
    def d_step(self, b: dict, z: torch.Tensor | None = None, c: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """max over D of the conditional GAN loss; G makes the fakes without gradient, in train mode."""
        G, D = self.generator, self.discriminator
        if z is None:
            z, c = self.sample_noise(len(b["x"]))
        parts = accumulate.split({"y": b["x"], "l": b["l_x"], "z": z, "c": c}, self.accumulate)

        def micro(i: int):
            p = parts[i]
            with self.autocast():
                with torch.no_grad():
                    y_hat = G(p["z"], G.shared(p["c"]))
                # one call on [fakes; reals], as published: one spectral-norm iteration per micro-batch
                logits = D(torch.cat([y_hat, p["y"]]), torch.cat([p["c"], p["l"]])).float()
            fake, real = logits[:len(y_hat)], logits[len(y_hat):]
            loss_real, loss_fake = self.d_loss(real, fake)
            return loss_real + loss_fake, {"loss/d/real": loss_real, "loss/d/fake": loss_fake}

        return accumulate.update([self.opt_d], self.d_params, self.scaler, self.accumulate, micro, (G, D))

    def g_step(self, z: torch.Tensor | None = None, c: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """min over G of the generator side of the loss (D's weights get no gradient)."""
        G, D = self.generator, self.discriminator
        if z is None:
            z, c = self.sample_noise(self.local_batch)
        parts = accumulate.split({"z": z, "c": c}, self.accumulate)

        def micro(i: int):
            p = parts[i]
            with self.autocast():
                logits = D(G(p["z"], G.shared(p["c"])), p["c"]).float()
            adv = self.g_loss(logits)
            return adv, {"loss/g/adv": adv}

        D.requires_grad_(False)
        try:
            return accumulate.update([self.opt_g], self.g_params, self.scaler, self.accumulate, micro, (G, D))
        finally:
            D.requires_grad_(True)

    def noise(self, step: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        return step_noise(self.cfg.train.seed, step, stream, self.batch, self.generator.dim_z, self.num_classes,
                          self.device)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        d_steps = self.cfg.train.d_steps
        for j in range(d_steps):
            out.update(self.d_step(self.next_batch(), *self.noise(step, j)))
        out.update(self.g_step(*self.noise(step, d_steps)))
        if self.generator_ema is not None:
            t = self.cfg.train
            ema_update(self.generator_ema, self.generator, 0.0 if step < t.ema_start else t.ema_decay)
        return out

    # ------------------------------------------------------------------ monitoring
    def sample_generator(self) -> BigGANGenerator:
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def sample_images(self, step: int) -> dict[str, torch.Tensor]:
        """One row per class (up to 10, spread over the classes), one column per fixed noise vector."""
        G = self.sample_generator()
        classes = shown_classes(self.num_classes, 10)
        z = self.preview_z
        with eval_mode(G):
            rows = [G(z, G.shared(torch.full((len(z),), c, device=self.device))) for c in classes]
        grid = make_grid(torch.cat(rows).float().clamp(-1, 1).cpu(), nrow=len(z), padding=1, pad_value=1)
        return {"images/samples": grid}

    def on_checkpoint(self, step: int) -> None:
        pass

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "consumed": self.consumed}
        if self.generator_ema is not None:
            state["generator_ema"] = self.generator_ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        if self.generator_ema is not None:
            if "generator_ema" not in state:
                raise CheckpointError("the checkpoint has no EMA generator (it was trained with train.ema=false); "
                                      "resume with train.ema=false")
            self.generator_ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.consumed = int(state["consumed"])
        self._open_loader()

    def export(self, run_dir: Path, step: int) -> Path:
        """``biggan.pt``: what DeepI2I starts from (``init.source=gpunit_biggan``)."""
        return save_biggan(run_dir / "biggan.pt", self.generator, self.discriminator, self.generator_ema,
                           self.class_names, {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()}, step,
                           config_to_dict(self.cfg))


def run_biggan(cfg: BigGANConfig, resume: str | None = None, progress: bool = True) -> dict:
    """Train the BigGAN as configured (or resume) and export ``biggan.pt``; {} if interrupted."""
    finished = run_training(cfg, BigGANTrainer, resume, progress)
    if finished is None:
        return {}
    trainer, run_dir = finished
    return {"biggan": trainer.export(run_dir, cfg.train.iterations), "run_dir": run_dir}
