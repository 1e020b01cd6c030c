"""Stage II: one G/D step, gradients, exact resume, the style sampler, the script end to end."""
import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_state, run_script, start_training, wait_for_file

import gpunit
from gpunit import losses
from gpunit.engine.checkpoints import CheckpointManager
from gpunit.engine.config import load_config
from gpunit.engine.loop import train_loop
from gpunit.engine.run import prepare_run_dir
from gpunit.gp_unit.config import Stage2Config
from gpunit.gp_unit.models import ContentEncoder, StyleSampler
from gpunit.gp_unit.sampler_fit import fit_sampler, nearest_sample_distance, oversample_rare_styles
from gpunit.gp_unit.stage2 import Stage2Trainer
from gpunit.gp_unit.weights import save_content_encoder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ec") / "content_encoder.pt"
    save_content_encoder(ContentEncoder(64, 8, 8, 16), path)
    return path


def tiny_sets(root, out, encoder, **extra):
    sets = [f"content_encoder={encoder}", f"data.source=[{root}/domains/ellipse/train]",
            f"data.target=[{root}/domains/star/train]", f"out_dir={out}", "model.base_channels=8",
            "model.max_channels=16", "model.style_base_channels=8", "model.style_dim=16", "model.style_hidden=8",
            "model.disc_base_channels=8", "model.disc_max_channels=16", "data.num_workers=0",
            "train.batch_size=2", "sampler.max_epochs=3", "train.checkpoint_every=2"]
    return sets + [f"{k}={v}" for k, v in extra.items()]


def tiny_config(root, out, encoder, **extra) -> Stage2Config:
    return load_config(REPO / "configs/gp_unit/stage2/synthetic.yaml", Stage2Config, tiny_sets(root, out, encoder, **extra))


def test_one_step_gradients(tiny_synthetic, tmp_path, encoder_file):
    trainer = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file), torch.device("cpu"))
    losses = trainer.train_step(1)
    assert {"loss/g/adv", "loss/g/con", "loss/g/sty", "loss/g/msk", "loss/g/rec", "loss/d/adv", "loss/d/r1"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert "mask/mean_16" in losses and "mask/mean_32" in losses
    for net in (trainer.generator, trainer.discriminator):
        for name, p in net.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in trainer.encoder.parameters())
    assert not trainer.encoder.training  # frozen Ec: no spectral-norm power iteration
    # EMA moved towards G but is not G
    g, ema = trainer.generator.state_dict(), trainer.generator_ema.state_dict()
    assert any(not torch.equal(g[k], ema[k]) for k in g)


def test_the_demo_shape_recipe_step(tiny_synthetic, tmp_path, encoder_file):
    """configs/gp_unit/stage2/synthetic_shape.yaml: D without spectral norm, no skips, no L_rec (G runs once per
    step: no reconstruction pass, and D reuses the translation), lazy R1 (at step 4, not at step 1), and every
    network still learns."""
    from torch.nn.utils import parametrize

    cfg = load_config(REPO / "configs/gp_unit/stage2/synthetic_shape.yaml", Stage2Config,
                      tiny_sets(tiny_synthetic, tmp_path, encoder_file))
    trainer = Stage2Trainer(cfg, torch.device("cpu"))
    assert not any(parametrize.is_parametrized(m) for m in trainer.discriminator.modules())
    calls = []
    trainer.generator.register_forward_hook(lambda *_: calls.append(1))
    assert cfg.loss.r1_every == 4
    losses = trainer.train_step(1)
    assert len(calls) == 1
    assert "loss/g/rec" not in losses and not any(k.startswith("mask/") for k in losses)
    assert {"loss/g/adv", "loss/g/con", "loss/g/sty", "loss/d/adv"} <= set(losses) and "loss/d/r1" not in losses
    assert "loss/d/r1" in trainer.train_step(4)
    for net in (trainer.generator, trainer.discriminator):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters() if p.requires_grad)


