"""DeepI2I training: the published losses and gradients (fixtures), phases and frozen semantics, gradient
accumulation, initialisation switches, exact resume after SIGTERM, the NaN guard, the script end to end."""
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_script
from PIL import Image

import gpunit
from gpunit import losses
from gpunit.biggan.config import BigGANConfig
from gpunit.biggan.models import BigGANDiscriminator
from gpunit.data.datasets import LabelledImageDataset
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.deepi2i.models import by_width
from gpunit.deepi2i.trainer import DeepI2ITrainer
from gpunit.engine.config import ConfigError, load_config
from gpunit.engine.loop import NonFiniteLossError, train_loop
from gpunit.engine.run import prepare_run_dir

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
RES = (32, 16, 8, 4)


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    return torch.load(fixtures_dir / "deepi2i" / "deepi2i_small_seed0.pt", weights_only=True)


def tiny_config(root, out, biggan, **extra) -> DeepI2IConfig:
    sets = [f"init.path={biggan}", f"data.root={root}/domains", "data.class_subfolder=train", "data.num_workers=0",
            f"out_dir={out}", "train.batch_size=4", "train.accumulate=1", "train.phase1_steps=1",
            "train.log_every=1", "train.image_every=100", "train.checkpoint_every=2"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(REPO / "configs/deepi2i/synthetic.yaml", DeepI2IConfig, sets)


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


# ----------------------------------------------------------------------------- losses against the fixtures
def test_loss_functions_reproduce_published_formulas(fx):
    """losses.py's hinge and feature-reconstruction terms on the published code's captured logits and D
    features give its losses; rows 0/1 is the published pairing, row i with row B+i ours."""
    ref, step = fx["train_step"]["losses"], fx["train_step"]
    close = dict(rtol=1e-4, atol=1e-6)
    real, fake = losses.hinge_d_loss(step["D_step"]["D_real"], step["D_step"]["D_fake"])
    torch.testing.assert_close(real, ref["D_loss_real"], **close)
    torch.testing.assert_close(fake, ref["D_loss_fake"], **close)
    torch.testing.assert_close(losses.hinge_g_loss(step["G_step"]["D_fake"]), ref["G_adv"], **close)
    feats, B = step["G_step"]["D_feats_all"], 3
    weights = by_width(DeepI2IConfig().loss.rec_weights, RES)  # our default alpha_l by width
    assert weights == {k: fx["config"]["D_fea_w"][k] for k in RES}  # == the published D_fea_w
    published = losses.feature_reconstruction_terms({k: f[0:1] for k, f in feats.items()},
                                                    {k: f[1:2] for k, f in feats.items()}, weights)
    ours = losses.feature_reconstruction_terms({k: f[:B] for k, f in feats.items()},
                                               {k: f[B:] for k, f in feats.items()}, weights)
    for k in RES:
        torch.testing.assert_close(published[k], ref["G_feat_terms"][k], **close)
        torch.testing.assert_close(ours[k], ref["NOT_OFFICIAL_feat_terms_pairwise_fake_vs_input"][k], **close)
    torch.testing.assert_close(losses.hinge_g_loss(step["G_step"]["D_fake"]) + sum(published.values()),
                               ref["G_total"], **close)
    # the paper's options: L1 distance (Eq. 3) and the log loss (Eq. 1)
    l1 = losses.feature_reconstruction_terms({8: feats[8][:B]}, {8: feats[8][B:]}, {8: 0.1}, "l1")
    torch.testing.assert_close(l1[8], 0.1 * (feats[8][:B] - feats[8][B:]).abs().mean())
    d_fake, d_real = step["D_step"]["D_fake"], step["D_step"]["D_real"]
    log_real, log_fake = losses.log_d_loss(d_real, d_fake)
    torch.testing.assert_close(log_real, -torch.sigmoid(d_real).log().mean())
    torch.testing.assert_close(log_fake, -(1 - torch.sigmoid(d_fake)).log().mean())
    torch.testing.assert_close(losses.log_g_loss(d_fake), -torch.sigmoid(d_fake).log().mean())
    with pytest.raises(ValueError, match="loss.reconstruction"):
        losses.feature_reconstruction_terms({}, {}, {}, "l2")


def fixture_trainer(fx, fixtures_dir, tmp_path, **extra) -> DeepI2ITrainer:
    """A trainer on the fixture's release layout (G <- G_ema.pth, D <- D.pth) with its E1 and A1, 5 classes."""
    for c in range(5):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * c, 90, 200)).save(tmp_path / "data" / f"c{c}" / "0.png")
    sets = ["init.source=biggan_release", f"init.path={fixtures_dir}/deepi2i/biggan_release_layout",
            f"data.root={tmp_path}/data", "data.num_workers=0", "train.batch_size=3", "train.accumulate=1",
            f"out_dir={tmp_path}"] + [f"{k}={v}" for k, v in extra.items()]
    trainer = DeepI2ITrainer(load_config(None, DeepI2IConfig, sets), CPU)
    drop = ("linear.", "embed.")  # the published E1/A1 heads that ours do not have
    trainer.encoder.load_state_dict({k: v for k, v in fx["state_E1"].items() if not k.startswith(drop)})
    trainer.adaptors.load_state_dict({k: v for k, v in fx["state_A1"].items() if not k.startswith(drop)})
    return trainer


