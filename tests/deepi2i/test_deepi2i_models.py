"""DeepI2I's BigGAN, encoder and adaptors reproduce the published implementation (../shared/fixtures/deepi2i/).

The fixtures hold float32 outputs of the published code and, for every tensor, checksums of the same
code run in float64 (README "float64_reference"). Our networks, loaded from the published state
dicts by their key names, run in float64 here, so the comparison does not depend on the CPU:
- with the float64 checksums at the README's tolerance, ``|ours - ref| <= 1e-9 (abs_sum + numel max_abs)``
  (float64 runs agree to ~1e-14);
- element-wise with the stored float32 tensors at the README's tolerance
  (``rtol=1e-4, atol=2e-5 max|ref|``): their distance from float64 is the fixture's own float32
  rounding (measured <= 2.6e-6 max|ref|), a property of the stored data, not of this machine.
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from gpunit import losses
from gpunit.biggan.models import BigGANDiscriminator, BigGANGenerator, SNLinear
from gpunit.biggan.weights import build_discriminator, build_generator
from gpunit.deepi2i.models import (
    PUBLISHED_REC_WEIGHTS,
    SCRATCH_FUSION_WEIGHTS,
    Adaptors,
    DeepI2I,
    Encoder,
    build_adaptors,
    by_width,
)
from gpunit.deepi2i.weights import build_encoder, build_published_adaptors

RES = (32, 16, 8, 4)


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    return torch.load(fixtures_dir / "deepi2i" / "deepi2i_small_seed0.pt", weights_only=True)


@pytest.fixture(scope="module")
def release(fixtures_dir):
    folder = fixtures_dir / "deepi2i" / "biggan_release_layout"
    return {name: torch.load(folder / f"{name}.pth", weights_only=True) for name in ("G_ema", "D")}


def published_nets(fx, release) -> dict:
    """The fixture's E1, A1, G (= G_ema.pth) and D (= D.pth) as our modules, in float64."""
    return {"E1": build_encoder(fx["state_E1"]).double(), "A1": build_published_adaptors(fx["state_A1"]).double(),
            "G": build_generator(release["G_ema"]).double(), "D": build_discriminator(release["D"]).double()}


def inputs64(fx) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in fx["inputs"].items()}


def fused(fx, adapted: dict) -> dict:
    """The published G adds ``E1_fea_w[r] * A1(E1(x))[r]``."""
    return {r: fx["config"]["E1_fea_w"][r] * a for r, a in adapted.items()}


def assert_checksum(ours: torch.Tensor, ref: dict, floor: float = 0.0, what: str = "") -> None:
    """The README's float64 test; ``floor`` (per element) for gradients that are zero up to rounding."""
    o = ours.detach().double()
    assert o.numel() == ref["numel"], what
    n, m = ref["numel"], ref["max_abs"]
    tol = 1e-9 * (ref["abs_sum"] + n * m) + n * floor
    tol_sq = 1e-9 * (ref["sq_sum"] + n * m * m) + n * floor * floor + 2 * floor * float(o.abs().sum())
    assert abs(float(o.sum()) - ref["sum"]) <= tol, (what, "sum", float(o.sum()), ref["sum"])
    assert abs(float(o.abs().sum()) - ref["abs_sum"]) <= tol, (what, "abs_sum")
    assert abs(float((o * o).sum()) - ref["sq_sum"]) <= tol_sq, (what, "sq_sum")
    assert abs(float(o.abs().max()) - m) <= 1e-9 * (ref["abs_sum"] + n * m) + floor, (what, "max_abs")


def assert_stored(ours: torch.Tensor, ref32: torch.Tensor, what: str = "") -> None:
    """Element-wise against a stored float32 output, at the README's tolerance."""
    ref = ref32.double()
    torch.testing.assert_close(ours.detach().double(), ref, rtol=1e-4, atol=2e-5 * float(ref.abs().max()),
                               msg=lambda m: f"{what}: {m}")


def check(fx, path: str, ours, stored=None) -> None:
    """``ours`` (a tensor or a {width: tensor} dict) against checksums ``path`` and the stored tensor(s)."""
    sums = fx["float64_reference"]["checksums"]
    if isinstance(ours, dict):
        assert list(ours) == list(stored), path  # same widths, same order (32, 16, 8, 4)
        for key, value in ours.items():
            check(fx, f"{path}/{key}", value, stored[key])
        return
    assert tuple(ours.shape) == tuple(stored.shape), path
    assert_checksum(ours, sums[path], what=path)
    assert_stored(ours, stored, path)