def test_lazy_r1_takes_r1_on_every_kth_step_with_k_times_the_weight(tiny_synthetic, tmp_path, encoder_file):
    """loss.r1_every=k: D's gradient is that of L_adv alone at a step not divisible by k, and that of
    L_adv + k * lambda_r1 * R1 at one that is."""
    k = 3
    trainer = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file,
                                        **{"train.reuse_translation_for_d": "true", "loss.r1_every": str(k)}),
                            torch.device("cpu"))
    lam, D = trainer.cfg.loss, trainer.discriminator
    b = trainer.prepare_batch(1)
    trainer.g_step(b)
    for step, r1_weight in ((4, 0.0), (6, k * lam.lambda_r1)):
        reference = copy.deepcopy(D).requires_grad_(True)
        out = trainer.d_step(b, step)
        y_real = b["y"].detach().requires_grad_(True)
        fake_logits, real_logits = reference(torch.cat([b["y_hat"], y_real]))[0].chunk(2)
        adv = losses.adv_loss(real_logits, real=True) + losses.adv_loss(fake_logits, real=False)
        r1 = losses.r1_penalty(real_logits, y_real)
        (adv + r1_weight * r1).backward()
        assert ("loss/d/r1" in out) == (r1_weight > 0), step
        for (name, p), q in zip(D.named_parameters(), reference.parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), (step, name)


def test_lazy_r1_refuses_a_period_below_one(tiny_synthetic, tmp_path, encoder_file):
    with pytest.raises(ValueError, match="loss.r1_every"):
        Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file, **{"loss.r1_every": "0"}),
                      torch.device("cpu"))


def test_discriminator_calls_match_one_batched_call(tiny_synthetic, tmp_path, encoder_file):
    """The steps score fakes and reals in separate D calls sharing one spectral-norm weight; the
    published code scores torch.cat([fake, real]) in one call. Same losses, same D gradients, same
    power-iteration state (one iteration per step, not two)."""
    trainer = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file,
                                        **{"train.reuse_translation_for_d": "true"}), torch.device("cpu"))
    lam, D = trainer.cfg.loss, trainer.discriminator
    b = trainer.prepare_batch(1)

    reference = copy.deepcopy(D).requires_grad_(False)
    out = trainer.g_step(b)
    logits, f_d = reference(torch.cat([b["y_hat"], b["y"]]), lam.style_layer)
    assert torch.allclose(out["loss/g/adv"], losses.adv_loss(logits.chunk(2)[0], real=True), atol=1e-5)
    assert torch.allclose(out["loss/g/sty"], losses.style_loss(*f_d.chunk(2)), atol=1e-5)
    assert_same_buffers(D, reference)

    reference = copy.deepcopy(D).requires_grad_(True)
    out = trainer.d_step(b)
    y_real = b["y"].detach().requires_grad_(True)
    fake_logits, real_logits = reference(torch.cat([b["y_hat"], y_real]))[0].chunk(2)
    adv = losses.adv_loss(real_logits, real=True) + losses.adv_loss(fake_logits, real=False)
    r1 = losses.r1_penalty(real_logits, y_real)
    (adv + lam.lambda_r1 * r1).backward()
    assert torch.allclose(out["loss/d/adv"], adv, atol=1e-5) and torch.allclose(out["loss/d/r1"], r1, rtol=1e-4)
    for (name, p), q in zip(D.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), name
    assert_same_buffers(D, reference)


def assert_same_buffers(net, reference):
    for (name, a), b in zip(net.named_buffers(), reference.buffers()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_ablations_switch(tiny_synthetic, tmp_path, encoder_file):
    no_prior = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file, train_content_encoder="true",
                                         **{"model.skip_resolutions": "[]", "loss.lambda_sty": 0}),
                             torch.device("cpu"))
    losses = no_prior.train_step(1)
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in no_prior.encoder.parameters())  # Ec trained from scratch with G
    assert not any("skiplayer" in k for k in no_prior.generator.state_dict())