def fixture_batch(fx) -> tuple[dict, torch.Tensor, torch.Tensor]:
    i = fx["inputs"]
    return {"x": i["t_x"], "l_x": i["t_y"], "y": i["x"], "l_y": i["y"]}, i["z"], i["gy"]


def test_trainer_step_reproduces_published_gradients(fx, fixtures_dir, tmp_path):
    """One D step and one G step of our trainer, set to the published semantics (frozen networks in train
    mode, the rows-0/1 pairing, phase 2, no optimizer step: lr 0), give the published code's losses, its
    D, A1 and G gradients (none for E1) and every buffer afterwards, at the fixtures' tolerances. Our
    default pairing gives the fixtures' per-sample term (translation i against input i)."""
    trainer = fixture_trainer(fx, fixtures_dir, tmp_path, **{
        "train.frozen_mode": "train", "loss.pairing": "rows01", "train.phase1_steps": 0, "train.lr": 0,
        "train.lr_d": 0, "train.lr_adaptors": 0})
    opt_g = trainer.optimizers["generator"].state_dict()["state"]  # the release's Adam moments continue, as published
    assert float(opt_g[0]["step"]) == 138000 and set(trainer.optimizers) == {"discriminator", "adaptors", "generator"}
    b, z, c = fixture_batch(fx)
    out = trainer.d_step(b, z, c)
    after_d_step = copy.deepcopy(trainer.state_dict())
    out.update(trainer.g_step(b, z, c))
    ref = fx["train_step"]["losses"]
    for ours, theirs in [("loss/d/real", ref["D_loss_real"]), ("loss/d/fake", ref["D_loss_fake"]),
                         ("loss/g/adv", ref["G_adv"]), ("loss/g/total", ref["G_total"])] + \
                        [(f"loss/g/rec_{k}", ref["G_feat_terms"][k]) for k in RES]:
        torch.testing.assert_close(out[ours], theirs, rtol=1e-4, atol=1e-6, msg=ours)
    stored = fx["train_step"]["grads"]
    assert all(p.grad is None for p in trainer.encoder.parameters())
    for name, net in (("D", trainer.discriminator), ("A1", trainer.adaptors), ("G", trainer.generator)):
        grads = {k: p.grad for k, p in net.named_parameters()}
        gmax = max(float(g.abs().max()) for g in stored["full"][name].values())
        for key, grad in grads.items():
            assert grad is not None, (name, key)
            full = key in stored["full"][name]
            mine, theirs = (grad, stored["full"][name][key]) if full else \
                (grad[:, :, 1, 1], stored["conv3x3_centre_tap"][name][key])
            torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=2e-3 * gmax, msg=f"{name} {key}")
    after = fx["train_step"]["buffers_after"]  # spectral-norm vectors (written once per call) and G's BN statistics
    for name, net in (("G", trainer.generator), ("D", trainer.discriminator), ("E1", trainer.encoder),
                      ("A1", trainer.adaptors)):
        for key, value in net.named_buffers():
            ref_value = after[name][key]
            torch.testing.assert_close(value, ref_value, rtol=1e-4, atol=2e-5 * float(ref_value.abs().max()),
                                       msg=f"{name} {key}")
    # our default pairing, from the same state: each translation against its own input
    trainer.load_state_dict(after_d_step)
    trainer.cfg.loss.pairing = "input"
    out = trainer.g_step(b, z, c)
    for k in RES:
        torch.testing.assert_close(out[f"loss/g/rec_{k}"], ref["NOT_OFFICIAL_feat_terms_pairwise_fake_vs_input"][k],
                                   rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- phases and frozen semantics
@pytest.mark.parametrize("frozen_mode", ["eval", "train"])
def test_phases_move_the_right_parameters(tiny_synthetic, tmp_path, tiny_biggan, frozen_mode):
    """Phase 1: A and D train; E and G keep their parameters (eval: also every buffer; train, as published:
    their spectral-norm vectors and G's BatchNorm statistics move). Phase 2: G trains too; E never."""
    trainer = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path, tiny_biggan, **{"train.frozen_mode": frozen_mode}),
                             CPU)
    nets = {"E": trainer.encoder, "A": trainer.adaptors, "G": trainer.generator, "D": trainer.discriminator}
    params = {n: {k for k, _ in net.named_parameters()} for n, net in nets.items()}
    before = {n: snapshot(net) for n, net in nets.items()}
    out = trainer.train_step(1)
    assert float(out["phase"]) == 1 and trainer.generator.training == (frozen_mode == "train")
    moved = {n: changed(before[n], net) for n, net in nets.items()}
    assert moved["A"] >= params["A"] and moved["D"] >= params["D"]  # every parameter (and their SN vectors)
    assert not moved["E"] & params["E"] and not moved["G"] & params["G"]
    if frozen_mode == "eval":
        assert moved["E"] == set() and moved["G"] == set()  # frozen in every sense
    else:
        assert any(k.endswith("u0") for k in moved["E"])
        assert {k for k in moved["G"] if "stored_" in k} == {k for k in before["G"] if "stored_" in k}
    before = {n: snapshot(net) for n, net in nets.items()}
    out = trainer.train_step(2)
    assert float(out["phase"]) == 2 and trainer.generator.training
    assert all(p.requires_grad for p in trainer.generator.parameters())
    moved = {n: changed(before[n], net) for n, net in nets.items()}
    assert {k for k in params["G"] if k.endswith("weight")} <= moved["G"]  # biases before a BN may have no gradient
    assert moved["A"] >= params["A"] and moved["D"] >= params["D"]
    assert not moved["E"] & params["E"] and (moved["E"] == set()) == (frozen_mode == "eval")


