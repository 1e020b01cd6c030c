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

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torchvision.utils import make_grid

from gpunit import losses
from gpunit.data.datasets import ImageFolderDataset, UnpairedDataset
from gpunit.engine import distributed
from gpunit.engine.config import config_to_dict
from gpunit.engine.run import run_training
from gpunit.engine.trainer import Trainer
from gpunit.gp_unit.config import Stage2Config, Stage2LossConfig
from gpunit.gp_unit.models import ContentEncoder, Discriminator, Generator, StyleSampler
from gpunit.gp_unit.models.arcface import IdentityLoss
from gpunit.gp_unit.sampler_fit import collect_style_codes, fit_sampler, oversample_rare_styles
from gpunit.gp_unit.weights import check_compatible, export_published_stage2, load_content_encoder, save_translator
from gpunit.nn import init_weights

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


class Stage2Trainer(Trainer):
    """Adversarial translation; driven by :func:`gpunit.engine.loop.train_loop`."""

    legacy_optimizer_keys = {"opt_g": "generator", "opt_d": "discriminator"}

    def __init__(self, cfg: Stage2Config, device: torch.device, perceptual_net=None, identity_net=None):
        m, d, t, lam = cfg.model, cfg.data, cfg.train, cfg.loss
        super().__init__(t, device, d.num_workers)
        self.cfg = cfg
        if not d.source or not d.target:
            raise ValueError("data.source and data.target must each list at least one image folder")
        if lam.r1_every < 1:
            raise ValueError(f"loss.r1_every must be >= 1 (1 = R1 at every D step), got {lam.r1_every}")
        self.dataset = UnpairedDataset(d.source, d.target, d.source_counts, d.target_counts, m.image_size,
                                       d.load_size, d.flip, seed=t.seed, same_crop=d.same_crop)
        augment = cfg.sampler.augment  # the sampler's codes: training crops and flips, or plain resizes
        self.target_set = ImageFolderDataset(d.target, m.image_size, d.target_counts, d.load_size if augment else 0,
                                             d.flip and augment)

        encoder = build_content_encoder(cfg)
        generator = Generator(m.image_size, m.content_size, m.base_channels, m.max_channels, m.style_dim,
                              m.style_base_channels, m.style_hidden, m.skip_resolutions)
        init_weights(generator)
        check_compatible(encoder, generator)
        # D stays eager: R1 needs a double backward, which torch.compile's autograd does not support.
        self.encoder = self.network("encoder", encoder, save=cfg.train_content_encoder, compile=t.compile)
        self.generator = self.network("generator", generator, compile=t.compile)
        self.generator_ema = self.ema("generator_ema", self.generator, t.ema_decay)
        discriminator = Discriminator(m.image_size, m.disc_base_channels, m.disc_max_channels, m.disc_spectral_norm)
        init_weights(discriminator)
        self.discriminator = self.network("discriminator", discriminator)
        if not 1 <= lam.style_layer <= len(self.discriminator.model):
            raise ValueError(f"loss.style_layer must be in 1..{len(self.discriminator.model)} for "
                             f"{m.image_size}px images, got {lam.style_layer}")
        self.sampler = self.network("sampler", StyleSampler(m.noise_dim, m.sampler_hidden, m.style_dim))
        self.sampler_fitted = False

        g_params = list(self.generator.parameters())
        if cfg.train_content_encoder:
            g_params += list(self.encoder.parameters())
        self.optimizer("generator", g_params, t.lr, t.betas, t.weight_decay)
        self.optimizer("discriminator", self.discriminator.parameters(), t.lr, t.betas, t.weight_decay)

        self.vgg = perceptual_net if perceptual_net is not None else losses.build_perceptual(lam.perceptual, lam.vgg_weights)
        if lam.lambda_id > 0 and identity_net is None:
            identity_net = IdentityLoss(lam.identity_weights)
        self.identity = identity_net
        for net in (self.vgg, self.identity):
            if net is not None:
                net.to(device)

        self.images_per_step = 2 * self.batch
        self.loader("train", self.dataset)
        n = min(self.batch, 8)
        preview = [self.dataset[i] for i in range(n)]
        self.preview = {k: torch.stack([p[k] for p in preview]).to(device) for k in ("x", "y")}
        self.preview_noise = torch.randn(n, m.noise_dim, generator=torch.Generator().manual_seed(t.seed)).to(device)

    def content_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(self.cfg.train_content_encoder):
            return self.encoder(images, all_features=True)

    # ------------------------------------------------------------------ one iteration
    def prepare_batch(self, step: int) -> dict[str, torch.Tensor]:
        """x, y, their content features (computed once per batch; y's only for L_rec) and the style input."""
        batch = self.next_batch()
        x, y = batch["x"], batch["y"]
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
        parts, y_hats = self.micro_batches(b), []

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
        out = self.update(["generator"], micro, shared_graph=self.cfg.train_content_encoder)
        D.requires_grad_(True)
        b["y_hat"] = torch.cat(y_hats)
        return out

    def d_step(self, b: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """max over D of L_adv, with the R1 penalty on real images (in ``train.accumulate`` micro-batches).
        With ``loss.r1_every`` = k > 1, R1 is taken at the steps divisible by k only, with k times the weight."""
        G, D = self.generator, self.discriminator
        parts = self.micro_batches(b)
        k = self.cfg.loss.r1_every
        with_r1 = step % k == 0

        def micro(i: int):
            m = parts[i]
            with self.autocast():
                if self.cfg.train.reuse_translation_for_d:  # faster; the paper's code re-translates (default)
                    y_fake = m["y_hat"]
                else:  # as published: the updated G translates again
                    with torch.no_grad():
                        y_fake, _ = G(m["c_x"], G.style_encoder(m["y_style"]))
                y_real = m["y"].detach().requires_grad_(with_r1)
                # Separate calls sharing one spectral-norm weight: R1's double backward then covers the
                # real images only.
                with parametrize.cached():
                    fake_logits, real_logits = D(y_fake.detach())[0].float(), D(y_real)[0].float()
                d = {"loss/d/adv": losses.adv_loss(real_logits, real=True) + losses.adv_loss(fake_logits, real=False)}
                d_total = d["loss/d/adv"]
                if with_r1:
                    d["loss/d/r1"] = losses.r1_penalty(real_logits, y_real, self.loss_scale())
                    d_total = d_total + k * self.cfg.loss.lambda_r1 * d["loss/d/r1"]
            return d_total, d

        return self.update(["discriminator"], micro)

    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        b = self.prepare_batch(step)
        out = self.g_step(b)
        out.update(self.d_step(b, step))
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
    def extra_state(self) -> dict:
        return {"sampler_fitted": self.sampler_fitted}

    def load_extra_state(self, state: dict) -> None:
        self.sampler_fitted = bool(state["sampler_fitted"])

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