def test_lambda_sty_0_takes_the_style_loss_out_of_the_g_step(tiny_synthetic, tmp_path, encoder_file):
    """loss.lambda_sty=0 (the ablation without L_sty): L_sty is still measured, but the G step's total is the
    weighted sum of the other terms and G's gradients lack lambda_sty times L_sty's own: the G step of the
    recipe's lambda_sty has gradients ablated + lambda_sty * (those of L_sty alone), all from the same weights
    and batch."""
    recipe = tiny_config(tiny_synthetic, tmp_path, encoder_file).loss
    assert recipe.lambda_sty > 0
    trainer = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file, **{"loss.lambda_sty": 0}),
                            torch.device("cpu"))
    lam, G = trainer.cfg.loss, trainer.generator
    batch = trainer.prepare_batch(1)
    start = {name: copy.deepcopy(net.state_dict()) for name, net in (("G", G), ("D", trainer.discriminator))}

    def g_step(**weights):  # the G step from the same weights and batch, with these loss weights
        G.load_state_dict(start["G"])
        trainer.discriminator.load_state_dict(start["D"])  # its spectral-norm vectors too
        for key, value in weights.items():
            setattr(lam, key, value)
        out = trainer.g_step(batch)
        return out, [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in G.parameters()]

    terms = ("adv", "con", "sty", "msk", "rec")
    ablated, grads = g_step()
    assert float(ablated["loss/g/sty"]) > 0  # measured and logged, not trained on
    others = sum(getattr(lam, f"lambda_{t}") * ablated[f"loss/g/{t}"] for t in terms if t != "sty")
    torch.testing.assert_close(ablated["loss/g/total"], others)

    full, full_grads = g_step(lambda_sty=recipe.lambda_sty)
    torch.testing.assert_close(full["loss/g/total"], others + recipe.lambda_sty * full["loss/g/sty"])
    _, style_grads = g_step(lambda_sty=1.0, lambda_adv=0.0, lambda_con=0.0, lambda_msk=0.0, lambda_rec=0.0)
    scale = max(float(g.abs().max()) for g in full_grads)
    assert max(float(g.abs().max()) for g in style_grads) * recipe.lambda_sty > 0.01 * scale  # L_sty moves G
    for (name, _), f, a, s in zip(G.named_parameters(), full_grads, grads, style_grads):
        torch.testing.assert_close(f, a + recipe.lambda_sty * s, rtol=1e-4, atol=1e-5 * scale, msg=name)


def run(cfg, resume=None):
    run_dir = prepare_run_dir(cfg.out_dir, cfg.name, {}, resume=resume is not None)
    trainer = Stage2Trainer(cfg, torch.device("cpu"))
    train_loop(trainer, run_dir=run_dir, total_steps=cfg.train.iterations, log_every=1, image_every=100,
               checkpoint_every=cfg.train.checkpoint_every, keep_checkpoints=2, resume=resume, progress=False)
    return trainer


def test_resume_is_exact(tiny_synthetic, tmp_path, encoder_file):
    torch.manual_seed(0)
    straight = run(tiny_config(tiny_synthetic, tmp_path / "a", encoder_file, **{"train.iterations": 4}))
    torch.manual_seed(0)
    run(tiny_config(tiny_synthetic, tmp_path / "b", encoder_file, **{"train.iterations": 2}))
    torch.manual_seed(99)
    resumed = run(tiny_config(tiny_synthetic, tmp_path / "b", encoder_file, **{"train.iterations": 4}), resume="auto")
    for net in ("generator", "generator_ema", "discriminator", "sampler"):
        a, b = getattr(straight, net).state_dict(), getattr(resumed, net).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (net, k)


def assert_equal_states(a, b, where="state"):
    """Nested dicts and lists of tensors and plain values, equal to the bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_a_gpunit_0_1_checkpoint_still_resumes(tiny_synthetic, tmp_path, encoder_file):
    """A Stage II training checkpoint as gpunit 0.1 wrote it (optimisers under "opt_g" and "opt_d", "consumed" a
    single count), made from today's by moving the keys back, resumes (Trainer._upgraded) to the same run, to
    the bit, as today's file."""
    torch.manual_seed(0)
    run(tiny_config(tiny_synthetic, tmp_path / "a", encoder_file, **{"train.iterations": 2}))
    new = tmp_path / "a" / "stage2_synthetic" / "checkpoints" / "step-0000002.pt"
    state = torch.load(new, weights_only=True)
    del state["checksum"]  # gpunit 0.1 wrote none (such a file loads with a note)
    trainer = state["trainer"]
    optimizers, consumed = trainer.pop("optimizers"), trainer.pop("consumed")
    assert optimizers.keys() == {"generator", "discriminator"} and consumed == {"train": 4}
    trainer.update(opt_g=optimizers["generator"], opt_d=optimizers["discriminator"], consumed=4)
    old = tmp_path / "gpunit_0.1.pt"
    torch.save(state, old)
    finished = {}
    for name, path in (("new", new), ("old", old)):
        torch.manual_seed(99)  # a resumed run restores every RNG from the checkpoint
        run(tiny_config(tiny_synthetic, tmp_path / name, encoder_file, **{"train.iterations": 4}), resume=str(path))
        finished[name] = torch.load(tmp_path / name / "stage2_synthetic" / "checkpoints" / "step-0000004.pt",
                                    weights_only=True)
    assert finished["old"]["trainer"]["consumed"] == {"train": 8}
    assert_equal_states(finished["new"], finished["old"])