# ----------------------------------------------------------------------------- accumulation
def trainer_with(root, out, biggan, **extra) -> DeepI2ITrainer:
    torch.manual_seed(0)  # the same adaptor init for every trainer of a test
    return DeepI2ITrainer(tiny_config(root, out, biggan, **extra), CPU)


def grads(net) -> dict:
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def assert_grads_close(a: dict, b: dict, what: str) -> None:
    """The tolerance of k micro-batches against one batch: float rounding only (measured: <= 6e-6 of the
    largest gradient of the tensor, <= 2e-6 of the network's); 1e-4 of the tensor's is allowed."""
    assert a.keys() == b.keys() and a, what
    for key in a:
        scale = float(a[key].abs().max())
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4 * scale + 1e-12, msg=f"{what} {key}")


def test_accumulation_equals_one_batch(tiny_synthetic, tmp_path, tiny_biggan):
    """Phase 1: two micro-batches of 2 give the gradients, losses and spectral-norm vectors of one batch of 4.
    Phase 2 (G in train mode): BatchNorm normalises each micro-batch by its own statistics, so k micro-batches
    give the mean of k half-batch updates, each from the same state: that is tested instead."""
    one = trainer_with(tiny_synthetic, tmp_path / "1", tiny_biggan)
    two = trainer_with(tiny_synthetic, tmp_path / "2", tiny_biggan, **{"train.accumulate": 2})
    assert one.phase == two.phase == 1
    b = one.next_batch()
    z, c = one.sample_noise(4)
    out1, out2 = one.d_step(b, z, c), two.d_step(b, z, c)
    assert_grads_close(grads(one.discriminator), grads(two.discriminator), "D")
    for key in out1:
        torch.testing.assert_close(out2[key], out1[key], rtol=1e-5, atol=1e-6)
    for (k, u1), u2 in zip(one.discriminator.named_buffers(), two.discriminator.buffers()):
        torch.testing.assert_close(u2, u1, rtol=1e-5, atol=1e-6, msg=k)  # one power iteration per update
    out1, out2 = one.g_step(b, z, c), two.g_step(b, z, c)
    assert_grads_close(grads(one.adaptors), grads(two.adaptors), "A")
    torch.testing.assert_close(out2["loss/g/total"], out1["loss/g/total"], rtol=1e-5, atol=1e-6)

    # phase 2: k=2 on 4 images == the mean of two k=1 updates on 2 images each, from the same state
    half = trainer_with(tiny_synthetic, tmp_path / "h", tiny_biggan, **{"train.batch_size": 2})
    state = copy.deepcopy(two.state_dict())
    for t in (two, half):
        t.load_state_dict(copy.deepcopy(state))
        t.set_phase(2)
    two.g_step(b, z, c)
    means = {}
    for part in (slice(0, 2), slice(2, 4)):
        half.load_state_dict(copy.deepcopy(state))
        half.g_step({k: v[part] for k, v in b.items()}, z[part], c[part])
        for k, g in grads(half.generator).items():
            means[k] = means.get(k, 0) + g / 2
    assert_grads_close(means, grads(two.generator), "G (phase 2)")


