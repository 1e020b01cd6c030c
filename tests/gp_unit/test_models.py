"""Shapes, gradients and configurability of every network at small sizes."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpunit.gp_unit.models import ContentEncoder, Discriminator, Generator, PriorAutoEncoder, StyleSampler

SMALL = dict(image_size=64, content_size=8, base_channels=8, max_channels=32)


def grads_everywhere(module):
    return [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]


def test_content_encoder_64_keeps_content_size():
    ec = ContentEncoder(**SMALL)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    feats = ec(x, all_features=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(1, 8, 8), (32, 8, 8), (16, 16, 16), (8, 32, 32)]
    assert ec.feature_channels == [1, 32, 16, 8]
    feats[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # other input sizes are resized to the configured size, not to 256
    assert ec(torch.randn(1, 3, 100, 100)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("size", [64, 128])
def test_generator_forward_backward(size):
    ec = ContentEncoder(size, 8, 8, 32)
    g = Generator(size, 8, 8, 32, style_dim=32, style_base_channels=8, style_hidden=8)
    x, y = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
    image, masks = g(ec(x, all_features=True), g.style_encoder(y))
    assert image.shape == (2, 3, size, size) and image.abs().max() <= 1
    # one mask per skip layer, shaped like Ec's map at 16x16 and 32x32
    assert [tuple(m.shape[1:]) for m in masks] == [(ec.feature_channels[2], 16, 16), (ec.feature_channels[3], 32, 32)]
    assert all(m.min() >= 0 for m in masks)
    (image.mean() + sum(m.mean() for m in masks)).backward()
    # only the last layer's RGB head is used; the others are frozen; every trainable parameter gets a gradient
    frozen = {n for n, p in g.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in g.named_parameters() if "rgblayer" in n and not n.startswith(f"model.{len(g.model) - 1}.")}
    assert grads_everywhere(g) == []


def test_generator_skip_switches():
    ec, g = ContentEncoder(**SMALL), Generator(**SMALL, style_dim=32, style_base_channels=8, style_hidden=8)
    feats, s = ec(torch.randn(2, 3, 64, 64), all_features=True), torch.rand(2, 32)
    with torch.no_grad():
        full, masks = g(feats, s)
        none, no_masks = g(feats, s, use_skip=False)
        only_first, first_masks = g(feats, s, use_skip=[True, False])
        zero, zero_masks = g(feats, s, use_skip=[False, False])
    assert len(masks) == 2 and no_masks == [] and len(first_masks) == 1 and zero_masks == []
    torch.testing.assert_close(zero, none)  # all masks 0 is the same as no skip connections
    assert not torch.allclose(full, none)
    g_noskip = Generator(**SMALL, style_dim=32, style_base_channels=8, style_hidden=8, skip_resolutions=[])
    assert g_noskip(feats, s)[1] == [] and not any("skiplayer" in k for k in g_noskip.state_dict())
    with pytest.raises(ValueError, match="consecutive"):
        Generator(**SMALL, skip_resolutions=[32])


def test_discriminator_style_feature_layer():
    d = Discriminator(64, base_channels=8, max_channels=32)
    y = torch.randn(3, 3, 64, 64, requires_grad=True)
    logits, f = d(y, style_layer=4)
    assert logits.shape == (3,) and f.shape == (3, 32)
    assert d(y)[1].shape == (3, 32)
    assert d(y, style_layer=1)[1].shape == (3, 8)
    (logits.sum() + f.sum()).backward()
    assert grads_everywhere(d) == []
    with pytest.raises(ValueError, match=r"style_layer must be in 1\.\.8, got 0"):
        d(y, style_layer=0)


def test_discriminator_without_spectral_norm():
    """spectral_norm=False: the same layers with their raw weights; a saved one rebuilds as it was."""
    from torch.nn.utils import parametrize

    from gpunit.gp_unit.weights import build_from_state

    torch.manual_seed(0)
    sn, plain = Discriminator(64, 8, 32), Discriminator(64, 8, 32, spectral_norm=False)
    assert any(parametrize.is_parametrized(m) for m in sn.modules())
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    # the raw weights of the spectrally normed D in the plain one: the logits differ by the norms
    raw = {k.replace(".parametrizations.weight.original", ".weight"): v for k, v in sn.state_dict().items()
           if not k.endswith(("_u", "_v"))}
    plain.load_state_dict(raw)
    y = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(plain(y)[0], sn.eval()(y)[0])
    rebuilt = build_from_state("discriminator", plain.state_dict())
    assert not any(parametrize.is_parametrized(m) for m in rebuilt.modules())
    torch.testing.assert_close(rebuilt(y)[0], plain(y)[0])
    assert any(parametrize.is_parametrized(m) for m in build_from_state("discriminator", sn.state_dict()).modules())


def test_prior_autoencoder_forward_backward():
    ae = PriorAutoEncoder(**SMALL, num_domains=5)
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 4])
    recon, content, shape = ae(x, labels)
    assert recon.shape == (2, 3, 64, 64) and content.shape == (2, 1, 8, 8) and shape.shape == (2, 3, 16, 16)
    logits = ae.classify(content)
    assert logits.shape == (2, 5)
    (recon.mean() + shape.mean() + torch.nn.functional.cross_entropy(logits, labels)).backward()
    # as published, Es's statistics are used only at the decoder's image-level resolutions (here 32x32);
    # its other layers are frozen, and every trainable parameter gets a gradient
    frozen = {n for n, p in ae.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("styleE.layer2.", "styleE.layer3.", "styleE.layer4.")) for n in frozen)
    assert grads_everywhere(ae) == []


def test_gradient_reversal_flips_encoder_gradient():
    ae = PriorAutoEncoder(**SMALL, num_domains=3).eval()  # eval: no spectral-norm power iteration between calls
    content = ae.contentE(torch.randn(2, 3, 64, 64)).detach().requires_grad_()
    ae.C(content).sum().backward()
    plain = content.grad.clone()
    content.grad = None
    ae.classify(content).sum().backward()
    torch.testing.assert_close(content.grad, -plain)


def test_sampler_and_ema_deepcopy_after_forward():
    sampler = StyleSampler(16, 32, 24)
    assert sampler(torch.randn(4, 16)).shape == (4, 24)
    d = Discriminator(64, 8, 32)
    d(torch.randn(2, 3, 64, 64))  # spectral norm power iteration ran
    d_copy = copy.deepcopy(d)  # breaks with the old torch.nn.utils.spectral_norm
    x = torch.ones(1, 3, 64, 64)
    torch.testing.assert_close(d_copy.eval()(x)[0], d.eval()(x)[0])


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_folded_upsampling_and_pooling_are_the_plain_layers(padding_mode):
    """The folded convs compute exactly (float64) what upsample-then-conv and conv-then-pool do."""
    from gpunit.nn import conv_then_avg_pool, upsample_nearest, upsample_then_conv

    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1, padding_mode=padding_mode).double()
    x = torch.randn(2, 5, 6, 3, dtype=torch.double)  # non-square, odd width
    torch.testing.assert_close(upsample_then_conv(x, conv), conv(upsample_nearest(x)))
    if padding_mode == "zeros":
        torch.testing.assert_close(conv_then_avg_pool(x, conv), F.avg_pool2d(conv(x), 2))
    with pytest.raises(ValueError, match="3x3 conv of stride 1"):
        upsample_then_conv(x, nn.Conv2d(5, 7, 1).double())
    with pytest.raises(ValueError, match="zeros"):
        conv_then_avg_pool(x, nn.Conv2d(5, 7, 3, padding=1, padding_mode="reflect").double())