def test_sampler_fit_covers_the_style_codes():
    torch.manual_seed(0)
    centres = torch.randn(4, 16) * 3
    codes = (centres[torch.randint(0, 4, (256,))] + 0.1 * torch.randn(256, 16)).relu()  # clustered, non-negative
    sampler = StyleSampler(8, 32, 16)
    before = nearest_sample_distance(sampler, codes)
    history = fit_sampler(sampler, codes, epochs=60, batch_size=64, progress=False)
    after = nearest_sample_distance(sampler, codes)
    assert after < 0.5 * before and history[-1] < history[0]
    assert not sampler.training
    rare = oversample_rare_styles(torch.cat([torch.zeros(1999, 2), torch.ones(1, 2)]))
    assert len(rare) > 2000 and (rare == 1).all(1).sum() > 1  # the outlier is repeated


def test_sampler_fit_log_lines_count_the_epochs(capsys):
    """Off a terminal the fit's bar writes plain lines; none of them may show a stale epoch count (the loss
    used to redraw it every 20 epochs as "0/N")."""
    codes = torch.rand(64, 16, generator=torch.Generator().manual_seed(0))
    fit_sampler(StyleSampler(8, 32, 16), codes, epochs=41, batch_size=32, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "style sampler" in line]
    assert lines and all("loss=" not in line or " 0/41" not in line for line in lines)


def test_sampler_fit_does_not_depend_on_the_codes_scale():
    """Codes 100x smaller fit to the same sampler, 100x smaller (a high-lr Stage II leaves tiny codes),
    for a new sampler and for a refit of one."""
    codes = (torch.randn(128, 16, generator=torch.Generator().manual_seed(1)) + 1).relu()
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    fitted = {}
    for factor in (1.0, 0.01):
        torch.manual_seed(0)
        sampler = StyleSampler(8, 32, 16)
        fit_sampler(sampler, codes * factor, epochs=3, batch_size=32, progress=False)
        fitted["new", factor] = sampler(z).detach() / factor
        fit_sampler(sampler, codes * factor, epochs=2, batch_size=32, progress=False, refit=True)
        fitted["refit", factor] = sampler(z).detach() / factor
    for kind in ("new", "refit"):
        torch.testing.assert_close(fitted[kind, 0.01], fitted[kind, 1.0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fitted["new", 1.0], fitted["refit", 1.0])


@pytest.mark.parametrize("warm_start", [False, True])
def test_sampler_refit_fresh_on_augmented_codes(tiny_synthetic, tmp_path, encoder_file, monkeypatch, warm_start):
    """Default (published): every checkpoint fits a new sampler on the codes of freshly cropped and
    flipped target images; sampler.warm_start refits the previous one; sampler.augment=false encodes
    plain resizes."""
    from gpunit.gp_unit import stage2

    calls = []

    def spy(sampler, codes, *args, **kwargs):
        calls.append({"codes": codes.clone(), "start": copy.deepcopy(sampler.state_dict())})
        with torch.no_grad():
            for p in sampler.parameters():
                p.add_(1.0)  # stands in for the fit: moves every weight
            sampler.bn1.running_mean.add_(1.0)
        return [0.0]

    monkeypatch.setattr(stage2, "fit_sampler", spy)
    cfg = tiny_config(tiny_synthetic, tmp_path, encoder_file, **{"sampler.warm_start": str(warm_start).lower()})
    assert Stage2Config().sampler.warm_start is False and Stage2Config().sampler.augment is True
    trainer = Stage2Trainer(cfg, torch.device("cpu"))
    assert (trainer.target_set.augment.load_size, trainer.target_set.augment.flip) == (72, True)
    trainer.fit_style_sampler(progress=False)
    fitted = copy.deepcopy(trainer.sampler.state_dict())
    trainer.fit_style_sampler(progress=False)
    first, second = calls
    assert torch.equal(first["start"]["bn1.running_mean"], torch.zeros(cfg.model.sampler_hidden))  # a new sampler
    if warm_start:
        assert all(torch.equal(second["start"][k], fitted[k]) for k in fitted)
    else:  # new weights and statistics again, not the fitted ones
        assert torch.equal(second["start"]["bn1.running_mean"], torch.zeros(cfg.model.sampler_hidden))
        assert not torch.equal(second["start"]["lin1.weight"], fitted["lin1.weight"])
        assert not torch.equal(second["start"]["lin1.weight"], first["start"]["lin1.weight"])
    # G_ema did not change between the fits: different codes come from new crops and flips
    assert first["codes"].shape == (len(trainer.target_set), cfg.model.style_dim)
    assert not torch.allclose(first["codes"], second["codes"])

    plain = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path / "plain", encoder_file,
                                      **{"sampler.augment": "false"}), torch.device("cpu"))
    assert (plain.target_set.augment.resize_to, plain.target_set.augment.flip) == (64, False)
    calls.clear()
    plain.fit_style_sampler(progress=False)
    plain.fit_style_sampler(progress=False)
    assert torch.equal(calls[0]["codes"], calls[1]["codes"])