# ----------------------------------------------------------------------------- initialisation
def test_initialisation_switches(tiny_synthetic, tmp_path, tiny_biggan, fixtures_dir):
    source = torch.load(tiny_biggan, weights_only=True)
    # from our BigGAN: G <- its EMA generator, D and E <- its D; class rows matched by name
    t = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "a", tiny_biggan, **{"data.classes": "[star, ellipse]"}),
                       CPU)
    assert t.transferred == {"encoder", "generator", "discriminator"} and not t.train_encoder
    # the demo's config scales the fusion weights for its small prior; with none given, the published table
    assert t.phase1_steps == 1 and t.deepi2i.fusion_weights == {16: 10.0, 8: 20.0, 4: 20.0}
    published = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "a0", tiny_biggan,
                                           **{"model.fusion_weights": "{}"}), CPU)
    assert published.deepi2i.fusion_weights == {16: 0.1, 8: 0.1, 4: 0.1}
    g_src = source["generator_ema"]["shared.weight"]
    torch.testing.assert_close(t.generator.shared.weight[:2], g_src[[2, 0]])  # star, ellipse -> rows 0, 1
    d_src = BigGANDiscriminator(64, 4, 4, attention=(16,))
    d_src.load_state_dict(source["discriminator"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():  # D judges class "star" as the source D did: the row permutation keeps its function
        torch.testing.assert_close(t.discriminator.eval()(x, torch.tensor([0, 0])),
                                   d_src.eval()(x, torch.tensor([2, 2])))
    enc = {k: v for k, v in t.encoder.state_dict().items()}
    assert all(torch.equal(v, source["discriminator"][k]) for k, v in enc.items())
    # partial transfer: the encoder from scratch (then it trains), G and D transferred
    p = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "b", tiny_biggan, **{"init.scratch": "[encoder]"}), CPU)
    assert p.transferred == {"generator", "discriminator"} and p.train_encoder and "encoder" in p.optimizers
    assert not torch.equal(p.encoder.blocks[0][0].conv1.weight, source["discriminator"]["blocks.0.0.conv1.weight"])
    # DeepI2I (scratch): no phase 1, E trains, published scratch fusion weights
    s = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "c", tiny_biggan, **{
        "init.source": "scratch", "model.g_ch": 4, "model.d_ch": 4, "model.dim_z": 20, "model.shared_dim": 8,
        "model.g_attention": "[]", "model.d_attention": "[]", "train.phase1_steps": "null",
        "model.fusion_weights": "{}"}), CPU)
    assert s.transferred == set() and s.phase1_steps == 0 and s.train_encoder
    # the published table by width: {4: 1, 8: 1, 16: 1, 32: 0.1}; a 64 px model fuses at 16, 8 and 4 px
    assert s.deepi2i.fusion_weights == {16: 1.0, 8: 1.0, 4: 1.0} and s.generator.num_classes == 3
    assert s.rec_weights == {16: 0.1, 8: 0.1, 4: 0.1}  # D_fea_w by width: 0.01 is 32 px's, which it has not
    # the adaptor ablations: "w-3" (one adaptor) and the dagger variant (no adaptor at all)
    w3 = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "d", tiny_biggan,
                                    **{"model.adaptor_resolutions": "[16]"}), CPU)
    assert w3.adaptors.resolutions == [16] and list(w3.deepi2i.fusion_weights) == [16]
    none = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "e", tiny_biggan,
                                      **{"model.no_adaptor": "[16, 8, 4]", "train.phase1_steps": 1}), CPU)
    assert not list(none.adaptors.parameters()) and "adaptors" not in none.optimizers
    e = none.encoder(x)
    a = none.adaptors(e)
    assert torch.equal(a[4], e[4]) and torch.equal(a[16], e[16].repeat(1, 4, 1, 1))  # 2ch -> G's 8ch at 16x16
    assert none.g_step(none.next_batch()) == {}  # phase 1 has nothing to train on the G side
    # the release layout with truncated class embeddings: the Adam moments are cut alike
    r = fixture_trainer(torch.load(fixtures_dir / "deepi2i" / "deepi2i_small_seed0.pt", weights_only=True),
                        fixtures_dir, tmp_path / "f", **{"init.truncate_class_embeddings": "true",
                                                         "data.classes": "[c0, c1, c2]"})
    assert r.generator.shared.weight.shape[0] == 3 and r.discriminator.embed.weight.shape[0] == 3
    assert r.optimizers["generator"].state_dict()["state"][0]["exp_avg_sq"].shape == (3, 16)
    with pytest.raises(ValueError, match="model.image_size=128"):
        DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "g", tiny_biggan, **{"model.image_size": 128}), CPU)
    with pytest.raises(ValueError, match="init.scratch"):
        DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path / "h", tiny_biggan, **{"init.scratch": "[decoder]"}), CPU)


