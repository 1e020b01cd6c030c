"""Stage I: generative prior distillation (paper Sec. 3.2, Appendix A.3).

Each step mixes unpaired images (unary losses only) with same-latent pairs (x, y) from two classes:

    L_arec = ||F(Ec(x), Es(x), l_x) - x||_2 + perceptual                    appearance reconstruction
    L_srec = l_s ||Fs(Ec(x), l_x) - x_s||_1                                    (Eq. 2)
    L_dis  = ||Ec(x) - Ec(y)||_1 + l_s ||Fs(Ec(y), l_x) - x_s||_1            (pairs only)
    L_reg  = CE(C(R(Ec(x))), l_x) + l_r ||Ec(x)||_2                            (R: gradient reversal)
    min over Ec, Es, F, C of L_arec + L_srec + L_dis + L_reg                  (Eq. 1)
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from gpunit import losses
from gpunit.data.datasets import PriorImageDataset, domain_labels
from gpunit.engine import distributed
from gpunit.engine.logger import RunLogger
from gpunit.engine.run import run_training
from gpunit.engine.trainer import Trainer
from gpunit.gp_unit.config import Stage1Config
from gpunit.gp_unit.models import PriorAutoEncoder
from gpunit.gp_unit.weights import export_published_content_encoder, export_published_stage1, save_content_encoder
from gpunit.metrics.prior import pair_feature_ratio
from gpunit.nn import init_weights

log = logging.getLogger("gpunit.stage1")


class Stage1Trainer(Trainer):
    """Prior distillation; driven by :func:`gpunit.engine.loop.train_loop`."""

    legacy_optimizer_keys = {"opt": "model"}

    def __init__(self, cfg: Stage1Config, device: torch.device, perceptual_net=None):
        m, d, t = cfg.model, cfg.data, cfg.train
        super().__init__(t, device, d.num_workers)
        self.cfg = cfg
        self.labels = domain_labels(d.paired_root, d.unpaired_root)
        num_domains = m.num_domains or len(self.labels)
        if num_domains < len(self.labels):
            raise ValueError(f"model.num_domains={num_domains} but the data has {len(self.labels)} class folders")
        unknown = sorted(set(d.domain_counts) - set(self.labels))
        if unknown:  # a misspelt folder would silently fall back to images_per_domain
            raise ValueError(f"data.domain_counts names {unknown}, which are not class folders of "
                             f"{d.paired_root} or {d.unpaired_root}; use folder names such as "
                             f"{next(iter(self.labels))!r}")
        data_kw = dict(labels=self.labels, image_size=m.image_size, load_size=d.load_size, flip=d.flip,
                       per_domain=d.images_per_domain, domain_counts=d.domain_counts, seed=t.seed)
        self.paired = PriorImageDataset(d.paired_root, d.paired_mask_root, paired=True, **data_kw)
        self.unpaired = (PriorImageDataset(d.unpaired_root, d.unpaired_mask_root, **{**data_kw, "seed": t.seed + 1})
                         if d.unpaired_root else None)  # another seed: its crops must not mirror the pairs'

        model = PriorAutoEncoder(m.image_size, m.content_size, m.base_channels, m.max_channels,
                                 num_domains, m.label_dim, m.content_noise)
        init_weights(model)
        self.model = self.network("model", model, compile=t.compile)
        self.optimizer("model", self.model.parameters(), t.lr, t.betas, t.weight_decay)
        self.vgg = perceptual_net if perceptual_net is not None else \
            losses.build_perceptual(cfg.loss.perceptual, cfg.loss.vgg_weights)
        if self.vgg is not None:
            self.vgg.to(device)
        self.images_per_step = self.batch * (3 if self.unpaired else 2)
        self.loader("paired", self.paired)
        if self.unpaired:
            self.loader("unpaired", self.unpaired)
        self.preview = self._preview_batch()

    def shape_target(self, mask: torch.Tensor) -> torch.Tensor:
        """The instance mask at Fs's resolution (2x the content size), 3 channels as published."""
        size = 2 * self.cfg.model.content_size
        return F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)

    # ------------------------------------------------------------------ one iteration
    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        lam = self.cfg.loss
        p = self.next_batch("paired")
        B = len(p["x"])  # this process's batch
        parts = [(p["x"], p["l_x"], p["m_x"]), (p["y"], p["l_y"], p["m_y"])]
        if self.unpaired:
            u = self.next_batch("unpaired")
            parts.insert(0, (u["x"], u["l_x"], u["m_x"]))
        x = torch.cat([a for a, _, _ in parts])
        labels = torch.cat([b for _, b, _ in parts])
        shapes = self.shape_target(torch.cat([c for _, _, c in parts]))
        pair = slice(x.shape[0] - 2 * B, x.shape[0])  # the x and y halves of the pairs
        py = slice(pair.start + B, pair.stop)  # the y half of the pairs

        ae, k = self.model, self.accumulate
        # One coin per (global) batch, as published; drawn from (seed, step), so every process of a
        # distributed run flips alike.
        flip = distributed.step_uniform(self.cfg.train.seed, step) < lam.style_flip_prob
        with self.autocast():
            # Ec(x) and its noise once for the whole batch, whatever train.accumulate is: L_reg's norm runs
            # over the batch, and the micro-batches take their rows (sharing this graph).
            content = ae.contentE(x)
            noisy = ae.add_noise(content)
        content_f = content.float()
        weights = {"loss/arec/l2": lam.lambda_arec, "loss/arec/perceptual": lam.lambda_arec,
                   "loss/srec": lam.lambda_srec, "loss/dis/content": lam.lambda_fdist,
                   "loss/dis/shape": lam.lambda_sdist, "loss/reg/cls": lam.lambda_cls,
                   "loss/reg/norm": k * lam.lambda_reg}  # once per batch, and every micro-batch loss is / k
        b, first = B // k, pair.start  # micro-batch i: rows i*b .. (i+1)*b of the unpaired, x and y parts

        def micro(i: int):
            cut = [slice(first + i * b, first + (i + 1) * b), slice(py.start + i * b, py.start + (i + 1) * b)]
            if first:
                cut.insert(0, slice(i * b, (i + 1) * b))

            def take(t: torch.Tensor) -> torch.Tensor:
                return t if k == 1 else torch.cat([t[c] for c in cut])

            xi, li, si, ci, ni = take(x), take(labels), take(shapes), take(content_f), take(noisy)
            pi, qi = slice(len(xi) - 2 * b, len(xi) - b), slice(len(xi) - b, len(xi))  # this micro-batch's pairs
            with self.autocast():
                style = ae.styleE(xi.flip(-1) if flip else xi)
                recon, shape = ae.decode(ni, style, li)
                # Swap the pairs' content features: the shape of x predicted from Ec(y), and vice versa.
                shape_swapped = ae.predict_shape(torch.cat([ni[qi], ni[pi]]), li[pi.start:])
                recon, shape, shape_swapped = recon.float(), shape.float(), shape_swapped.float()
                terms = {
                    "loss/arec/l2": F.mse_loss(recon, xi),                                     # L_arec
                    "loss/arec/perceptual": losses.perceptual(self.vgg, recon, xi),
                    "loss/srec": F.l1_loss(shape, si),                                          # L_srec (Eq. 2)
                    "loss/dis/content": F.l1_loss(ci[pi], ci[qi].detach()),                    # L_dis
                    "loss/dis/shape": F.l1_loss(shape_swapped, si[pi.start:]),
                    "loss/reg/cls": F.cross_entropy(ae.classify(ci).float(), li),              # L_reg
                }
                if i == k - 1:
                    # ||Ec(x)||_2 over the whole batch, as the published torch.norm(content) (summed in
                    # fp32, as autocast runs torch.norm); under torchrun the squares are summed over
                    # every process's share of the global batch.
                    terms["loss/reg/norm"] = distributed.global_sum(content_f.square().sum()).sqrt()
            total = sum(weights[key] * v for key, v in terms.items())
            return total, {**terms, "loss/total": total}

        return self.update(["model"], micro, shared_graph=True)

    # ------------------------------------------------------------------ monitoring
    def _preview_batch(self) -> dict:
        n = min(self.batch, 6)
        items = [self.paired[i] for i in range(n)]
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in items[0]}

    @torch.no_grad()
    def sample_images(self, step: int) -> dict[str, torch.Tensor]:
        """Rows: x, its mask, F(Ec(x)), Fs(Ec(x)), y, F(Ec(y)), Fs(Ec(y), l_x) (x's shape from y's content)."""
        ae, b = self.model, self.preview
        ae.eval()
        try:
            up = lambda t: F.interpolate(t, size=b["x"].shape[-2:], mode="nearest")  # noqa: E731
            recon_x, content_x, shape_x = ae(b["x"], b["l_x"], noise=False)
            recon_y, content_y, _ = ae(b["y"], b["l_y"], noise=False)
            shape_from_y = ae.predict_shape(content_y, b["l_x"])
            rows = [b["x"], b["m_x"].expand(-1, 3, -1, -1), recon_x, up(shape_x), b["y"], recon_y, up(shape_from_y)]
        finally:
            ae.train()
        grid = make_grid(torch.cat(rows).clamp(-1, 1).cpu(), nrow=len(b["x"]), padding=1, pad_value=1)
        return {"images/stage1": grid}

    # ------------------------------------------------------------------ export
    def export(self, run_dir: Path) -> dict[str, Path]:
        """The content encoder for Stage II (ours and the published format) and the published Stage I file."""
        ae = self.model.eval()
        return {
            "content_encoder": save_content_encoder(ae.contentE, run_dir / "content_encoder.pt"),
            "content_encoder_published": export_published_content_encoder(
                ae.contentE, run_dir / "content_encoder_published.pt"),
            "prior_autoencoder_published": export_published_stage1(ae, run_dir / "prior_distillation_published.pt"),
        }


def run_stage1(cfg: Stage1Config, resume: str | None = None, progress: bool = True) -> dict:
    """Train Stage I as configured (or resume), export the content encoder, check it on held-out pairs.

    Returns the exported files and the held-out pair ratio; an interrupted run returns {} (resume it).
    """
    finished = run_training(cfg, Stage1Trainer, resume, progress)
    if finished is None:
        return {}
    trainer, run_dir = finished
    step = cfg.train.iterations
    outputs: dict = trainer.export(run_dir)
    if cfg.data.test_root and Path(cfg.data.test_root).is_dir():
        result = pair_feature_ratio(trainer.model.contentE.eval(), cfg.data.test_root)
        outputs["pair_ratio"] = result
        logger = RunLogger(run_dir)
        logger.scalars(step, {"metric/pair_ratio": result["ratio"]})
        logger.close()
        log.info("held-out pairs: same-latent / different-latent content L1 = %.3f (%.4f / %.4f)",
                 result["ratio"], result["same_latent_l1"], result["different_latent_l1"])
    outputs["run_dir"] = run_dir
    return outputs