def test_script_exports_a_loadable_translator(tiny_synthetic, tmp_path, encoder_file):
    sets = tiny_sets(tiny_synthetic, tmp_path, encoder_file, **{"train.iterations": 2})
    done = run_script("scripts/train_stage2.py", "--no-progress", "--set", *sets)
    assert done.status == 0, done.err[-2000:]
    run_dir = tmp_path / "stage2_synthetic"
    translator = gpunit.load_translator(str(run_dir / "translator.pt"))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert translator.translate(x, num_styles=2, seed=0).shape == (4, 3, 64, 64)
    published = gpunit.load_translator(str(run_dir / "translator_published.pt"),
                                       content_encoder=str(encoder_file))
    torch.testing.assert_close(published.translate(x, style=x), translator.translate(x, style=x))
    assert list((run_dir / "images").glob("*.png"))


def test_config_errors_reach_the_user(tiny_synthetic, tmp_path):
    """A user's mistake ends the script with exit status 2 and one line that names it, no traceback."""
    done = run_script("scripts/train_stage2.py", "--set", "train.lrr=1")
    assert done.status == 2 and "did you mean 'train.lr'" in done.err
    done = run_script("scripts/train_stage2.py", "--set", f"content_encoder={tmp_path}/no.pt", "data.source=[x]",
                      "data.target=[y]", f"out_dir={tmp_path}")
    assert done.status == 2 and done.err.splitlines()[-1] == "error: image folder not found: x", done.err
    domains = tiny_synthetic / "domains"
    done = run_script("scripts/train_stage2.py", "--set", f"content_encoder={tmp_path}/no.pt",
                      f"data.source=[{domains}/ellipse/train]", f"data.target=[{domains}/star/train]",
                      f"out_dir={tmp_path}")
    assert done.status == 2 and "Traceback" not in done.err
    assert done.err.splitlines()[-1].startswith(f"error: content encoder not found: {tmp_path}/no.pt. Train one with")


# The unit roundoff of each low precision: 8 significant bits for bf16, 11 for fp16, on every CPU.
UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
# A loss term under autocast is a mean over network outputs whose every layer rounds its inputs, weights and
# outputs to the low precision (<= u/2 each). The errors partly cancel in the mean and add up along the
# network to a few u (most in L_con, a difference of two encodings); a CPU's own summation order moves that
# by a fraction of u. 16 u (bf16 6.3%, fp16 0.8%) is above any rounding and far below a real fault: a term
# taken outside autocast's float32 reductions, a loss scale left in (2^16), a wrong or missing term.
ROUNDOFF_MARGIN = 16


