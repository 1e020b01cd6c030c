"""Our networks, loaded from the published checkpoint format, reproduce the authors' outputs.

The fixtures were computed by the published GP-UNIT code (see ../shared/fixtures/README.md). Each
output is compared in float64 with the fixtures' float64 references and in float32 within a
tolerance read off the fixtures themselves, so the tests hold on any CPU (see tests/reference.py).
"""
import json

import pytest
import torch
from reference import Fixture, assert_reproduces

from gpunit.gp_unit.models import ContentEncoder, Discriminator, Generator, PriorAutoEncoder, StyleSampler
from gpunit.gp_unit.weights import build_from_state, ours_to_published, published_to_ours


def _fixture(fixtures_dir, stem):
    load = lambda name: torch.load(fixtures_dir / name, weights_only=True)  # noqa: E731
    return Fixture(load(f"{stem}.pt"), load(f"{stem}_float64.pt"))


@pytest.fixture(scope="module")
def stage2(fixtures_dir):
    return _fixture(fixtures_dir, "official_small_stage2_seed0")


@pytest.fixture(scope="module")
def stage1(fixtures_dir):
    return _fixture(fixtures_dir, "official_small_stage1_seed0")


def load(kind, state, sn_uv=None):
    state = dict(state)
    if sn_uv is not None:
        state.update(sn_uv)
    return build_from_state(kind, state).eval()


@pytest.mark.parametrize("snpi", [False, True], ids=["raw", "snpi"])
def test_content_encoder(stage2, snpi):
    ec = load("content_encoder", stage2["content_encoder"], stage2["content_encoder_sn_uv"] if snpi else None)
    key = "content_features_snpi" if snpi else "content_features"
    assert_reproduces(ec, lambda net, f: net(f["content_image"], all_features=True), stage2, key)
    if not snpi:
        assert_reproduces(ec, lambda net, f: net(f["content_image_128"], all_features=True), stage2,
                          "content_features_128in")
        assert_reproduces(ec, lambda net, f: net(f["content_image"]), stage2, key, pick=lambda ref: ref[0])


def test_generator_and_sampler(stage2):
    g = load("generator", stage2["generator"])
    sampler = load("sampler", stage2["sampler"])

    def exemplar(net, f):  # Es(style image), then G(content features, that code) with and without skips
        code = net.style_encoder(f["style_image"])
        translation, masks = net(f["content_features"], code)
        no_skip, no_masks = net(f["content_features"], code, use_skip=False)
        assert no_masks == []  # no masks without skip connections
        return [code, translation, masks, no_skip]

    # the 256 px style encoder is the costly part: one pass per precision serves all four outputs
    assert_reproduces(g, exemplar, stage2, ["style_code", "translation", "masks", "translation_noskip"])
    assert_reproduces(sampler, lambda net, f: net(f["latent_z"]), stage2, "latent_style")
    assert_reproduces(g, lambda net, f: net(f["content_features"], f["latent_style"]), stage2,
                      ["latent_translation", "latent_masks"])
    assert_reproduces(sampler.train(), lambda net, f: net(f["latent_z"]), stage2, "latent_style_trainbn")


@pytest.mark.parametrize("snpi", [False, True], ids=["raw", "snpi"])
def test_discriminator(stage2, snpi):
    d = load("discriminator", stage2["discriminator"], stage2["discriminator_sn_uv"] if snpi else None)
    sfx = "_snpi" if snpi else ""
    if snpi:
        assert_reproduces(d, lambda net, f: net(f["style_image"], style_layer=4), stage2,
                          ["disc_logits" + sfx, "disc_style_feat" + sfx])
        return

    def both_layers(net, f):  # f_D after 4 modules and after all of them, from one 256 px pass
        last = []
        hook = net.model[-1].register_forward_hook(lambda module, args, out: last.append(out.mean(dim=(2, 3))))
        logits, style_feat = net(f["style_image"], style_layer=4)
        hook.remove()
        return [logits, style_feat, logits, last[0]]

    assert_reproduces(d, both_layers, stage2, ["disc_logits", "disc_style_feat", "disc_logits_layer10",
                                               "disc_style_feat_layer10"])
    y = stage2["style_image"][:1]  # and the forward's own style_layer=len(model) is that hooked mean
    with torch.no_grad():
        torch.testing.assert_close(d(y, style_layer=len(d.model))[1], both_layers(d, {"style_image": y})[3])


@pytest.mark.parametrize("snpi", [False, True], ids=["raw", "snpi"])
def test_prior_autoencoder(stage1, snpi):
    ae = load("autoencoder", stage1["autoencoder"], stage1["autoencoder_sn_uv"] if snpi else None)
    labels = stage1["ae_labels"]
    sfx = "_snpi" if snpi else ""
    assert_reproduces(ae, lambda net, f: net(f["ae_images"], labels, noise=False), stage1,
                      ["ae_recon" + sfx, "ae_content" + sfx, "ae_mask" + sfx])
    if not snpi:
        assert_reproduces(ae, lambda net, f: net.classify(f["ae_content"]), stage1, "ae_class_logits")
        assert_reproduces(ae, lambda net, f: net.styleE(f["ae_images"]), stage1, "ae_style_stats")
        assert_reproduces(ae, lambda net, f: net.embed(labels), stage1, "ae_domain_embed")


def test_default_networks_match_published_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "official_full_state_dict_manifest.json").read_text())
    nets = {"content_encoder": ContentEncoder(), "generator": Generator(), "discriminator": Discriminator(),
            "autoencoder": PriorAutoEncoder(num_domains=292), "sampler": StyleSampler()}
    for name, net in nets.items():
        exported = ours_to_published(net.state_dict())
        ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in exported.items()]
        assert ours == manifest[name], name  # same keys, order, shapes and dtypes
        # and back: the exported dict loads into a freshly built network of inferred widths
        assert published_to_ours(exported).keys() == net.state_dict().keys()


def test_published_parameter_counts():
    counts = {"content encoder": (ContentEncoder(), 9_446_529), "generator": (Generator(), 39_926_358),
              "discriminator": (Discriminator(), 20_851_777),
              "auto-encoder": (PriorAutoEncoder(num_domains=292), 30_183_007)}
    for name, (net, expected) in counts.items():
        assert sum(p.numel() for p in net.parameters()) == expected, name