def buffers(module) -> dict:
    return {k: v.detach().clone() for k, v in module.named_buffers()}


# ----------------------------------------------------------------------------- eval mode
def test_eval_outputs_reproduce_published(fx, release):
    nets = published_nets(fx, release)
    for net in nets.values():
        net.eval()
    before = {name: buffers(net) for name, net in nets.items()}
    E, A, G, D = nets["E1"], nets["A1"], nets["G"], nets["D"]
    inp, ev = inputs64(fx), fx["eval"]
    with torch.no_grad():
        e = E(inp["t_x"])
        check(fx, "eval/E1_feats", e, ev["E1_feats"])
        assert bool((e[4] >= 0).all()) and bool((e[8] < 0).any())  # only the deepest map is rectified
        a = A(e)
        check(fx, "eval/A1_feats", a, ev["A1_feats"])
        check(fx, "eval/G_shared_gy", G.shared(inp["gy"]), ev["G_shared_gy"])
        translation = G(inp["z"], G.shared(inp["gy"]), fused(fx, a))
        check(fx, "eval/translation", translation, ev["translation"])
        ref0 = fx["float64_reference"]["translation_sample0"]
        torch.testing.assert_close(translation[0], ref0, rtol=0, atol=1e-9 * float(ref0.abs().max()))
        logits, feats = D(inp["x"], inp["y"], return_features=True)
        check(fx, "eval/D_real_logits", logits, ev["D_real_logits"])
        check(fx, "eval/D_real_feats", feats, ev["D_real_feats"])
        logits, feats = D(translation, inp["gy"], return_features=True)
        check(fx, "eval/D_fake_logits", logits, ev["D_fake_logits"])
        check(fx, "eval/D_fake_feats", feats, ev["D_fake_feats"])
        assert torch.equal(D(translation, inp["gy"]), logits)
        # E1's unused head: D's trunk and `linear` on E1's weights (E1 has D's module tree)
        e1_as_d = build_discriminator(fx["state_E1"]).double().eval()
        h = F.relu(e1_as_d.trunk(inp["t_x"])[0]).sum([2, 3])
        check(fx, "eval/E1_head_logits", e1_as_d.linear(h), ev["E1_head_logits"])
    for name, net in nets.items():  # eval mode writes nothing
        after = buffers(net)
        assert all(torch.equal(after[k], before[name][k]) for k in after), name


def test_deepi2i_network_is_g_of_a_of_e(fx, release):
    """DeepI2I(E, A, G) with the published fusion weights is the published eval translation."""
    nets = published_nets(fx, release)
    net = DeepI2I(nets["E1"], nets["A1"], nets["G"], fx["config"]["E1_fea_w"]).eval()
    inp = inputs64(fx)
    with torch.no_grad():
        check(fx, "eval/translation", net(inp["t_x"], inp["z"], inp["gy"]), fx["eval"]["translation"])


# ----------------------------------------------------------------------------- train mode
@pytest.fixture(scope="module")
def train_run(fx, release):
    """The published D step then G step (README "train_step"), in float64 with our modules.

    D step: E1 -> A1 -> G without gradients, D on [G_z; x]; hinge loss, backward into D.
    G step (stage 2): E1 -> A1 -> G again, D (frozen, in train mode) on [G_z; t_x] with features;
    -mean(D_fake) + sum_k D_fea_w[k] mse(F_k[0], F_k[1]) (the published rows-0-and-1 term), backward
    into A1 and G. All four networks are in train mode throughout, as published. The losses are
    gpunit.losses' (hinge_d_loss, hinge_g_loss, feature_reconstruction_terms), which the trainer uses.
    """
    nets = published_nets(fx, release)
    for net in nets.values():
        net.train()
    E, A, G, D = nets["E1"], nets["A1"], nets["G"], nets["D"]
    E.requires_grad_(False)
    inp, out = inputs64(fx), {}
    B = inp["z"].shape[0]

    with torch.no_grad():
        e = E(inp["t_x"])
        a = A(e)
        shared = G.shared(inp["gy"])
        g_z = G(inp["z"], shared, fused(fx, a))
    logits = D(torch.cat([g_z, inp["x"]]), torch.cat([inp["gy"], inp["y"]]))
    d_fake, d_real = logits[:B], logits[B:]
    d_loss_real, d_loss_fake = losses.hinge_d_loss(d_real, d_fake)
    (d_loss_real + d_loss_fake).backward()
    out["forward"] = {"E1_feats": e, "A1_feats": a, "G_shared_gy": shared, "G_z": g_z, "D_logits_all": logits,
                      "D_fake": d_fake, "D_real": d_real}
    out["forward_buffers"] = {name: buffers(net) for name, net in nets.items()}

    D.requires_grad_(False)
    e = E(inp["t_x"])
    a = A(e)
    shared = G.shared(inp["gy"])
    g_z = G(inp["z"], shared, fused(fx, a))
    logits, feats = D(torch.cat([g_z, inp["t_x"]]), torch.cat([inp["gy"], inp["t_y"]]), return_features=True)
    g_adv = losses.hinge_g_loss(logits[:B])
    terms = losses.feature_reconstruction_terms({k: feats[k][0] for k in RES}, {k: feats[k][1] for k in RES},
                                                {k: fx["config"]["D_fea_w"][k] for k in RES})  # rows 0 and 1
    (g_adv + sum(terms.values())).backward()
    out["step"] = {"G_shared_gy": shared, "G_z": g_z, "D_logits_all": logits, "D_feats_all": feats,
                   "D_fake": logits[:B]}
    out["step_buffers"] = {name: buffers(net) for name, net in nets.items()}
    out["losses"] = {"D_loss_real": d_loss_real, "D_loss_fake": d_loss_fake, "G_adv": g_adv,
                     **{f"G_feat_terms/{k}": v for k, v in terms.items()}}
    out["grads"] = {name: {k: p.grad for k, p in nets[name].named_parameters() if p.grad is not None}
                    for name in ("G", "D", "E1", "A1")}
    return out