@pytest.mark.parametrize("low", ["bf16", "fp16"])
def test_low_precision_tracks_fp32(tiny_synthetic, tmp_path, encoder_file, low):
    """Three steps under bf16 (or fp16 with loss scaling) autocast give the fp32 losses, every term within the
    precision's rounding (ROUNDOFF_MARGIN u relative). Each step starts from the fp32 run's state (weights,
    optimisers, data position, seed), so only rounding separates the two (trajectories of different weights
    would drift apart by the updates, not by rounding)."""
    trainers = {}
    for precision in ("fp32", low):
        torch.manual_seed(0)
        trainers[precision] = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path / precision, encoder_file,
                                                        **{"train.precision": precision}), torch.device("cpu"))
    tolerance = ROUNDOFF_MARGIN * UNIT_ROUNDOFF[low]
    rounded = False
    for step in (1, 2, 3):
        trainers[low].load_state_dict(copy.deepcopy(trainers["fp32"].state_dict()))
        torch.manual_seed(step)
        fp32 = trainers["fp32"].train_step(step)
        torch.manual_seed(step)
        low_run = trainers[low].train_step(step)
        for tag in ("loss/g/adv", "loss/g/con", "loss/g/sty", "loss/g/msk", "loss/g/rec", "loss/g/total",
                    "loss/d/adv"):
            a, b = float(fp32[tag]), float(low_run[tag])
            assert abs(b - a) <= tolerance * abs(a), (step, tag, a, b)
            rounded |= a != b
        # R1 is the squared norm of D's input gradient, a sum of terms that largely cancel, so its rounding is
        # not a few u; a loss scale left in it (fp16 scales by 2^16) would be off by orders of magnitude.
        assert float(low_run["loss/d/r1"]) == pytest.approx(float(fp32["loss/d/r1"]), rel=0.5), step
    assert rounded  # and low precision was really used: the values are close, not identical


@pytest.mark.slow  # about 3 minutes of torch.compile on 2 cores: run with -m slow
def test_channels_last_and_compile_follow_the_plain_step(tiny_synthetic, tmp_path, encoder_file):
    """train.channels_last + train.compile (Ec and G compiled, backward included) give the plain
    step's losses: the same computation in another memory layout and kernels. (It caught torch
    2.14's compiled replication-pad backward returning channels_last maps where it promised
    contiguous ones.)"""
    runs = {}
    for name, extra in (("plain", {}), ("fast", {"train.channels_last": "true", "train.compile": "true"})):
        torch.manual_seed(0)
        trainer = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path / name, encoder_file, **extra), torch.device("cpu"))
        runs[name] = [trainer.train_step(step) for step in (1, 2)]
    assert trainer.to_device(torch.zeros(1, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
    for plain, fast in zip(runs["plain"], runs["fast"]):
        for tag in ("loss/g/adv", "loss/g/con", "loss/g/sty", "loss/g/msk", "loss/g/rec", "loss/d/adv"):
            assert float(fast[tag]) == pytest.approx(float(plain[tag]), rel=1e-3, abs=1e-5), tag


def test_unknown_precision_is_rejected(tiny_synthetic, tmp_path, encoder_file):
    with pytest.raises(ValueError, match="train.precision"):
        Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file, **{"train.precision": "fp8"}),
                      torch.device("cpu"))


