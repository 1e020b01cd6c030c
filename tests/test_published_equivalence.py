"""Our networks, loaded from the published checkpoint format, reproduce the authors' outputs.

The fixtures were computed by the published GP-UNIT code (see ../shared/fixtures/README.md);
every listed output is compared at the tolerance given there.
"""
import json

import pytest
import torch

from gpunit.checkpoints import (build_from_state, ours_to_published, published_to_ours)
from gpunit.models import ContentEncoder, Discriminator, Generator, PriorAutoEncoder, StyleSampler


def assert_matches(ours, ref):
    if isinstance(ref, (list, tuple)):
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            assert_matches(a, b)
        return
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.fixture(scope="module")
def stage2(fixtures_dir):
    return torch.load(fixtures_dir / "official_small_stage2_seed0.pt", weights_only=True)


@pytest.fixture(scope="module")
def stage1(fixtures_dir):
    return torch.load(fixtures_dir / "official_small_stage1_seed0.pt", weights_only=True)


def load(kind, state, sn_uv=None):
    state = dict(state)
    if sn_uv is not None:
        state.update(sn_uv)
    return build_from_state(kind, state).eval()


@pytest.mark.parametrize("snpi", [False, True], ids=["raw", "snpi"])
def test_content_encoder(stage2, snpi):
    ec = load("content_encoder", stage2["content_encoder"], stage2["content_encoder_sn_uv"] if snpi else None)
    ref = stage2["content_features_snpi" if snpi else "content_features"]
    with torch.no_grad():
        assert_matches(ec(stage2["content_image"], all_features=True), ref)
        if not snpi:
            assert_matches(ec(stage2["content_image_128"], all_features=True), stage2["content_features_128in"])
            assert_matches(ec(stage2["content_image"]), ref[0])


def test_generator_and_sampler(stage2):
    g = load("generator", stage2["generator"])
    sampler = load("sampler", stage2["sampler"])
    feats = stage2["content_features"]
    with torch.no_grad():
        style = g.style_encoder(stage2["style_image"])
        assert_matches(style, stage2["style_code"])
        image, masks = g(feats, style)
        assert_matches(image, stage2["translation"])
        assert_matches(masks, stage2["masks"])
        image, masks = g(feats, style, use_skip=False)
        assert_matches(image, stage2["translation_noskip"])
        assert masks == []
        latent = sampler(stage2["latent_z"])
        assert_matches(latent, stage2["latent_style"])
        image, masks = g(feats, latent)
        assert_matches(image, stage2["latent_translation"])
        assert_matches(masks, stage2["latent_masks"])
        assert_matches(sampler.train()(stage2["latent_z"]), stage2["latent_style_trainbn"])


@pytest.mark.parametrize("snpi", [False, True], ids=["raw", "snpi"])
def test_discriminator(stage2, snpi):
    d = load("discriminator", stage2["discriminator"], stage2["discriminator_sn_uv"] if snpi else None)
    sfx = "_snpi" if snpi else ""
    with torch.no_grad():
        logits, feat = d(stage2["style_image"], style_layer=4)
        assert_matches(logits, stage2["disc_logits" + sfx])
        assert_matches(feat, stage2["disc_style_feat" + sfx])
        if not snpi:
            logits, feat = d(stage2["style_image"], style_layer=len(d.model))
            assert_matches(logits, stage2["disc_logits_layer10"])
            assert_matches(feat, stage2["disc_style_feat_layer10"])


@pytest.mark.parametrize("snpi", [False, True], ids=["raw", "snpi"])
def test_prior_autoencoder(stage1, snpi):
    ae = load("autoencoder", stage1["autoencoder"], stage1["autoencoder_sn_uv"] if snpi else None)
    x, labels = stage1["ae_images"], stage1["ae_labels"]
    sfx = "_snpi" if snpi else ""
    with torch.no_grad():
        recon, content, shape = ae(x, labels, noise=False)
        assert_matches(recon, stage1["ae_recon" + sfx])
        assert_matches(content, stage1["ae_content" + sfx])
        assert_matches(shape, stage1["ae_mask" + sfx])
        if not snpi:
            assert_matches(ae.classify(content), stage1["ae_class_logits"])
            assert_matches(ae.styleE(x), stage1["ae_style_stats"])
            assert_matches(ae.embed(labels), stage1["ae_domain_embed"])


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