# ----------------------------------------------------------------------------- engine: resume, SIGTERM, NaN
def run(cfg, resume=None, kill_at=None):
    run_dir = prepare_run_dir(cfg.out_dir, cfg.name, {}, resume=resume is not None)
    trainer = DeepI2ITrainer(cfg, CPU)
    if kill_at is not None:  # a SIGTERM during that step: the loop checkpoints after it and returns
        step_fn = trainer.train_step

        def train_step(step):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(step)

        trainer.train_step = train_step
    t = cfg.train
    last = train_loop(trainer, run_dir=run_dir, total_steps=t.iterations, log_every=1, image_every=100,
                      checkpoint_every=t.checkpoint_every, keep_checkpoints=2, resume=resume, progress=False)
    return trainer, last


def test_sigterm_then_resume_is_exact(tiny_synthetic, tmp_path, tiny_biggan):
    """4 steps straight (phase 1 = 2 steps, EMA of G) against a run stopped by SIGTERM after step 1 and resumed:
    identical networks, EMA and optimizer states."""
    extra = {"train.iterations": 4, "train.phase1_steps": 2, "train.ema": "true", "train.checkpoint_every": 10}
    torch.manual_seed(0)
    straight, _ = run(tiny_config(tiny_synthetic, tmp_path / "a", tiny_biggan, **extra))
    torch.manual_seed(0)
    _, stopped_at = run(tiny_config(tiny_synthetic, tmp_path / "b", tiny_biggan, **extra), kill_at=1)
    assert stopped_at == 1
    torch.manual_seed(7)
    resumed, last = run(tiny_config(tiny_synthetic, tmp_path / "b", tiny_biggan, **extra), resume="auto")
    assert last == 4
    a, b = straight.state_dict(), resumed.state_dict()
    for net in ("encoder", "adaptors", "generator", "discriminator", "generator_ema"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    for name in a["optimizers"]:
        for i, s in a["optimizers"][name]["state"].items():
            assert torch.equal(s["exp_avg_sq"], b["optimizers"][name]["state"][i]["exp_avg_sq"]), (name, i)
    lines = [json.loads(x) for x in (tmp_path / "b" / "deepi2i_synthetic" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "phase" in x]  # the loss lines; image steps add the input sensitivity
    assert [x["phase"] for x in steps] == [1, 1, 2, 2] and "loss/g/rec_16" in steps[0]
    figures = [x for x in lines if "metric/input_sensitivity" in x]
    assert figures and figures[0]["step"] == 1 and all(x["metric/input_sensitivity"] >= 0 for x in figures)


def test_nan_loss_stops_before_saving(tiny_synthetic, tmp_path, tiny_biggan, monkeypatch):
    trainer = DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path, tiny_biggan), CPU)
    calls = []

    def bad_g_loss(fake):
        calls.append(1)
        return losses.hinge_g_loss(fake) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(trainer, "g_loss", bad_g_loss)
    run_dir = prepare_run_dir(tmp_path, "nan", {}, resume=False)
    with pytest.raises(NonFiniteLossError, match="step 2: loss/g/adv=nan"):
        train_loop(trainer, run_dir=run_dir, total_steps=3, log_every=10, image_every=100, checkpoint_every=2,
                   keep_checkpoints=2, resume=None, progress=False)
    assert not (run_dir / "checkpoints").exists()