def test_a_signal_to_the_whole_job_checkpoints_with_loader_workers(tiny_synthetic, tmp_path, encoder_file):
    """Ctrl+C in a terminal (SIGINT) and Slurm (SIGTERM) signal every process, the loader's workers too: the run
    still finishes its step, saves a checkpoint and stops cleanly, with exit status 128 + the signal's number
    (said in its last line), so that `train && translate` stops too. Real processes: the signal goes to a
    process group, as a terminal sends it. One run per signal, started together so that their interpreter
    starts (~7 s of imports each) overlap."""
    runs = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            sets = tiny_sets(tiny_synthetic, tmp_path / signum.name, encoder_file, **{
                "data.num_workers": 1, "train.iterations": 100000, "train.log_every": 1,
                "train.checkpoint_every": 100000})
            runs[signum] = subprocess.Popen(
                [sys.executable, "scripts/train_stage2.py", "--no-progress", "--set", *sets], cwd=REPO,
                env={**os.environ, "OMP_NUM_THREADS": "1"},  # a core each
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for signum, proc in runs.items():
            metrics = tmp_path / signum.name / "stage2_synthetic" / "metrics.jsonl"
            for _ in range(1200):  # wait (up to 2 minutes on a loaded machine) for the first logged step
                if metrics.is_file() and metrics.read_text().strip() or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read()
            os.killpg(proc.pid, signum)
        for signum, proc in runs.items():
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 128 + signum, (signum.name, out)  # 143, 130: the shell's convention
            assert out.strip().splitlines()[-1].startswith(f"stopped by {signum.name} after saving step"), out
            assert list((tmp_path / signum.name / "stage2_synthetic" / "checkpoints").glob("step-*.pt")), signum.name
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def test_kill_9_mid_run_then_resume_is_bitwise_a_straight_run(tiny_synthetic, tmp_path, encoder_file):
    """A real Stage II process killed with -9 (no handler, no cleanup) after a few checkpoints: --resume auto
    takes over its stale lock and ends bitwise equal to a run that was never interrupted (Stage I's twin is in
    tests/engine/test_integrity.py). One thread in every run: a CPU reduction's bits depend on the count."""
    out, run_dir = tmp_path / "killed", tmp_path / "killed" / "stage2_synthetic"
    sets = tiny_sets(tiny_synthetic, out, encoder_file, **{"train.iterations": 100000, "train.checkpoint_every": 1,
                                                           "train.image_every": 100000})
    proc = start_training("scripts/train_stage2.py", sets)
    try:
        wait_for_file(proc, run_dir / "checkpoints" / "step-0000003.pt")
    finally:
        proc.kill()
        proc.communicate()
    total = CheckpointManager(run_dir, 1).latest_step() + 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = run_script("scripts/train_stage2.py", "--no-progress", "--resume", "auto", "--set",
                             *tiny_sets(tiny_synthetic, out, encoder_file, **{"train.iterations": total,
                                        "train.checkpoint_every": 1, "train.image_every": 100000}))
        assert resumed.status == 0, resumed.err[-2000:]
        assert f"PID {proc.pid}) is no longer running" in resumed.err
        straight = run_script("scripts/train_stage2.py", "--no-progress", "--set",
                              *tiny_sets(tiny_synthetic, tmp_path / "straight", encoder_file, **{
                                  "train.iterations": total, "train.checkpoint_every": total,
                                  "train.image_every": 100000}))
        assert straight.status == 0, straight.err[-2000:]
    finally:
        torch.set_num_threads(threads)
    name = f"checkpoints/step-{total:07d}.pt"
    assert_same_state(CheckpointManager.load(tmp_path / "straight" / "stage2_synthetic" / name),
                      CheckpointManager.load(run_dir / name))


def test_emulated_low_precision_on_cpu_is_warned_once(monkeypatch, caplog):
    """bf16 on a CPU without bf16 instructions runs ~5x slower than fp32: the user is told, once."""
    from gpunit.engine import speed

    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "_warned_emulated", set())
    monkeypatch.setattr(speed, "cpu_has_native", lambda precision: precision == "fp32")
    with caplog.at_level("WARNING", logger="gpunit.speed"):
        speed.autocast(cpu, "bf16")
        speed.autocast(cpu, "bf16")
        speed.autocast(cpu, "fp32")
    assert [r.getMessage().split()[1] for r in caplog.records] == ["bf16"]
    caplog.clear()
    monkeypatch.setattr(speed, "_warned_emulated", set())
    monkeypatch.setattr(speed, "cpu_has_native", lambda precision: True)
    with caplog.at_level("WARNING", logger="gpunit.speed"):
        speed.autocast(cpu, "bf16")
    assert not caplog.records
    assert isinstance(speed.cpu_has_native("bf16"), bool)  # oneDNN's own check runs on this CPU


@pytest.mark.parametrize("amx, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu_and_is_logged(tiny_synthetic, tmp_path, encoder_file, monkeypatch, caplog,
                                                      amx, expected):
    """train.precision=auto without the timed probe (GPUNIT_PROBE=off, as in the suite; the probe itself:
    tests/engine/test_precision_probe.py): bf16 only on CPUs with AMX, fp32 elsewhere."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setenv("GPUNIT_PROBE", "off")
    with caplog.at_level("INFO", logger="gpunit.speed"):
        trainer = Stage2Trainer(tiny_config(tiny_synthetic, tmp_path, encoder_file, **{"train.precision": "auto"}),
                                torch.device("cpu"))
        trainer.resolve_auto_settings(1)
    assert trainer.precision == expected
    assert any(f"train.precision=auto: {expected}" in r.getMessage() for r in caplog.records)
    with trainer.autocast():
        y = torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
    assert y.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