def test_train_forward_outputs(fx, train_run):
    for key, ours in train_run["forward"].items():
        check(fx, f"train_forward/{key}", ours, fx["train_forward"][key])
    assert torch.equal(train_run["forward"]["D_fake"], train_run["forward"]["D_logits_all"][:3])


def check_buffers(fx, phase: str, ours: dict) -> None:
    """Every buffer after the call: SN vectors (u0, sv0) and G's batch-norm statistics.

    The published E1 and A1 also own ``linear``/``embed`` heads that ours do not have; E1 runs its
    ``linear`` (so its SN vector moves), A1 never does. Nothing else may be missing."""
    sums = fx["float64_reference"]["checksums"]
    for net, ref in fx[phase]["buffers_after"].items():
        missing = {k for k in ref if k not in ours[net]}
        assert missing == ({"linear.u0", "linear.sv0", "embed.u0", "embed.sv0"} if net in ("E1", "A1") else set()), net
        assert set(ours[net]) <= set(ref), net
        for key, value in ours[net].items():
            what = f"{phase}/buffers_after/{net}/{key}"
            assert_checksum(value, sums[what], what=what)
            assert_stored(value, ref[key], what)


def test_train_forward_buffers(fx, release, train_run):
    check_buffers(fx, "train_forward", train_run["forward_buffers"])
    # the call moved them: G's batch-norm statistics (batch statistics, momentum 0.1), SN vectors
    after, before = train_run["forward_buffers"]["G"], release["G_ema"]
    moved = {k for k, v in after.items() if not torch.equal(v.float(), before[k])}
    assert {k for k in after if "stored_" in k} <= moved
    assert any(k.endswith(".u0") for k in moved) and any(k.endswith(".sv0") for k in moved)


def test_train_step_outputs_and_buffers(fx, train_run):
    for key, ours in train_run["step"].items():
        check(fx, f"train_step/G_step/{key}", ours, fx["train_step"]["G_step"][key])
    for key in ("D_fake", "D_real"):
        check(fx, f"train_step/D_step/{key}", train_run["forward"][key], fx["train_step"]["D_step"][key])
    check_buffers(fx, "train_step", train_run["step_buffers"])
    # G_z differs from the D step's only because every SN vector moved once more
    assert not torch.equal(train_run["step"]["G_z"], train_run["forward"]["G_z"])