# ----------------------------------------------------------------------------- data, configs, options
def test_labelled_dataset(tiny_synthetic):
    root = tiny_synthetic / "domains"
    ds = LabelledImageDataset(root, 32, subfolder="train", per_class=3, with_real=True)
    assert ds.class_names == ["ellipse", "ring", "star"] and ds.counts == {"ellipse": 3, "ring": 3, "star": 3}
    item = ds[4]
    assert item["x"].shape == (3, 32, 32) and int(item["l_x"]) == 1 and 0 <= int(item["l_y"]) < 3
    assert torch.equal(ds[4]["y"], item["y"])  # a pure function of (seed, index)
    sub = LabelledImageDataset(root, 32, classes=["star", "ellipse"], subfolder="test")
    assert sub.class_names == ["star", "ellipse"] and sub.labels[0] == 0 and len(sub) == 8
    assert "/star/test/" in str(sub.paths[0])
    with pytest.raises(ValueError, match=r"classes \['dog'\] have no folder"):
        LabelledImageDataset(root, 32, classes=["dog"])


def test_configs_load_with_the_published_recipe():
    for path in sorted((REPO / "configs/deepi2i").glob("*.yaml")):
        cfg = load_config(path, DeepI2IConfig)
        assert cfg.train.betas == [0.0, 0.999] and cfg.train.eps == 1e-6 and cfg.loss.adversarial == "hinge"
        if not path.stem.startswith("synthetic"):  # the built-in data's configs are sized for a CPU
            assert (cfg.model.image_size, cfg.train.batch_size, cfg.train.accumulate) == (128, 32, 8), path
            assert (cfg.train.lr, cfg.train.lr_d, cfg.train.lr_adaptors) == (1e-4, 4e-4, 4e-4)
    for name in ("animals_scratch", "synthetic_scratch"):
        assert load_config(REPO / f"configs/deepi2i/{name}.yaml", DeepI2IConfig).init.source == "scratch"
    for path in sorted((REPO / "configs/biggan").glob("*.yaml")):
        load_config(path, BigGANConfig)
    with pytest.raises(ConfigError, match="did you mean 'train.frozen_mode'"):
        load_config(None, DeepI2IConfig, ["train.frozen_mod=eval"])


def test_options_are_checked_and_channels_last_matches(tiny_synthetic, tmp_path, tiny_biggan):
    for key, value, match in [("train.frozen_mode", "frozen", "frozen_mode"), ("loss.pairing", "rows", "pairing"),
                              ("loss.adversarial", "wgan", "loss.adversarial"), ("train.accumulate", 3, "accumulate"),
                              ("train.compile", "true", "compile")]:
        with pytest.raises(ValueError, match=match):
            DeepI2ITrainer(tiny_config(tiny_synthetic, tmp_path, tiny_biggan, **{key: value}), CPU)
    outs = []
    for extra in ({}, {"train.channels_last": "true"}, {"loss.reconstruction": "l1", "loss.adversarial": "log"}):
        t = trainer_with(tiny_synthetic, tmp_path, tiny_biggan, **{"train.phase1_steps": 0}, **extra)
        b = t.next_batch()
        z, c = t.sample_noise(4)
        outs.append({**t.d_step(b, z, c), **t.g_step(b, z, c)})
    plain, channels_last, other = outs
    for tag, value in plain.items():  # the same step in another memory layout
        torch.testing.assert_close(channels_last[tag], value, rtol=1e-4, atol=1e-5, msg=tag)
    assert all(torch.isfinite(v) for v in other.values())
    real, fake = float(other["loss/d/real"]), float(plain["loss/d/real"])
    assert real != fake and float(other["loss/g/rec_16"]) != float(plain["loss/g/rec_16"])  # the options were used


