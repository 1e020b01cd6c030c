"""Published checkpoint files load through the user-facing API; bad files fail clearly."""
import pytest
import torch
from reference import Fixture, assert_reproduces

import gpunit
from gpunit.engine.checkpoints import CheckpointError
from gpunit.gp_unit.models import ContentEncoder, Generator, PriorAutoEncoder
from gpunit.gp_unit.weights import (
    export_published_content_encoder,
    export_published_stage1,
    export_published_stage2,
    load_content_encoder,
    load_published_stage1,
    save_content_encoder,
    save_translator,
)


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    load = lambda name: torch.load(fixtures_dir / name, weights_only=True)  # noqa: E731
    return Fixture(load("official_small_stage2_seed0.pt"), load("official_small_stage2_seed0_float64.pt"))


@pytest.fixture()
def published_files(ref, tmp_path):
    """The small fixture weights written exactly as the authors publish them."""
    torch.save({"g_ema": ref["generator"], "sampler": ref["sampler"]}, tmp_path / "cat2dog.pt")
    torch.save(ref["content_encoder"], tmp_path / "content_encoder.pt")
    return tmp_path / "cat2dog.pt", tmp_path / "content_encoder.pt"


def translates_like_reference(translator, ref):
    """Exemplar-guided translation of the fixture inputs reproduces the published output."""
    assert_reproduces(translator, lambda t, f: t.translate(f["content_image"], style=f["style_image"]), ref,
                      "translation")


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_load_translator_published_exemplar_and_latent(ref, published_files):
    translator = gpunit.load_translator(generator=str(published_files[0]), content_encoder=str(published_files[1]))
    translates_like_reference(translator, ref)
    assert not translator.sampler.training  # eval mode: running BatchNorm statistics
    a = translator.translate(ref["content_image"], num_styles=3, seed=7)
    b = translator.translate(ref["content_image"], num_styles=3, seed=7)
    assert a.shape == (6, 3, 256, 256) and torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # different sampled styles
    # rows are content-major and equal G(Ec(x_i), sampler(z)) for the same noise
    codes = translator.sample_styles(6, seed=7)
    close(a[3], translator.translate_codes(ref["content_image"][1:2], codes[3:4])[0])


def test_published_file_without_content_encoder_is_explained(published_files):
    with pytest.raises(CheckpointError, match="does not hold the content encoder"):
        gpunit.load_translator(generator=str(published_files[0]))


def same_translator(a, b, ref):
    """The same networks to the bit, and the same translation (float32, one image): what translates like
    the published code as ``a`` does (test_load_translator_published_exemplar_and_latent) does as ``b``."""
    for net in ("content_encoder", "generator", "sampler"):
        state_a, state_b = getattr(a, net).state_dict(), getattr(b, net).state_dict()
        assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a), net
    x, y = ref["content_image"][:1], ref["style_image"][:1]
    assert torch.equal(b.translate(x, style=y), a.translate(x, style=y))


def test_our_translator_format_round_trip(ref, published_files, tmp_path):
    published = gpunit.load_translator(str(published_files[0]), str(published_files[1]))
    path = save_translator(tmp_path / "ours.pt", published.content_encoder, published.generator, published.sampler,
                           {"note": "test"})
    ours = gpunit.load_translator(str(path))
    same_translator(published, ours, ref)
    # and back to the published format, loadable again
    export_published_stage2(ours.generator, ours.sampler, tmp_path / "again.pt")
    export_published_content_encoder(ours.content_encoder, tmp_path / "ce.pt")
    again = gpunit.load_translator(str(tmp_path / "again.pt"), str(tmp_path / "ce.pt"))
    assert set(torch.load(tmp_path / "ce.pt", weights_only=True)) == set(ref["content_encoder"])
    same_translator(published, again, ref)


def test_content_encoder_formats(tmp_path):
    ec = ContentEncoder(64, 8, 8, 32).eval()
    x = torch.randn(1, 3, 64, 64)
    for path in (save_content_encoder(ec, tmp_path / "ours.pt"), export_published_content_encoder(ec, tmp_path / "pub.pt")):
        loaded = load_content_encoder(path).eval()
        assert loaded.image_size == 64
        torch.testing.assert_close(loaded(x), ec(x))
    ae = PriorAutoEncoder(64, 8, 8, 32, num_domains=4).eval()
    export_published_stage1(ae, tmp_path / "prior.pt")
    assert load_published_stage1(tmp_path / "prior.pt").embed.weight.shape == (4, 128)
    torch.testing.assert_close(load_content_encoder(tmp_path / "prior.pt").eval()(x), ae.contentE(x))


def test_bad_files_raise_clear_errors(ref, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_content_encoder(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_content_encoder(tmp_path / "junk.pt")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a content encoder"):
        load_content_encoder(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a gpunit translator"):
        gpunit.load_translator(str(tmp_path / "other.pt"))
    # a generator file with a missing key and a tensor of the wrong shape
    g = dict(ref["generator"])
    g.pop("model.1.skiplayer.mask.weight")
    g["model.2.rgblayer.bias"] = torch.zeros(5)
    torch.save({"g_ema": g, "sampler": ref["sampler"]}, tmp_path / "broken.pt")
    torch.save(ref["content_encoder"], tmp_path / "ce.pt")
    with pytest.raises(CheckpointError) as err:
        gpunit.load_translator(str(tmp_path / "broken.pt"), str(tmp_path / "ce.pt"))
    assert "generator" in str(err.value) and "model.1.skiplayer.mask.weight" in str(err.value)
    assert "model.2.rgblayer.bias" in str(err.value)
    # a content encoder that does not fit the generator
    torch.save(ContentEncoder(64, 8, 8, 32).state_dict(), tmp_path / "small_ce.pt")
    torch.save({"g_ema": ref["generator"], "sampler": ref["sampler"]}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="does not fit the generator"):
        gpunit.load_translator(str(tmp_path / "g.pt"), str(tmp_path / "small_ce.pt"))


def test_wider_published_file_loads(tmp_path):
    g = Generator(64, 8, base_channels=16, max_channels=64, style_dim=64, style_base_channels=16, style_hidden=16)
    from gpunit.gp_unit.weights import build_from_state, ours_to_published
    loaded = build_from_state("generator", ours_to_published(g.state_dict()))
    assert loaded.image_size == 64 and loaded.model[0].reslayer.conv_1.out_channels == 64
