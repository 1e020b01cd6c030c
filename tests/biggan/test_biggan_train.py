"""Our class-conditional BigGAN: one step (hinge losses, which networks get gradients), the EMA schedule,
class-conditional sample grids, exact resume, and the exported file that DeepI2I starts from."""
import copy
from pathlib import Path

import pytest
import torch

from gpunit import losses
from gpunit.biggan.config import BigGANConfig
from gpunit.biggan.trainer import BigGANTrainer
from gpunit.biggan.weights import read_biggan_file
from gpunit.engine.config import load_config
from gpunit.engine.loop import train_loop
from gpunit.engine.run import prepare_run_dir

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def tiny_config(root, out, **extra) -> BigGANConfig:
    sets = [f"data.root={root}/domains", "data.num_workers=0", f"out_dir={out}", "model.g_ch=4", "model.d_ch=4",
            "model.dim_z=20", "model.shared_dim=8", "model.g_attention=[32]", "model.d_attention=[16]",
            "train.batch_size=4", "train.log_every=1", "train.image_every=100", "train.checkpoint_every=2",
            "train.ema=true"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(REPO / "configs/biggan/synthetic.yaml", BigGANConfig, sets)


def test_one_step_losses_gradients_and_ema(tiny_synthetic, tmp_path):
    cfg = tiny_config(tiny_synthetic, tmp_path, **{"train.ema_start": 2, "train.ema_decay": 0.5})
    trainer = BigGANTrainer(cfg, CPU)
    assert trainer.class_names == ["ellipse", "ring", "star"] and trainer.generator.num_classes == 3
    b = trainer.next_batch()
    z, c = trainer.sample_noise(4)
    D, G = trainer.discriminator, trainer.generator
    with torch.no_grad():  # the hinge loss of this D on these fakes and reals, on copies in train mode
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        logits = d(torch.cat([g(z, g.shared(c)), b["x"]]), torch.cat([c, b["l_x"]]))
    out = trainer.d_step(b, z, c)
    real, fake = losses.hinge_d_loss(logits[4:], logits[:4])
    torch.testing.assert_close(out["loss/d/real"], real, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss/d/fake"], fake, rtol=1e-5, atol=1e-6)
    assert all(p.grad is not None for p in D.parameters()) and all(p.grad is None for p in G.parameters())
    d_grads = [p.grad.clone() for p in D.parameters()]
    out = trainer.g_step(z, c)
    assert torch.isfinite(out["loss/g/adv"]) and all(p.grad is not None for p in G.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(D.parameters(), d_grads))  # the G step leaves D's alone
    assert all(p.requires_grad for p in D.parameters())
    # EMA: a copy of G before train.ema_start, a moving average from it on
    trainer.train_step(1)
    assert all(torch.equal(a, b) for a, b in zip(trainer.generator_ema.state_dict().values(), G.state_dict().values()))
    trainer.train_step(2)
    assert not torch.equal(trainer.generator_ema.linear.weight, G.linear.weight)
    grid = trainer.sample_images(2)["images/samples"]  # one row per class, 8 noise vectors
    assert grid.shape == (3, 1 + 3 * 65, 1 + 8 * 65)


def run(cfg, resume=None):
    run_dir = prepare_run_dir(cfg.out_dir, cfg.name, {}, resume=resume is not None)
    trainer = BigGANTrainer(cfg, CPU)
    t = cfg.train
    train_loop(trainer, run_dir=run_dir, total_steps=t.iterations, log_every=1, image_every=100,
               checkpoint_every=t.checkpoint_every, keep_checkpoints=2, resume=resume, progress=False)
    return trainer, run_dir


@pytest.mark.parametrize("d_steps,reuse", [(2, False), (1, True)])
def test_resume_is_exact_and_export_feeds_deepi2i(tiny_synthetic, tmp_path, d_steps, reuse):
    """4 steps straight (2 D steps per G step, or one on the G step's fakes; 2 micro-batches, EMA from step 2,
    DiffAugment and the mode-seeking term) against 2 + resume 2: identical G, EMA, D and optimizers. The
    exported biggan.pt holds what DeepI2I reads."""
    extra = {"train.iterations": 4, "train.d_steps": d_steps, "train.reuse_fakes_for_d": reuse,
             "train.accumulate": 2, "train.ema_start": 2, "loss.diffaugment": "color,translation,cutout",
             "loss.mode_seeking": 1}
    torch.manual_seed(0)
    straight, _ = run(tiny_config(tiny_synthetic, tmp_path / "a", **extra))
    assert straight.state_dict()["consumed"]["train"] == 4 * d_steps * 4  # d_steps batches per step
    torch.manual_seed(0)
    run(tiny_config(tiny_synthetic, tmp_path / "b", **{**extra, "train.iterations": 2}))
    torch.manual_seed(3)
    resumed, run_dir = run(tiny_config(tiny_synthetic, tmp_path / "b", **extra), resume="auto")
    a, b = straight.state_dict(), resumed.state_dict()
    for net in ("generator", "generator_ema", "discriminator"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    for opt in ("generator", "discriminator"):
        for i, s in a["optimizers"][opt]["state"].items():
            assert torch.equal(s["exp_avg_sq"], b["optimizers"][opt]["state"][i]["exp_avg_sq"]), (opt, i)
    path = resumed.export(run_dir, 4)
    states = read_biggan_file(path)  # the EMA generator by default
    assert states.class_names == ["ellipse", "ring", "star"] and states.step == 4
    assert torch.equal(states.generator["linear.weight"], resumed.generator_ema.linear.weight)
    assert torch.equal(read_biggan_file(path, "raw").generator["linear.weight"], resumed.generator.linear.weight)
    assert float(states.optimizer_states["G"]["state"][0]["step"]) == 4


def test_options(tiny_synthetic, tmp_path):
    t = BigGANTrainer(tiny_config(tiny_synthetic, tmp_path, **{"loss.adversarial": "log", "train.ema": "false",
                                                               "data.classes": "[star, ring]"}), CPU)
    assert t.generator_ema is None and t.class_names == ["star", "ring"]
    out = t.train_step(1)
    assert all(torch.isfinite(v) for v in out.values())
    assert t.sample_images(1)["images/samples"].shape[1] == 1 + 2 * 65
    with pytest.raises(ValueError, match="mode_seeking"):
        BigGANTrainer(tiny_config(tiny_synthetic, tmp_path, **{"loss.mode_seeking": -1}), CPU)
    with pytest.raises(ValueError, match="DiffAugment"):
        BigGANTrainer(tiny_config(tiny_synthetic, tmp_path, **{"loss.diffaugment": "colour"}), CPU)
    with pytest.raises(ValueError, match="model.num_classes=2"):
        BigGANTrainer(tiny_config(tiny_synthetic, tmp_path, **{"model.num_classes": 2}), CPU)
    with pytest.raises(ValueError, match="d_steps"):
        BigGANTrainer(tiny_config(tiny_synthetic, tmp_path, **{"train.d_steps": 0}), CPU)


def test_mode_seeking_term_pairs_one_class_and_is_added_to_the_g_loss(tiny_synthetic, tmp_path):
    """L_ms = mean|G(z1, c) - G(z2, c)| / mean|z1 - z2| on the pairs (i, i + B/2), which share their class;
    G's loss is L_adv + lambda_ms / L_ms, so its gradient differs from the plain loss's at the same weights."""
    def trainer(weight):
        torch.manual_seed(0)
        return BigGANTrainer(tiny_config(tiny_synthetic, tmp_path / str(weight),
                                         **{"loss.mode_seeking": weight, "train.ema": "false"}), CPU)

    with_term, plain = trainer(2), trainer(0)
    z, c = torch.randn(4, with_term.generator.dim_z), torch.tensor([0, 1, 2, 0])
    g = copy.deepcopy(with_term.generator)
    with torch.no_grad():
        y = g(z, g.shared(torch.tensor([0, 1, 0, 1])))  # samples 2 and 3 take the classes of 0 and 1
    expected = (y[:2] - y[2:]).abs().mean() / (z[:2] - z[2:]).abs().mean()
    out = with_term.g_step(z, c)
    torch.testing.assert_close(out["loss/g/mode_seeking"], expected, rtol=1e-4, atol=1e-6)
    assert "loss/g/mode_seeking" not in plain.g_step(z, c)
    assert not torch.allclose(with_term.generator.linear.weight.grad, plain.generator.linear.weight.grad)


def test_reuse_fakes_for_d_scores_the_g_steps_fakes_with_one_generator_pass(tiny_synthetic, tmp_path):
    """train.reuse_fakes_for_d: the G step runs first, and the D step scores exactly its fakes (with their
    classes, mode-seeking pairs included) beside the reals, so G runs once per step instead of twice."""
    def d_inputs(reuse):
        torch.manual_seed(0)
        t = BigGANTrainer(tiny_config(tiny_synthetic, tmp_path / str(reuse), **{
            "train.reuse_fakes_for_d": reuse, "train.accumulate": 2, "loss.mode_seeking": 1}), CPU)
        calls, g_passes = [], []
        t.discriminator.register_forward_pre_hook(lambda m, args: calls.append([a.detach().clone() for a in args]))
        t.generator.register_forward_pre_hook(lambda m, args: g_passes.append(1))
        out = t.train_step(1)
        assert all(torch.isfinite(v) for v in out.values())
        return calls, len(g_passes)

    calls, g_passes = d_inputs(True)
    assert g_passes == 2  # one per micro-batch of the G step; the D step draws none
    (g1, c1), (g2, c2), (d1, l1), (d2, l2) = calls  # G step's two micro-batches, then D's
    assert torch.equal(d1[:2], g1) and torch.equal(d2[:2], g2)  # [fakes; reals], the fakes the G step drew
    assert torch.equal(l1[:2], c1) and torch.equal(l2[:2], c2)
    assert d_inputs(False)[1] == 4  # published order: G draws the D step's fakes, then the G step's
    with pytest.raises(ValueError, match="reuse_fakes_for_d"):
        BigGANTrainer(tiny_config(tiny_synthetic, tmp_path, **{"train.reuse_fakes_for_d": True,
                                                               "train.d_steps": 2}), CPU)