def test_train_step_gradients(fx, train_run):
    """The published losses (recomputed from our outputs) and their gradients: D's from the D step,
    A1's and G's from the G step, none for E1."""
    ref_losses = fx["float64_reference"]["losses"]
    for key, value in train_run["losses"].items():
        value = value.detach()
        ref = ref_losses[key.split("/")[0]][int(key.split("/")[1])] if "/" in key else ref_losses[key]
        assert abs(float(value) - float(ref)) <= 1e-9 * (1 + abs(float(ref))), key
    sums = fx["float64_reference"]["checksums"]
    stored = fx["train_step"]["grads"]
    assert train_run["grads"]["E1"] == {}
    for net in ("G", "D", "A1"):
        ours = train_run["grads"][net]
        expected = {k.split("/", 2)[2] for k in sums if k.startswith(f"grads/{net}/")}
        assert set(ours) == expected, net
        gmax = max(sums[f"grads/{net}/{k}"]["max_abs"] for k in expected)
        for key, grad in ours.items():
            # Some gradients are exact zeros that float64 computes as ~1e-17 rounding noise (e.g. the
            # bias of a conv feeding a train-mode batch norm): allow 1e-12 of the network's largest.
            assert_checksum(grad, sums[f"grads/{net}/{key}"], floor=1e-12 * gmax, what=f"grads/{net}/{key}")
            ref = (stored["full"][net].get(key) if key in stored["full"][net]
                   else stored["conv3x3_centre_tap"][net][key])
            mine = grad if key in stored["full"][net] else grad[:, :, 1, 1]
            # float32 gradients at the README's per-network tolerance
            torch.testing.assert_close(mine.double(), ref.double(), rtol=1e-3, atol=2e-3 * gmax)
            assert abs(float(grad.norm()) - stored["norm"][net][key]) <= 1e-3 * gmax + 1e-3 * stored["norm"][net][key]


# ----------------------------------------------------------------------------- structure
def test_parameter_order_is_published(fx, release):
    """Adam states in published files are indexed by parameter order: ours is the same (E1 and A1
    without their trailing unused heads)."""
    names = fx["meta"]["param_names"]
    nets = published_nets(fx, release)
    assert [n for n, _ in nets["G"].named_parameters()] == names["G"]
    assert [n for n, _ in nets["D"].named_parameters()] == names["D"]
    for net in ("E1", "A1"):
        ours = [n for n, _ in nets[net].named_parameters()]
        assert ours == names[net][:len(ours)]
        assert names[net][len(ours):] == ["linear.weight", "linear.bias", "embed.weight"]
    assert sum(p.numel() for p in nets["G"].parameters()) == fx["meta"]["param_counts"]["G"]
    assert sum(p.numel() for p in nets["D"].parameters()) == fx["meta"]["param_counts"]["D"]


@pytest.mark.parametrize("classes", [1000, 149])
def test_paper_width_networks_match_published_manifest(fixtures_dir, classes):
    """ch=96, 128 px, attention at 64, dim_z 120, shared_dim 128: every published key and shape, and the
    parameter and buffer counts (built on the meta device: no memory, no init)."""
    manifest = json.loads((fixtures_dir / "deepi2i" / "official_full_width_manifest.json").read_text())
    ref = manifest[f"n_classes_{classes}"]
    with torch.device("meta"):
        g = BigGANGenerator(128, 96, classes, 120, 128, attention=(64,))
        d = BigGANDiscriminator(128, 96, classes, attention=(64,))
        e = Encoder(128, 96, attention=(64,))
        a = build_adaptors(e, g)
    nets = {"G": g, "D": d, "E1": e, "A1": a}
    count = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    assert count["G"] == ref["G"]["parameters"] and count["D"] == ref["D"]["parameters"]
    assert sum(b.numel() for b in g.buffers()) == ref["G"]["buffers"]
    assert sum(b.numel() for b in d.buffers()) == ref["D"]["buffers"]
    # the published E1 uses its `linear` head (16ch -> 1) but not for features; A1 uses neither head
    assert count["E1"] == ref["E1"]["parameters_in_used_modules"] - (1536 + 1)
    assert count["A1"] == ref["A1"]["parameters_in_used_modules"]
    if "state_dict" in ref["G"]:
        for name, net in nets.items():
            ours = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in net.state_dict().items()}
            published = {k: v for k, v in ref[name]["state_dict"].items()
                         if name in ("G", "D") or not k.startswith(("linear.", "embed."))}
            assert list(ours.items()) == list(published.items()), name  # keys, order, shapes, dtypes


# ----------------------------------------------------------------------------- semantics and options
def test_spectral_norm_eval_iterates_without_storing():
    torch.manual_seed(0)
    layer = SNLinear(5, 4).double()
    x = torch.randn(2, 5, dtype=torch.float64)
    u0 = layer.u0.clone()
    w = layer.weight.detach()
    v = F.normalize(u0 @ w, dim=1, eps=1e-6)
    u = F.normalize(v @ w.t(), dim=1, eps=1e-6)
    sigma = float((v @ w.t()) @ u.t())
    layer.eval()
    torch.testing.assert_close(layer(x), x @ (w / sigma).t() + layer.bias.detach())
    assert torch.equal(layer.u0, u0)  # eval: the same iteration from the stored u0, nothing written
    layer.train()
    layer(x)
    torch.testing.assert_close(layer.u0, u)
    assert abs(float(layer.sv0) - sigma) < 1e-12