# ----------------------------------------------------------------------------- scripts end to end
def launch(script: str, sets: list[str], nproc: int = 1) -> None:
    """``script`` as a user runs it: in this process for one process (tests/helpers.py), under torchrun for
    more (their own processes: a process group of ``nproc`` ranks)."""
    if nproc == 1:
        done = run_script(script, "--no-progress", "--set", *sets)
        assert done.status == 0, done.err[-3000:]
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", script, "--no-progress", "--set", *sets], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_scripts_train_biggan_then_deepi2i_in_one_and_two_processes(tiny_synthetic, tmp_path):
    """scripts/train_biggan.py makes biggan.pt; scripts/train_deepi2i.py transfers from it and exports a translator
    that gpunit.load_translator opens. Under torchrun, 2 processes with 2 images each make the first update of
    1 process with 4 (phase 1: E and G frozen, so no batch statistics): the same D and adaptor gradients (Adam's
    first moment, which is the gradient with beta1 = 0), within 1e-4 of each network's largest (all-reduce
    rounding)."""
    common = [f"data.root={tiny_synthetic}/domains", "data.num_workers=0", "train.batch_size=4"]
    launch("scripts/train_biggan.py", common + [
        f"out_dir={tmp_path}", "model.g_ch=4", "model.d_ch=4", "model.dim_z=20", "model.shared_dim=8",
        "model.g_attention=[32]", "model.d_attention=[16]", "train.iterations=2", "train.accumulate=2",
        "train.ema_start=1"])
    biggan = tmp_path / "biggan_synthetic" / "biggan.pt"
    assert torch.load(biggan, weights_only=True)["class_names"] == ["ellipse", "ring", "star"]
    deepi2i = common + [f"init.path={biggan}", "train.phase1_steps=1", "train.checkpoint_every=1"]
    launch("scripts/train_deepi2i.py",
           deepi2i + [f"out_dir={tmp_path / 'one'}", "train.iterations=3", "train.ema=true"])
    run_dir = tmp_path / "one" / "deepi2i_synthetic"
    translator = gpunit.load_translator(str(run_dir / "deepi2i.pt"))
    assert translator.class_names == ["ellipse", "ring", "star"]
    y = translator.translate(torch.rand(2, 3, 64, 64) * 2 - 1, target_class=["star", "ring"], seed=0)
    assert y.shape == (2, 3, 64, 64) and float(y.abs().max()) <= 1
    assert list((run_dir / "images").glob("images_translation_*.png"))
    assert list((tmp_path / "biggan_synthetic" / "images").glob("images_samples_*.png"))

    launch("scripts/train_deepi2i.py", deepi2i + [f"out_dir={tmp_path / 'two'}", "train.iterations=1"], nproc=2)
    one, two = (torch.load(tmp_path / n / "deepi2i_synthetic" / "checkpoints" / "step-0000001.pt",
                           weights_only=True)["trainer"] for n in ("one", "two"))
    assert two["consumed"] == one["consumed"] == {"train": 4}
    for name in ("discriminator", "adaptors"):
        a, b = one["optimizers"][name]["state"], two["optimizers"][name]["state"]
        assert a.keys() == b.keys() and len(a) > 10, name
        scale = max(float(s["exp_avg"].abs().max()) for s in a.values())
        for i in a:
            torch.testing.assert_close(b[i]["exp_avg"], a[i]["exp_avg"], rtol=1e-3, atol=1e-4 * scale,
                                       msg=f"{name} {i}")
