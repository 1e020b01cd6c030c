"""Stage II: adversarial image translation on top of the frozen content encoder (paper Sec. 4).

    y_hat = G(Ec(x), Es(y))            translation          y_bar = G(Ec(y), Es(y))   reconstruction
    L_adv = log D(y) + log(1 - D(y_hat))                                               (Eq. 3)
    L_sty = ||f_D(y_hat) - f_D(y)||_1                                                   (Eq. 4)
    L_con = ||Ec(y_hat) - Ec(x)||_1                                                     (Eq. 5)
    L_msk = sum_l ||m_l||_1                                                              (Eq. 6)
    L_rec = ||y_bar - y||_1 + perceptual
    min_{G,Es} max_D  L_adv + l1 L_con + l2 L_sty + l3 L_msk + l4 L_rec  (+ l_id L_id for faces)
D is trained with the non-saturating loss and an R1 penalty on real images. An EMA of G is kept
for samples, evaluation and export; at every checkpoint a new style sampler is fitted to the EMA
style codes of the target set, seen with the training crop and flip (as published).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torchvision.utils import make_grid

from gpunit import losses
from gpunit.checkpoints import check_compatible, export_published_stage2, load_content_encoder, save_translator
from gpunit.config import Stage2Config, Stage2LossConfig, config_to_dict
from gpunit.data.datasets import ImageFolderDataset, UnpairedDataset, make_loader
from gpunit.models import ContentEncoder, Discriminator, Generator, StyleSampler
from gpunit.nn import init_weights
from gpunit.train import accumulate, distributed, speed
from gpunit.train.common import ema_update, run_training
from gpunit.train.sampler_fit import collect_style_codes, fit_sampler, oversample_rare_styles

log = logging.getLogger("gpunit.stage2")


def build_content_encoder(cfg: Stage2Config) -> ContentEncoder:
    m = cfg.model
    if cfg.train_content_encoder:  # ablation (Sec. 5.2): no generative prior
        encoder = ContentEncoder(m.image_size, m.content_size, m.base_channels, m.max_channels)
        init_weights(encoder)
        return encoder
    if not Path(cfg.content_encoder).is_file():
        raise FileNotFoundError(
            f"content encoder not found: {cfg.content_encoder}. Train one with scripts/train_stage1.py (it writes "
            "runs/<name>/content_encoder.pt) or put the authors' content_encoder.pt there, then set content_encoder=PATH")
    encoder = load_content_encoder(cfg.content_encoder, m.content_size)
    if encoder.image_size != m.image_size:
        raise ValueError(f"the content encoder {cfg.content_encoder} was built for {encoder.image_size}px images "
                         f"but model.image_size is {m.image_size}; set model.image_size={encoder.image_size}")
    return encoder.requires_grad_(False).eval()  # frozen: no spectral-norm power iteration either


def generator_loss_weights(lam: Stage2LossConfig) -> dict[str, float]:
    """The lambda of each G loss term: l1 L_con, l2 L_sty, l3 L_msk, l4 L_rec (and l_id L_id)."""
    return {"loss/g/adv": lam.lambda_adv, "loss/g/con": lam.lambda_con, "loss/g/sty": lam.lambda_sty,
            "loss/g/msk": lam.lambda_msk, "loss/g/rec": lam.lambda_rec, "loss/g/id": lam.lambda_id}


class Stage2Trainer:
    """Adversarial translation; driven by :func:`gpunit.train.common.train_loop`."""

    def __init__(self, cfg: Stage2Config, device: torch.device, perceptual_net=None, identity_net=None):
        self.cfg, self.device = cfg, device
        m, d, t, lam = cfg.model, cfg.data, cfg.train, cfg.loss
        if not d.source or not d.target:
            raise ValueError("data.source and data.target must each list at least one image folder")
        self.dataset = UnpairedDataset(d.source, d.target, d.source_counts, d.target_counts, m.image_size,
                                       d.load_size, d.flip, seed=t.seed, same_crop=d.same_crop)
        augment = cfg.sampler.augment  # the sampler's codes: training crops and flips, or plain resizes
        self.target_set = ImageFolderDataset(d.target, m.image_size, d.target_counts, d.load_size if augment else 0,
                                             d.flip and augment)

        self.encoder = build_content_encoder(cfg).to(device)
        self.generator = Generator(m.image_size, m.content_size, m.base_channels, m.max_channels, m.style_dim,
                                   m.style_base_channels, m.style_hidden, m.skip_resolutions).to(device)
        init_weights(self.generator)
        check_compatible(self.encoder, self.generator)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.discriminator = Discriminator(m.image_size, m.disc_base_channels, m.disc_max_channels,
                                           m.disc_spectral_norm).to(device)
        init_weights(self.discriminator)
        if not 1 <= lam.style_layer <= len(self.discriminator.model):
            raise ValueError(f"loss.style_layer must be in 1..{len(self.discriminator.model)} for "
                             f"{m.image_size}px images, got {lam.style_layer}")
        self.sampler = StyleSampler(m.noise_dim, m.sampler_hidden, m.style_dim).to(device)
        self.sampler_fitted = False
        self.progress = True  # progress bars (the sampler fit's too)

        for net in (self.encoder, self.generator, self.generator_ema, self.discriminator):
            speed.prepare_module(net, t.channels_last)
        self.g_params = [p for p in self.generator.parameters() if p.requires_grad]
        if cfg.train_content_encoder:
            self.g_params += list(self.encoder.parameters())
        self.d_params = list(self.discriminator.parameters())
        self.opt_g = speed.adam(self.g_params, t.lr, t.betas, t.weight_decay, device)
        self.opt_d = speed.adam(self.d_params, t.lr, t.betas, t.weight_decay, device)
        speed.tune_backends(device)
        self.precision = speed.resolve_precision(t.precision, device)  # "auto" -> bf16 or fp32, logged
        self.autocast = speed.autocast(device, self.precision)
        self.scaler = speed.grad_scaler(device, self.precision)
        # D stays eager: R1 needs a double backward, which torch.compile's autograd does not support.
        for net in (self.encoder, self.generator):
            speed.maybe_compile(net, t.compile)

        self.vgg = perceptual_net if perceptual_net is not None else losses.build_perceptual(lam.perceptual, lam.vgg_weights)
        if lam.lambda_id > 0 and identity_net is None:
            from gpunit.models.arcface import IdentityLoss
            identity_net = IdentityLoss(lam.identity_weights)
        self.identity = identity_net
        for net in (self.vgg, self.identity):
            if net is not None:
                net.to(device)

        self.batch = t.batch_size  # the global batch; each process loads its share
        self.accumulate = t.accumulate
        accumulate.micro_batch_size(self.batch, self.accumulate)  # fails early when it does not divide
        self.images_per_step = 2 * self.batch
        self.consumed = 0
        self._open_loader()
        n = min(self.batch, 8)
        preview = [self.dataset[i] for i in range(n)]
        self.preview = {k: torch.stack([p[k] for p in preview]).to(device) for k in ("x", "y")}
        self.preview_noise = torch.randn(n, m.noise_dim, generator=torch.Generator().manual_seed(t.seed)).to(device)

    def _open_loader(self):
        self.loader = iter(make_loader(self.dataset, self.batch, self.cfg.train.seed, start=self.consumed,
                                       num_workers=self.cfg.data.num_workers, device_type=self.device.type,
                                       rank=distributed.rank(), world=distributed.world_size()))

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else images

    def content_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(self.cfg.train_content_encoder):
            return self.encoder(images, all_features=True)

    # ------------------------------------------------------------------ one iteration
    def next_batch(self, step: int) -> dict[str, torch.Tensor]:
        """x, y, their content features (computed once per batch; y's only for L_rec) and the style input."""
        batch = next(self.loader)
        self.consumed += self.batch
        x, y = (self.to_device(batch[k]) for k in ("x", "y"))
        with self.autocast():
            c_x = self.content_features(x)
            c_y = self.content_features(y) if self.cfg.loss.lambda_rec > 0 else None
        # A flipped style image keeps G from copying the style image's pose. The coin comes from
        # (seed, step), so every process of a distributed run flips alike.
        flip = self.cfg.loss.flip_style and distributed.step_uniform(self.cfg.train.seed, step) < 0.5
        y_style = y.flip(-1) if flip else y
        return {"x": x, "y": y, "c_x": c_x, "c_y": c_y, "y_style": y_style}

    def g_step(self, b: dict) -> dict[str, torch.Tensor]:
        """min over G, Es of L_adv + l1 L_con + l2 L_sty + l3 L_msk + l4 L_rec (+ l_id L_id), in
        ``train.accumulate`` micro-batches of ``b``."""
        lam, G, D = self.cfg.loss, self.generator, self.discriminator
        parts, y_hats = accumulate.split(b, self.accumulate), []

        def micro(i: int):
            m = parts[i]
            with self.autocast():
                s_y = G.style_encoder(m["y_style"])
                y_hat, masks = G(m["c_x"], s_y)                                          # y_hat = G(Ec(x), Es(y))
                # D scores y_hat in full; of the real image only f_D is needed, without gradient. One
                # spectral-norm weight (and power iteration) serves both calls, as one batched call would.
                with parametrize.cached():
                    fake_logits, f_fake = D(y_hat, lam.style_layer)
                    with torch.no_grad():
                        f_real = D.style_features(m["y"], lam.style_layer)
                g = {
                    "loss/g/adv": losses.adv_loss(fake_logits, real=True),                     # L_adv (Eq. 3)
                    "loss/g/con": losses.content_loss(self.encoder(y_hat), m["c_x"][0]),      # L_con (Eq. 5)
                    "loss/g/sty": losses.style_loss(f_fake, f_real),                           # L_sty (Eq. 4)
                    "loss/g/msk": losses.mask_loss(masks).to(y_hat.device),                    # L_msk (Eq. 6)
                }
                if lam.lambda_rec > 0:  # L_rec; a recipe without it saves G's second pass
                    y_bar, _ = G(m["c_y"], s_y, use_skip=lam.use_allskip)                # y_bar = G(Ec(y), Es(y))
                    g["loss/g/rec"] = F.l1_loss(y_bar, m["y"]) + losses.perceptual(self.vgg, y_bar, m["y"])
                if self.identity is not None and lam.lambda_id > 0:
                    g["loss/g/id"] = self.identity(y_hat, m["y"])
                weights = generator_loss_weights(lam)
                g_total = sum(weights[k] * v.float() for k, v in g.items())
            y_hats.append(y_hat.detach())
            out = {**g, "loss/g/total": g_total}
            for j, mask in enumerate(masks):  # how much of Ec's detail each skip layer lets through
                out[f"mask/mean_{G.resolutions[G.skip_layers[j]]}"] = mask.float().mean()
            return g_total, out

        D.requires_grad_(False)  # D is only a loss here: no weight gradients to compute
        # a trained Ec computed c_x, c_y once for the whole batch: the micro-batches share that graph
        out = accumulate.update([self.opt_g], self.g_params, self.scaler, self.accumulate, micro, self._networks(),
                                shared_graph=self.cfg.train_content_encoder)
        D.requires_grad_(True)
        b["y_hat"] = torch.cat(y_hats)
        return out

    def d_step(self, b: dict) -> dict[str, torch.Tensor]:
        """max over D of L_adv, with the R1 penalty on real images (in ``train.accumulate`` micro-batches)."""
        G, D = self.generator, self.discriminator
        parts = accumulate.split(b, self.accumulate)

        def micro(i: int):
            m = parts[i]
            with self.autocast():
                if self.cfg.train.reuse_translation_for_d:  # faster; the paper's code re-translates (default)
                    y_fake = m["y_hat"]
                else:  # as published: the updated G translates again
                    with torch.no_grad():
                        y_fake, _ = G(m["c_x"], G.style_encoder(m["y_style"]))
                y_real = m["y"].detach().requires_grad_(True)
                # Separate calls sharing one spectral-norm weight: R1's double backward then covers the
                # real images only.
                with parametrize.cached():
                    fake_logits, real_logits = D(y_fake.detach())[0].float(), D(y_real)[0].float()
                d = {"loss/d/adv": losses.adv_loss(real_logits, real=True) + losses.adv_loss(fake_logits, real=False),
                     "loss/d/r1": losses.r1_penalty(real_logits, y_real, speed.loss_scale(self.scaler, self.device))}
                d_total = d["loss/d/adv"] + self.cfg.loss.lambda_r1 * d["loss/d/r1"]
            return d_total, d

        return accumulate.update([self.opt_d], self.d_params, self.scaler, self.accumulate, micro, self._networks())

    def _networks(self) -> tuple:
        """Every network a step runs (for one spectral-norm power iteration per update)."""
        return (self.encoder, self.generator, self.discriminator)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        b = self.next_batch(step)
        out = self.g_step(b)
        out.update(self.d_step(b))
        ema_update(self.generator_ema, self.generator, self.cfg.train.ema_decay)
        return out

    # ------------------------------------------------------------------ sampler + monitoring
    def fit_style_sampler(self, progress: bool = True) -> dict:
        """Fit the sampler to the EMA style codes of the target training set.

        As published: a new sampler (default initialisation) each time, on codes of the target images
        with fresh training crops and flips (``sampler.augment``). ``sampler.warm_start`` refits the
        previous sampler instead. Every draw comes from the global RNG, which the training loop
        preserves around checkpoints, so a resumed run fits the same sampler.
        """
        s, m = self.cfg.sampler, self.cfg.model
        refit = s.warm_start and self.sampler_fitted
        if not refit:
            fresh = StyleSampler(m.noise_dim, m.sampler_hidden, m.style_dim)
            self.sampler.load_state_dict(fresh.state_dict())  # in place: the trainer keeps one module
        self.target_set.seed = int(torch.randint(2**62, ()))  # new crops and flips at every fit
        codes = collect_style_codes(self.generator_ema.style_encoder, self.target_set, self.batch, self.device)
        if s.mitigate_style_bias:
            codes = oversample_rare_styles(codes)
        epochs = s.epochs or min(max(2_000_000 // len(codes), 1), s.max_epochs)
        history = fit_sampler(self.sampler, codes, epochs, s.batch_size, s.lr, progress=progress, refit=refit)
        self.sampler_fitted = True
        return {"epochs": epochs, "codes": len(codes), "final_loss": history[-1]}

    def on_checkpoint(self, step: int) -> None:
        info = self.fit_style_sampler(progress=self.progress)
        log.info("step %d: style sampler fitted on %d codes, %d epochs, loss %.4f", step, info["codes"],
                 info["epochs"], info["final_loss"])

    @torch.no_grad()
    def sample_images(self, step: int) -> dict[str, torch.Tensor]:
        """Rows: content x, style y, G(x, y), G_ema(x, y), and G_ema with sampled styles once fitted."""
        x, y = self.preview["x"], self.preview["y"]
        self.generator.eval()
        c_x = self.encoder(x, all_features=True)
        rows = [x, y, self.generator(c_x, self.generator.style_encoder(y))[0]]
        self.generator.train()
        rows.append(self.generator_ema(c_x, self.generator_ema.style_encoder(y))[0])
        if self.sampler_fitted:
            self.sampler.eval()
            rows.append(self.generator_ema(c_x, self.sampler(self.preview_noise))[0])
        grid = make_grid(torch.cat(rows).clamp(-1, 1).cpu(), nrow=len(x), padding=1, pad_value=1)
        return {"images/translation": grid}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {"generator": self.generator.state_dict(), "generator_ema": self.generator_ema.state_dict(),
                 "discriminator": self.discriminator.state_dict(), "sampler": self.sampler.state_dict(),
                 "sampler_fitted": self.sampler_fitted, "opt_g": self.opt_g.state_dict(),
                 "opt_d": self.opt_d.state_dict(), "consumed": self.consumed}
        if self.cfg.train_content_encoder:
            state["encoder"] = self.encoder.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.sampler.load_state_dict(state["sampler"])
        self.sampler_fitted = bool(state["sampler_fitted"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if "encoder" in state:
            self.encoder.load_state_dict(state["encoder"])
        self.consumed = int(state["consumed"])
        self._open_loader()

    def export(self, run_dir: Path) -> dict[str, Path]:
        """The translator (Ec + EMA G + sampler) in our format and in the published one."""
        encoder = self.encoder.eval()
        return {
            "translator": save_translator(run_dir / "translator.pt", encoder, self.generator_ema, self.sampler,
                                          config_to_dict(self.cfg)),
            "translator_published": export_published_stage2(self.generator_ema, self.sampler,
                                                            run_dir / "translator_published.pt"),
        }


def run_stage2(cfg: Stage2Config, resume: str | None = None, progress: bool = True) -> dict:
    """Train Stage II as configured (or resume) and export the translator; {} if interrupted."""
    finished = run_training(cfg, Stage2Trainer, resume, progress)
    if finished is None:
        return {}
    trainer, run_dir = finished
    return {**trainer.export(run_dir), "run_dir": run_dir}