def tiny_network(resolution=128, ch=4, classes=3, **adaptor_args) -> DeepI2I:
    torch.manual_seed(0)
    attention = (resolution // 4,)  # a width where 4 channels per ch are enough for attention
    g = BigGANGenerator(resolution, ch, classes, dim_z=(5 if resolution == 64 else 6) * 4, shared_dim=4,
                        attention=attention)
    e = Encoder(resolution, ch, attention=attention)
    return DeepI2I(e, build_adaptors(e, g, **adaptor_args), g).eval()


def test_deepcopy_after_train_forward_is_independent():
    net = tiny_network()
    x, z, c = torch.rand(2, 3, 128, 128) * 2 - 1, torch.randn(2, 24), torch.tensor([0, 2])
    net.train()
    net(x, z, c)
    twin = copy.deepcopy(net).eval()
    net.eval()
    with torch.no_grad():
        assert torch.equal(twin(x, z, c), net(x, z, c))
    net.train()
    net(x, z, c)  # moves net's SN vectors, not the copy's
    assert not torch.equal(twin.generator.linear.u0, net.generator.linear.u0)


def test_fusion_options_subset_identity_and_errors():
    x, z, c = torch.rand(1, 3, 128, 128) * 2 - 1, torch.randn(1, 24), torch.tensor([1])
    full = tiny_network()
    assert full.adaptors.resolutions == [32, 16, 8, 4] and set(full.fusion_weights) == {32, 16, 8, 4}
    w3 = tiny_network(resolutions=[32])  # "DeepI2I w-3": one adaptor
    assert list(w3.adapted_features(x)) == [32] and len(w3.adaptors.blocks) == 1
    ident = tiny_network(identity=[4])  # 16ch -> 16ch at 4x4: the identity fits there
    with torch.no_grad():
        e = ident.encoder(x)
        assert torch.equal(ident.adaptors(e)[4], e[4])
        assert ident(x, z, c).shape == (1, 3, 128, 128)
        assert not torch.equal(w3(x, z, c), full(x, z, c))
    with pytest.raises(ValueError, match="identity adaptor at 32x32 needs"):
        tiny_network(identity=[32])  # 2ch from E, 4ch in G at 32x32
    with pytest.raises(ValueError, match="no activation of width 2"):
        full.generator(z, full.generator.shared(c), {2: torch.zeros(1, 64, 2, 2)})
    with pytest.raises(ValueError, match="do not fit together"):
        DeepI2I(full.encoder, Adaptors([32], [4], [8]), full.generator)


def test_other_resolutions_build_and_run():
    net = tiny_network(resolution=64)
    assert net.adaptors.resolutions == [16, 8, 4]
    with torch.no_grad():
        y = net(torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 20), torch.tensor([0, 1]))
    assert y.shape == (2, 3, 64, 64) and float(y.abs().max()) <= 1
    with torch.device("meta"):
        e = Encoder(256, 8, attention=(64,))
    assert list(e.feature_channels()) == [64, 32, 16, 8]
    with pytest.raises(ValueError, match="split into"):
        BigGANGenerator(128, 2, 3, dim_z=100)
    with pytest.raises(ValueError, match="at least 8 channels"):
        Encoder(128, 4, attention=(64,))


def test_weights_are_looked_up_by_feature_width_as_published():
    """E1_fea_w and D_fea_w are tables by width: a 64 px model (widths 16, 8, 4) takes the 128 px model's weights
    of those widths, not the first three entries; a width the table lacks takes its nearest neighbour's."""
    assert by_width(PUBLISHED_REC_WEIGHTS, [32, 16, 8, 4]) == {32: 0.01, 16: 0.1, 8: 0.1, 4: 0.1}
    assert by_width(PUBLISHED_REC_WEIGHTS, [16, 8, 4]) == {16: 0.1, 8: 0.1, 4: 0.1}
    assert by_width(SCRATCH_FUSION_WEIGHTS, [16, 8, 4]) == {16: 1.0, 8: 1.0, 4: 1.0}
    assert by_width(PUBLISHED_REC_WEIGHTS, [64, 32, 16, 8]) == {64: 0.01, 32: 0.01, 16: 0.1, 8: 0.1}  # 256 px
    assert by_width({16: 2.0, 4: 3.0}, [8]) == {8: 3.0}  # equally near: the smaller width
    with pytest.raises(ValueError, match="empty table"):
        by_width({}, [4])
