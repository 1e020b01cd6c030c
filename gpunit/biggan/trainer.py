"""A class-conditional BigGAN of our own (Brock et al., ICLR 2019; BigGAN-PyTorch's 128 px recipe), trained on
labelled folders. It is what DeepI2I transfers from (DeepI2I Sec. 3.2) when no pretrained release fits a
domain, and what the built-in demo uses on the synthetic shape classes.

Per iteration (BigGAN-PyTorch's ``train_fns.GAN_training_function``):
    D step (``train.d_steps`` times, each on a new batch of reals y with labels l):
        max over D   E[min(0, -1 + D(y, l))] + E[min(0, -1 - D(G(z, c), c))]     (hinge; z ~ N(0, I), c ~ U{classes})
    G step:
        min over G   -E[D(G(z, c), c)]  (+ lambda_ms / L_ms, the mode-seeking term, when loss.mode_seeking > 0)
Optional, off by default (the published BigGAN has neither): DiffAugment T(.) on every image D sees
(``loss.diffaugment``; Zhao et al., 2020), and the mode-seeking term of MSGAN (Mao et al., CVPR 2019)
    L_ms = mean|G(z1, c) - G(z2, c)| / mean|z1 - z2|
on pairs of samples of one class, which G maximises, against a generator that ignores z.
The generator's moving average (``train.ema``) is a copy of G until ``train.ema_start`` and draws the samples
and the export. The networks are those of :mod:`gpunit.biggan.models`; the export ``biggan.pt`` holds G,
its average, D, their Adam states and the class names (:func:`gpunit.biggan.weights.save_biggan`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

from gpunit import losses
from gpunit.biggan.config import BigGANConfig
from gpunit.biggan.models import BigGANDiscriminator, BigGANGenerator
from gpunit.biggan.weights import save_biggan
from gpunit.data import synthetic
from gpunit.data.datasets import LabelledImageDataset
from gpunit.data.diff_augment import diff_augment, parse_policy
from gpunit.engine import distributed
from gpunit.engine.config import config_to_dict
from gpunit.engine.run import run_training
from gpunit.engine.trainer import Trainer
from gpunit.metrics.prior_samples import prior_quality
from gpunit.nn import eval_mode

log = logging.getLogger("gpunit.biggan")
AUGMENT_STREAM = 1000  # the step_seed stream of DiffAugment's draws (noise streams count from 0)



def shown_classes(num_classes: int, most: int) -> list[int]:
    """Up to ``most`` class indices spread evenly over ``num_classes`` (all of them when they fit)."""
    if num_classes <= most:
        return list(range(num_classes))
    return sorted({round(i * (num_classes - 1) / (most - 1)) for i in range(most)})


def step_seed(seed: int, step: int, stream: int) -> int:
    """A seed drawn from (run seed, step, stream) alone, for the random draws of one update."""
    return int(np.random.SeedSequence([seed % 2**64, step, stream]).generate_state(1, np.uint64)[0])


def step_noise(seed: int, step: int, stream: int, global_batch: int, dim_z: int, num_classes: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows of z ~ N(0, I) and classes c ~ U{0..classes-1} for the whole global batch of one
    update, drawn from (seed, step, stream) alone: N processes with batch B/N draw the noise of one process
    with batch B, and a resumed run draws it again."""
    g = torch.Generator().manual_seed(step_seed(seed, step, stream))
    z, c = torch.randn(global_batch, dim_z, generator=g), torch.randint(num_classes, (global_batch,), generator=g)
    local = distributed.local_batch(global_batch)
    rows = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
    return z[rows].to(device), c[rows].to(device)


def check_supported(t) -> None:
    if t.compile:
        raise ValueError("train.compile is not supported for BigGAN and DeepI2I (their spectral norm writes its "
                         "vectors inside the forward); set train.compile=false")


def synthetic_domains(root: str, class_names: list[str]) -> Path | None:
    """``root`` when it is the built-in synthetic data's ``domains`` folder (its content.csv and shape classes)."""
    folder = Path(root)
    if (folder / "content.csv").is_file() and set(class_names) <= set(synthetic.CLASS_NAMES):
        return folder
    return None


@torch.no_grad()
def prior_figures(generator: BigGANGenerator, class_names: list[str], domains_root: Path, device: torch.device,
                  per_class: int = 16, seed: int = 0) -> dict:
    """:func:`gpunit.metrics.prior_samples.prior_quality` of ``per_class`` samples of every class (fixed noise)."""
    z = torch.randn(per_class, generator.dim_z, generator=torch.Generator().manual_seed(seed)).to(device)
    with eval_mode(generator):
        samples = torch.cat([generator(z, generator.shared(torch.full((per_class,), c, device=device))).float()
                             for c in range(len(class_names))])
    labels = [name for name in class_names for _ in range(per_class)]
    return prior_quality(samples.clamp(-1, 1), labels, domains_root, device)


