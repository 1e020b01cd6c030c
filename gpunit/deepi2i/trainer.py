"""DeepI2I training by transfer from a GAN (Wang et al., NeurIPS 2020, Sec. 3.1-3.2, Suppl. A), as the published
code (``DeepI2I_BigGAN``: train.py, train_fns.py) trains it.

    y_hat = Phi(Lambda(Upsilon(x)), z, c),   x from any class, z ~ N(0, I), c ~ U{classes} per sample
    D step:  max over Psi  L_adv = E[relu(1 - Psi(y, l_y))] + E[relu(1 + Psi(y_hat, c))]     hinge (Eq. 1 writes
                                                                                              the log loss: option)
    G step:  min over Lambda, Phi (phase 2), Upsilon (when trained)
             l_adv * -E[Psi(y_hat, c)] + l_rec * sum_l alpha_l d(Psi_l(y_hat), Psi_l(x))      Eq. 4, L_rec Eq. 3
             d = MSE (published; Eq. 3 writes L1: option), alpha = 0.01 at the shallowest width, else 0.1.
Psi_l are the discriminator's feature maps (32, 16, 8, 4 px at 128 px) of the translation and of its own
input; the published code compares rows 0 and 1 of its feature batch instead (``loss.pairing``, docs/deepi2i.md).

Phases (Sec. 3.2): phase 1 (``train.phase1_steps``, published 500) trains the adaptors and D with E and G
frozen; phase 2 trains everything but E. "Frozen" (``train.frozen_mode``): by default a frozen network is
in eval mode, so it computes a fixed function: its parameters, spectral-norm vectors and BatchNorm
statistics stay as loaded, and phase 1 fits the adaptors to exactly the generator that phase 2 starts
from. ``frozen_mode=train`` is the published behaviour: parameters fixed, but the networks stay in train
mode, so their spectral-norm vectors power-iterate and the generator's BatchNorm normalises with batch
statistics and moves its stored ones (tested in ``tests/deepi2i/test_deepi2i_train.py``).

Initialisation (``init.*``): G from a BigGAN generator, D and E from its discriminator (BigGAN-PyTorch's
release or ``scripts/train_biggan.py``'s ``biggan.pt``), adaptors new; or everything from scratch; or any of
E, G, D from scratch (partial transfer). The Adam moments of the source continue, as published.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.utils import make_grid

from gpunit import losses
from gpunit.biggan.models import BigGANDiscriminator, BigGANGenerator, orthogonal_init_
from gpunit.biggan.trainer import ClassConditionalTrainer, check_supported, shown_classes
from gpunit.biggan.weights import (
    BigGANStates,
    build_discriminator,
    build_generator,
    discriminator_args,
    generator_args,
    read_biggan_file,
    read_biggan_release,
    trunk_args,
)
from gpunit.data.datasets import LabelledImageDataset, labelled_classes
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.deepi2i.models import (
    PRETRAINED_FUSION_WEIGHTS,
    SCRATCH_FUSION_WEIGHTS,
    Adaptors,
    DeepI2I,
    Encoder,
    build_adaptors,
    by_width,
)
from gpunit.deepi2i.weights import build_encoder, save_deepi2i_translator
from gpunit.engine.checkpoints import CheckpointError
from gpunit.engine.config import config_to_dict
from gpunit.engine.optim import load_adam_state
from gpunit.engine.run import run_training
from gpunit.metrics.sensitivity import input_sensitivity
from gpunit.nn import eval_mode

log = logging.getLogger("gpunit.deepi2i")

NETWORKS = ("encoder", "generator", "discriminator")
PUBLISHED_PHASE1_STEPS = 500


# ----------------------------------------------------------------------------- networks
@dataclass
class DeepI2INetworks:
    encoder: Encoder
    adaptors: Adaptors
    generator: BigGANGenerator
    discriminator: BigGANDiscriminator
    fusion_weights: dict[int, float]
    transferred: set[str] = field(default_factory=set)           # of NETWORKS
    optimizer_states: dict[str, dict] = field(default_factory=dict)  # "generator", "discriminator", "encoder"
    optimizer_rows: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # class rows of the moments
    source: str = "scratch"


def class_rows(data_names: Sequence[str], source_names: Sequence[str] | None, source_rows: int,
               truncate: bool) -> list[int] | None:
    """Which source embedding row each class uses: data class i -> row i (published), or, when the source
    names its rows (our BigGAN) and has every class of the data, the row of that name. The other rows
    follow (a row permutation leaves D's spectral norm unchanged) unless ``truncate``. None: unchanged."""
    n = len(data_names)
    if n > source_rows:
        raise ValueError(f"the data has {n} classes but the source has {source_rows} class embeddings "
                         "(class i uses row i); train a BigGAN on these classes or start from scratch")
    if source_names and set(data_names) <= set(source_names):
        first = [list(source_names).index(c) for c in data_names]
    else:
        if source_names:
            log.warning("the data's classes are not all classes of the source BigGAN (%s): class i uses its "
                        "embedding row i", ", ".join(list(source_names)[:10]))
        first = list(range(n))
    rows = first if truncate else first + [r for r in range(source_rows) if r not in set(first)]
    return None if rows == list(range(source_rows)) else rows


def _with_rows(state: dict, rows: list[int] | None) -> dict:
    """G's ``shared`` and D's ``embed`` (with its spectral-norm vector) with their rows in ``rows`` order."""
    if rows is None:
        return state
    out = dict(state)
    for key in ("shared.weight", "embed.weight"):
        if key in out:
            out[key] = out[key][rows].clone()
    if "embed.u0" in out:
        out["embed.u0"] = out["embed.u0"][:, rows].clone()
    return out


def _fused_layout(cfg: DeepI2IConfig, encoder: Encoder, generator: BigGANGenerator, from_scratch: bool):
    """(fused widths shallowest first, identity widths, repeat widths, {width: fusion weight})."""
    m = cfg.model
    widths = list(encoder.feature_resolutions)  # shallowest first: 32, 16, 8, 4 at 128 px
    fused = sorted({int(r) for r in m.adaptor_resolutions}, reverse=True) if m.adaptor_resolutions else widths
    unknown = [r for r in fused + list(m.no_adaptor) if r not in widths]
    if unknown:
        raise ValueError(f"model.adaptor_resolutions / model.no_adaptor name widths {unknown}; the encoder of "
                         f"these {encoder.resolution} px networks gives {widths}")
    if not set(m.no_adaptor) <= set(fused):
        raise ValueError(f"model.no_adaptor {m.no_adaptor} must be fused widths ({fused})")
    channels = encoder.feature_channels()
    identity = [r for r in m.no_adaptor if channels[r] == generator.channels_at(r)]
    repeat = [r for r in m.no_adaptor if r not in identity]
    # published E1_fea_w: 0.1 everywhere from BigGAN; from scratch 0.1 at 32 px and 1 at 16, 8 and 4 px
    table = m.fusion_weights or (SCRATCH_FUSION_WEIGHTS if from_scratch else PRETRAINED_FUSION_WEIGHTS)
    return fused, identity, repeat, by_width(table, fused)


def read_source(cfg: DeepI2IConfig) -> BigGANStates | None:
    ini = cfg.init
    if ini.source == "scratch":
        return None
    if ini.source == "biggan_release":
        return read_biggan_release(ini.path, ini.generator, ini.optimizer_states)
    if ini.source == "gpunit_biggan":
        if not ini.path:
            raise ValueError("init.source=gpunit_biggan needs init.path=<biggan.pt of scripts/train_biggan.py>")
        if not Path(ini.path).exists():
            raise FileNotFoundError(f"init.path: {ini.path} not found; train the BigGAN first (python "
                                    "scripts/train_biggan.py --config configs/biggan/<name>.yaml writes "
                                    "runs/<name>/biggan.pt) or set init.path")
        return read_biggan_file(ini.path, ini.generator)
    raise ValueError(f"init.source must be 'biggan_release', 'gpunit_biggan' or 'scratch', got '{ini.source}'")


def build_deepi2i_networks(cfg: DeepI2IConfig, class_names: Sequence[str]) -> DeepI2INetworks:
    """E, A, G and D as ``cfg.init`` and ``cfg.model`` say (on the CPU)."""
    ini, m = cfg.init, cfg.model
    scratch = set(ini.scratch)
    unknown = scratch - set(NETWORKS)
    if unknown:
        raise ValueError(f"init.scratch may name {', '.join(NETWORKS)}; got {sorted(unknown)}")
    src = read_source(cfg)
    if src is None:
        rows = m.num_classes or len(class_names)
        if rows < len(class_names):
            raise ValueError(f"model.num_classes={rows} but the data has {len(class_names)} classes")
        g = BigGANGenerator(m.image_size, m.g_ch, rows, m.dim_z, m.shared_dim, m.g_attention)
        d = BigGANDiscriminator(m.image_size, m.d_ch, rows, m.d_attention)
        e = Encoder(m.image_size, m.d_ch, m.d_attention)
        transferred: set[str] = set()
    else:
        order = class_rows(class_names, src.class_names, src.generator["shared.weight"].shape[0],
                           ini.truncate_class_embeddings)
        g_state, d_state = _with_rows(src.generator, order), _with_rows(src.discriminator, order)
        where = src.source
        try:
            g = (BigGANGenerator(**generator_args(g_state)) if "generator" in scratch
                 else build_generator(g_state, f"{where} [generator]"))
            d = (BigGANDiscriminator(**discriminator_args(d_state)) if "discriminator" in scratch
                 else build_discriminator(d_state, f"{where} [discriminator]"))
            e = (Encoder(**trunk_args(d_state)) if "encoder" in scratch
                 else build_encoder(d_state, f"{where} [discriminator, as the encoder]"))
        except (KeyError, ValueError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{where}: not a BigGAN generator and discriminator ({err})") from None
        if g.resolution != m.image_size:
            raise ValueError(f"model.image_size={m.image_size}, but the BigGAN in {where} makes {g.resolution} px "
                             f"images; set model.image_size={g.resolution}")
        transferred = set(NETWORKS) - scratch
        log.info("DeepI2I from %s: %s transferred%s", where, ", ".join(sorted(transferred)) or "nothing",
                 f", {', '.join(sorted(scratch))} from scratch" if scratch else "")
    fused, identity, repeat, weights = _fused_layout(cfg, e, g, from_scratch=src is None)
    a = build_adaptors(e, g, fused, identity, repeat=repeat)
    if src is None:
        orthogonal_init_(a)  # published --training_scratch initialises A1 like the others (ortho)
    nets = DeepI2INetworks(e, a, g, d, weights, transferred, source=src.source if src else "scratch")
    if src is not None and ini.optimizer_states:
        _collect_optimizer_states(nets, src, order)
    return nets


def _collect_optimizer_states(nets: DeepI2INetworks, src: BigGANStates, order: list[int] | None) -> None:
    """The source's Adam states for the transferred networks (published: G <- G_optim, D and E <- D_optim)."""
    pairs = {"generator": ("G", nets.generator, "shared.weight"), "discriminator": ("D", nets.discriminator,
                                                                                    "embed.weight"),
             "encoder": ("D", nets.encoder, None)}
    for name, (key, net, embedding) in pairs.items():
        if name not in nets.transferred or key not in src.optimizer_states:
            continue
        nets.optimizer_states[name] = src.optimizer_states[key]
        names = [n for n, _ in net.named_parameters()]
        if order is not None and embedding in names:
            nets.optimizer_rows[name] = {names.index(embedding): order}


# ----------------------------------------------------------------------------- trainer
class DeepI2ITrainer(ClassConditionalTrainer):
    """DeepI2I transfer training; driven by :func:`gpunit.engine.loop.train_loop`."""

    def __init__(self, cfg: DeepI2IConfig, device: torch.device):
        d, t, lam = cfg.data, cfg.train, cfg.loss
        check_supported(t)
        super().__init__(t, device, d.num_workers)
        self.cfg = cfg
        if t.frozen_mode not in ("eval", "train"):
            raise ValueError(f"train.frozen_mode must be 'eval' or 'train', got '{t.frozen_mode}'")
        if lam.pairing not in ("input", "rows01"):
            raise ValueError(f"loss.pairing must be 'input' or 'rows01', got '{lam.pairing}'")
        self.d_loss, self.g_loss = losses.gan_losses(lam.adversarial)
        if lam.reconstruction not in ("mse", "l1"):
            raise ValueError(f"loss.reconstruction must be 'mse' or 'l1', got '{lam.reconstruction}'")

        self.class_names = labelled_classes(d.root, d.classes)
        nets = build_deepi2i_networks(cfg, self.class_names)
        self.transferred, self.source = nets.transferred, nets.source
        self.encoder = self.network("encoder", nets.encoder)
        self.adaptors = self.network("adaptors", nets.adaptors)
        self.generator = self.network("generator", nets.generator)
        self.discriminator = self.network("discriminator", nets.discriminator)
        self.deepi2i = DeepI2I(self.encoder, self.adaptors, self.generator, nets.fusion_weights)
        self.dataset = LabelledImageDataset(d.root, self.generator.resolution, d.load_size, d.flip, self.class_names,
                                            d.per_class, d.class_subfolder, seed=t.seed, with_real=True)
        self.num_classes = len(self.class_names)
        log.info("DeepI2I on %d classes, %d images; fusion weights %s", self.num_classes, len(self.dataset),
                 self.deepi2i.fusion_weights)

        self.phase1_steps = (t.phase1_steps if t.phase1_steps is not None
                             else PUBLISHED_PHASE1_STEPS if "generator" in self.transferred else 0)
        self.train_encoder = t.train_encoder if t.train_encoder is not None else "encoder" not in self.transferred
        self.generator_ema = self.ema("generator_ema", self.generator, t.ema_decay, t.ema_start) if t.ema else None

        # Adam as published: betas (0, 0.999), eps 1e-6; G 1e-4; adaptors and D (and E) 4e-4
        params = {"discriminator": list(self.discriminator.parameters()),
                  "adaptors": list(self.adaptors.parameters()), "generator": list(self.generator.parameters()),
                  "encoder": list(self.encoder.parameters()) if self.train_encoder else []}
        lrs = {"discriminator": t.lr_d, "adaptors": t.lr_adaptors, "generator": t.lr, "encoder": t.lr_encoder}
        for name, group in params.items():
            if group:  # identity adaptors have no parameters
                self.optimizer(name, group, lrs[name], t.betas, eps=t.eps)
        for name, state in nets.optimizer_states.items():
            if name in self.optimizers:
                n = load_adam_state(self.optimizers[name], state, f"{self.source} [{name} optimizer]",
                                    nets.optimizer_rows.get(name))
                log.info("%s: continuing %d Adam states of %s", name, n, self.source)

        self.rec_weights = by_width(lam.rec_weights, self.discriminator.feature_resolutions)  # alpha_l by width

        self.images_per_step = 2 * self.batch
        self.phase = 0
        self.loader("train", self.dataset)
        self._make_preview()
        self.set_phase(self.phase_of(1))

    # ------------------------------------------------------------------ data
    def _make_preview(self) -> None:
        n = min(6, len(self.dataset))
        picks = [round(i * (len(self.dataset) - 1) / max(n - 1, 1)) for i in range(n)]  # spread over the classes
        self.preview_x = torch.stack([self.dataset[i]["x"] for i in picks]).to(self.device)
        gen = torch.Generator().manual_seed(self.cfg.train.seed)
        self.preview_z = torch.randn(n, self.generator.dim_z, generator=gen).to(self.device)

    # ------------------------------------------------------------------ phases
    def set_phase(self, phase: int) -> None:
        """Which networks train and which mode each frozen one is in (module docstring)."""
        frozen_train = self.cfg.train.frozen_mode == "train"
        self.encoder.train(self.train_encoder or frozen_train).requires_grad_(self.train_encoder)
        self.generator.train(phase == 2 or frozen_train).requires_grad_(phase == 2)
        self.adaptors.train().requires_grad_(True)
        self.discriminator.train().requires_grad_(True)
        if phase != self.phase:
            if self.phase:
                log.info("phase %d from here on: %s and the discriminator train", phase,
                         ", ".join(self._trained_names(phase)))
            self.phase = phase

    def phase_of(self, step: int) -> int:
        return 1 if step <= self.phase1_steps else 2

    def _trained_names(self, phase: int) -> list[str]:
        names = ["adaptors"] + (["generator"] if phase == 2 else []) + (["encoder"] if self.train_encoder else [])
        return [n for n in names if n in self.optimizers]

    # ------------------------------------------------------------------ one iteration
    def d_step(self, b: dict, z: torch.Tensor | None = None, c: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """max over D of L_adv: translations of b["x"] into classes c (no gradient) against the reals b["y"]."""
        D = self.discriminator
        if z is None:
            z, c = self.sample_noise(len(b["x"]))
        parts = self.micro_batches({"x": b["x"], "y": b["y"], "l_y": b["l_y"], "z": z, "c": c})

        def micro(i: int):
            p = parts[i]
            with self.autocast():
                with torch.no_grad():
                    y_hat = self.deepi2i(p["x"], p["z"], p["c"])                    # G(A(E(x)), z, c)
                # one call on [translations; reals], as published (one spectral-norm iteration)
                logits = D(torch.cat([y_hat, p["y"]]), torch.cat([p["c"], p["l_y"]])).float()
            fake, real = logits[:len(y_hat)], logits[len(y_hat):]
            loss_real, loss_fake = self.d_loss(real, fake)                           # L_adv (Eq. 1; hinge)
            return loss_real + loss_fake, {"loss/d/real": loss_real, "loss/d/fake": loss_fake}

        return self.update(["discriminator"], micro)

    def _pairs(self, feats: dict[int, torch.Tensor], n: int):
        """(features of the translations, features of what they are compared with) for L_rec."""
        if self.cfg.loss.pairing == "rows01":  # the published code on one device: rows 0 and 1 of [y_hat; x]
            return {r: f[0:1] for r, f in feats.items()}, {r: f[1:2] for r, f in feats.items()}
        return {r: f[:n] for r, f in feats.items()}, {r: f[n:].detach() for r, f in feats.items()}

    def g_step(self, b: dict, z: torch.Tensor | None = None, c: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """min over the trained of E, A, G of l_adv L_adv + l_rec L_rec (Eq. 4); D is only a loss here."""
        lam, D = self.cfg.loss, self.discriminator
        trained = self._trained_names(self.phase)
        if not trained:  # phase 1 without any adaptor parameters (every width without an adaptor)
            return {}
        if z is None:
            z, c = self.sample_noise(len(b["x"]))
        parts = self.micro_batches({"x": b["x"], "l_x": b["l_x"], "z": z, "c": c})

        def micro(i: int):
            p = parts[i]
            with self.autocast():
                y_hat = self.deepi2i(p["x"], p["z"], p["c"])                        # y_hat = G(A(E(x)), z, c)
                logits, feats = D(torch.cat([y_hat, p["x"]]), torch.cat([p["c"], p["l_x"]]), return_features=True)
            n = len(y_hat)
            logits, feats = logits.float(), {r: f.float() for r, f in feats.items()}
            adv = self.g_loss(logits[:n])                                             # L_adv (Eq. 1; hinge)
            rec_terms = losses.feature_reconstruction_terms(*self._pairs(feats, n), self.rec_weights,
                                                            lam.reconstruction)       # L_rec (Eq. 3; MSE)
            rec = sum(rec_terms.values()) if rec_terms else logits.new_zeros(())
            total = lam.lambda_adv * adv + lam.lambda_rec * rec                       # Eq. 4
            terms = {"loss/g/adv": adv, "loss/g/rec": rec, "loss/g/total": total}
            terms.update({f"loss/g/rec_{r}": v for r, v in rec_terms.items()})
            return total, terms

        D.requires_grad_(False)
        try:
            return self.update(trained, micro)
        finally:
            D.requires_grad_(True)

    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        """The published order: a D step, then a G step on the same inputs with new z and c."""
        self.set_phase(self.phase_of(step))
        b = self.next_batch()
        out = self.d_step(b, *self.noise(step, 0))
        out.update(self.g_step(b, *self.noise(step, 1)))  # new z and c, as published
        out["phase"] = torch.tensor(float(self.phase))
        return out

    # ------------------------------------------------------------------ monitoring and export
    def translator_network(self) -> DeepI2I:
        """E + A + the EMA generator (or G without EMA): what samples and the export use."""
        g = self.generator_ema if self.generator_ema is not None else self.generator
        return self.deepi2i if g is self.generator else DeepI2I(self.encoder, self.adaptors, g,
                                                                self.deepi2i.fusion_weights)

    @torch.no_grad()
    def sample_images(self, step: int) -> dict[str, torch.Tensor | float]:
        """One row per preview input: the input, then its translation into each shown class (up to 8); and the
        input sensitivity of those translations (:mod:`gpunit.metrics.sensitivity`; two noise vectors shared by
        every input), so that a run which ignores its input shows it within minutes."""
        net = self.translator_network()
        classes = shown_classes(self.num_classes, 8)
        x, z = self.preview_x, self.preview_z
        n = len(x)
        with eval_mode(net):
            feats = net.adapted_features(x)
            outs = [net.generate(feats, z, torch.full((n,), c, device=self.device)) for c in classes]
            shared = [[net.generate(feats, z[k].expand(n, -1), torch.full((n,), c, device=self.device)).float()
                       for k in range(2)] for c in classes]
        rows = torch.stack([x.float()] + [o.float() for o in outs], 1)  # (N, 1 + classes, 3, H, W)
        grid = make_grid(rows.flatten(0, 1).clamp(-1, 1).cpu(), nrow=1 + len(classes), padding=1, pad_value=1)
        figures = [input_sensitivity(x.float(), torch.stack(per_z, 1)) for per_z in shared]
        return {"images/translation": grid,
                "metric/input_sensitivity": sum(f["input_sensitivity"] for f in figures) / len(figures),
                "metric/style_sensitivity": sum(f["style_sensitivity"] for f in figures) / len(figures)}

    # ------------------------------------------------------------------ export
    def export(self, run_dir: Path) -> Path:
        """``deepi2i.pt`` for scripts/translate.py and gpunit.load_translator (class names inside)."""
        return save_deepi2i_translator(run_dir / "deepi2i.pt", self.translator_network(), self.class_names,
                                       config_to_dict(self.cfg))


def run_deepi2i(cfg: DeepI2IConfig, resume: str | None = None, progress: bool = True) -> dict:
    """Train DeepI2I as configured (or resume) and export the translator; {} if interrupted."""
    finished = run_training(cfg, DeepI2ITrainer, resume, progress)
    if finished is None:
        return {}
    trainer, run_dir = finished
    return {"translator": trainer.export(run_dir), "run_dir": run_dir}