# ----------------------------------------------------------------------------- trainer
class ClassConditionalTrainer(Trainer):
    """Noise of a class-conditional trainer (BigGAN's and DeepI2I's): z ~ N(0, I) with classes
    c ~ U{0..classes-1}. Uses the trainer's ``generator`` and ``num_classes``."""

    def sample_noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ N(0, I) and classes c ~ U{0..classes-1} (the data's classes, not every embedding row), from the
        global RNG (steps of a run draw theirs with :meth:`noise`)."""
        z = torch.randn(n, self.generator.dim_z, device=self.device)
        return z, torch.randint(self.num_classes, (n,), device=self.device)

    def noise(self, step: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise and classes of one update of a step (``stream``: which update): a function of (seed, step)
        and the global batch, so N processes draw what one process would."""
        return step_noise(self.seed, step, stream, self.batch, self.generator.dim_z, self.num_classes, self.device)


class BigGANTrainer(ClassConditionalTrainer):
    """Class-conditional BigGAN on labelled folders; driven by :func:`gpunit.engine.loop.train_loop`."""

    legacy_optimizer_keys = {"opt_g": "generator", "opt_d": "discriminator"}

    def __init__(self, cfg: BigGANConfig, device: torch.device):
        m, d, t = cfg.model, cfg.data, cfg.train
        check_supported(t)
        super().__init__(t, device, d.num_workers)
        self.cfg = cfg
        if t.d_steps < 1:
            raise ValueError(f"train.d_steps must be at least 1, got {t.d_steps}")
        if t.reuse_fakes_for_d and t.d_steps != 1:
            raise ValueError(f"train.reuse_fakes_for_d needs train.d_steps=1 (one G step's fakes serve one D step), "
                             f"got d_steps={t.d_steps}")
        self.dataset = LabelledImageDataset(d.root, m.image_size, d.load_size, d.flip, d.classes, d.per_class,
                                            d.class_subfolder, seed=t.seed)
        self.class_names = self.dataset.class_names
        self.num_classes = len(self.class_names)
        rows = m.num_classes or self.num_classes
        if rows < self.num_classes:
            raise ValueError(f"model.num_classes={rows} but the data has {self.num_classes} classes")
        log.info("BigGAN on %d classes, %d images (%s)", self.num_classes, len(self.dataset),
                 ", ".join(f"{k}: {v}" for k, v in list(self.dataset.counts.items())[:8]))

        self.generator = self.network("generator", BigGANGenerator(m.image_size, m.g_ch, rows, m.dim_z, m.shared_dim,
                                                                   m.g_attention))
        self.discriminator = self.network("discriminator", BigGANDiscriminator(m.image_size, m.d_ch, rows,
                                                                               m.d_attention))
        self.generator_ema = self.ema("generator_ema", self.generator, t.ema_decay, t.ema_start) if t.ema else None
        self.optimizer("generator", self.generator.parameters(), t.lr, t.betas, eps=t.eps)
        self.optimizer("discriminator", self.discriminator.parameters(), t.lr_d, t.betas, eps=t.eps)
        self.d_loss, self.g_loss = losses.gan_losses(cfg.loss.adversarial)
        self.augment_policy = parse_policy(cfg.loss.diffaugment)
        if cfg.loss.mode_seeking < 0:
            raise ValueError(f"loss.mode_seeking must be >= 0, got {cfg.loss.mode_seeking}")
        self.augment_rng = torch.Generator()
        self.images_per_step = self.batch * t.d_steps
        self.loader("train", self.dataset)
        gen = torch.Generator().manual_seed(t.seed)
        self.preview_z = torch.randn(8, m.dim_z, generator=gen).to(device)
        # the built-in synthetic data: its domains folder, for the prior's silhouette and layout figures
        self.synthetic_root = synthetic_domains(d.root, self.class_names)

    # ------------------------------------------------------------------ one iteration
    def d_step(self, b: dict, z: torch.Tensor | None = None, c: torch.Tensor | None = None,
               fakes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """max over D of the conditional GAN loss; G makes the fakes without gradient, in train mode, unless
        ``fakes`` (images, with their classes ``c``) are given."""
        G, D = self.generator, self.discriminator
        if z is None and fakes is None:
            z, c = self.sample_noise(len(b["x"]))
        parts = self.micro_batches({"y": b["x"], "l": b["l_x"], "z": z, "c": c, "y_hat": fakes})

        def micro(i: int):
            p = parts[i]
            with self.autocast():
                if p["y_hat"] is None:
                    with torch.no_grad():
                        y_hat = G(p["z"], G.shared(p["c"]))
                else:
                    y_hat = p["y_hat"]
                # one call on [fakes; reals], as published: one spectral-norm iteration per micro-batch
                logits = D(self.augment(torch.cat([y_hat, p["y"]])), torch.cat([p["c"], p["l"]])).float()
            fake, real = logits[:len(y_hat)], logits[len(y_hat):]
            loss_real, loss_fake = self.d_loss(real, fake)
            return loss_real + loss_fake, {"loss/d/real": loss_real, "loss/d/fake": loss_fake}

        return self.update(["discriminator"], micro)

    def g_step(self, z: torch.Tensor | None = None, c: torch.Tensor | None = None,
               keep_fakes: list | None = None) -> dict[str, torch.Tensor]:
        """min over G of the generator side of the loss (D's weights get no gradient). ``keep_fakes``: a list
        that receives each micro-batch's (fakes without gradient, their classes)."""
        G, D = self.generator, self.discriminator
        if z is None:
            z, c = self.sample_noise(self.local_batch)
        parts = self.micro_batches({"z": z, "c": c})

        lambda_ms = self.cfg.loss.mode_seeking

        def micro(i: int):
            p = parts[i]
            z, c = p["z"], p["c"]
            half = len(z) // 2
            use_ms = lambda_ms and half > 0  # a micro-batch of one image has no pair
            if use_ms:  # pairs (i, i + half) share their class and differ in z
                c = torch.cat([c[:half], c[:half], c[2 * half:]])
            with self.autocast():
                y_hat = G(z, G.shared(c))
                logits = D(self.augment(y_hat), c).float()
            if keep_fakes is not None:
                keep_fakes.append((y_hat.detach(), c))
            adv = self.g_loss(logits)
            if not use_ms:
                return adv, {"loss/g/adv": adv}
            y_hat = y_hat.float()
            l_ms = (y_hat[:half] - y_hat[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
            return adv + lambda_ms / (l_ms + 1e-5), {"loss/g/adv": adv, "loss/g/mode_seeking": l_ms}

        D.requires_grad_(False)
        try:
            return self.update(["generator"], micro)
        finally:
            D.requires_grad_(True)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """DiffAugment of ``images`` before D (the identity without a policy)."""
        return diff_augment(images, self.augment_policy, self.augment_rng) if self.augment_policy else images

    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.augment_policy:  # a function of (seed, step), so a resumed run draws it again (every rank alike)
            self.augment_rng.manual_seed(step_seed(self.seed, step, AUGMENT_STREAM))
        d_steps = self.cfg.train.d_steps
        if self.cfg.train.reuse_fakes_for_d:  # G first; D then scores the fakes G just drew (d_steps = 1)
            fakes: list = []
            out.update(self.g_step(*self.noise(step, d_steps), keep_fakes=fakes))
            y_hat, c = (torch.cat(t) for t in zip(*fakes))
            out.update(self.d_step(self.next_batch(), c=c, fakes=y_hat))
            return out
        for j in range(d_steps):
            out.update(self.d_step(self.next_batch(), *self.noise(step, j)))
        out.update(self.g_step(*self.noise(step, d_steps)))
        return out

    # ------------------------------------------------------------------ monitoring
    def sample_generator(self) -> BigGANGenerator:
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def sample_images(self, step: int) -> dict[str, torch.Tensor | float]:
        """One row per class (up to 10, spread over the classes), one column per fixed noise vector; on the
        built-in synthetic data also how well the samples draw its shapes and layouts (:func:`prior_figures`)."""
        G = self.sample_generator()
        classes = shown_classes(self.num_classes, 10)
        z = self.preview_z
        with eval_mode(G):
            rows = [G(z, G.shared(torch.full((len(z),), c, device=self.device))) for c in classes]
        grid = make_grid(torch.cat(rows).float().clamp(-1, 1).cpu(), nrow=len(z), padding=1, pad_value=1)
        out: dict[str, torch.Tensor | float] = {"images/samples": grid}
        if self.synthetic_root is not None:
            quality = prior_figures(G, self.class_names, self.synthetic_root, self.device, seed=self.seed)
            out.update({f"metric/prior/{k}": v for k, v in quality.items() if isinstance(v, float)})
        return out

    # ------------------------------------------------------------------ export
    def export(self, run_dir: Path, step: int) -> Path:
        """``biggan.pt``: what DeepI2I starts from (``init.source=gpunit_biggan``)."""
        adam_states = {"G": self.optimizers["generator"].state_dict(), "D": self.optimizers["discriminator"].state_dict()}
        return save_biggan(run_dir / "biggan.pt", self.generator, self.discriminator, self.generator_ema,
                           self.class_names, adam_states, step, config_to_dict(self.cfg))


def run_biggan(cfg: BigGANConfig, resume: str | None = None, progress: bool = True) -> dict:
    """Train the BigGAN as configured (or resume) and export ``biggan.pt``; {} if interrupted."""
    finished = run_training(cfg, BigGANTrainer, resume, progress)
    if finished is None:
        return {}
    trainer, run_dir = finished
    return {"biggan": trainer.export(run_dir, cfg.train.iterations), "run_dir": run_dir}
