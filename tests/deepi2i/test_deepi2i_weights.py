"""DeepI2I weights: the published weights folder, BigGAN-PyTorch's release, our own file, and errors."""
import datetime
import logging
import shutil

import pytest
import torch
import torch.nn as nn

import gpunit
from gpunit.biggan.models import BigGANDiscriminator, BigGANGenerator
from gpunit.biggan.weights import RELEASE_NAME, read_training_state
from gpunit.deepi2i.models import SCRATCH_FUSION_WEIGHTS, DeepI2I, Encoder, build_adaptors
from gpunit.deepi2i.weights import (
    FORMAT,
    build_deepi2i_from_biggan,
    load_deepi2i_translator_file,
    load_published_deepi2i,
    save_deepi2i_translator,
)
from gpunit.engine.checkpoints import CheckpointError
from gpunit.engine.pretrained import MissingWeightsError

HEADS = ("linear.", "embed.")


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    return torch.load(fixtures_dir / "deepi2i" / "deepi2i_small_seed0.pt", weights_only=True)


@pytest.fixture(scope="module")
def release_dir(fixtures_dir):
    return fixtures_dir / "deepi2i" / "biggan_release_layout"


def load(path):
    return torch.load(path, weights_only=True)


def published_folder(fx, release_dir, folder):
    """The fixture's networks as the official save_weights writes them (G = the release's G_ema)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(release_dir / "G_ema.pth", folder / "G.pth")
    for name in ("D.pth", "G_optim.pth", "D_optim.pth", "state_dict.pth"):
        shutil.copy(release_dir / name, folder / name)
    shutil.copy(release_dir / "D_optim.pth", folder / "E1_optim.pth")
    torch.save(fx["state_E1"], folder / "E1.pth")
    torch.save(fx["state_A1"], folder / "A1.pth")
    return folder


def assert_close_to_stored(ours, ref32):
    """float64 output against a stored float32 one, at the fixtures README's tolerance."""
    ref = ref32.double()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=2e-5 * float(ref.abs().max()))


def states_equal(module_state, file_state, drop=()):
    expected = {k: v for k, v in file_state.items() if not k.startswith(drop)}
    return module_state.keys() == expected.keys() and all(torch.equal(module_state[k], expected[k]) for k in expected)


def with_heads(state: dict, ch16: int, classes: int) -> dict:
    """A published E1/A1 state dict: our keys plus the unused ``linear``/``embed`` heads."""
    out = dict(state)
    out.update({"linear.weight": torch.randn(1, ch16), "linear.bias": torch.zeros(1), "linear.u0": torch.randn(1, 1),
                "linear.sv0": torch.ones(1), "embed.weight": torch.randn(classes, ch16),
                "embed.u0": torch.randn(1, classes), "embed.sv0": torch.ones(1)})
    return out


# ----------------------------------------------------------------------------- the published folder
def test_published_folder_reproduces_eval_translation(fx, release_dir, tmp_path):
    folder = published_folder(fx, release_dir, tmp_path / "DeepI2I_small")
    w = load_published_deepi2i(folder, discriminator=True, optimizers=True)
    g = w.network.generator
    assert (g.resolution, g.ch, g.num_classes, g.dim_z, g.shared_dim, g.attention) == (128, 8, 5, 120, 16, (64,))
    assert w.network.fusion_weights == {32: 0.1, 16: 0.1, 8: 0.1, 4: 0.1}  # from BigGAN: the paper's run
    assert states_equal(w.network.encoder.state_dict(), fx["state_E1"], HEADS)
    assert states_equal(w.network.adaptors.state_dict(), fx["state_A1"], HEADS)
    net, d = w.network.double().eval(), w.discriminator.double().eval()
    inp = {k: v.double() if v.is_floating_point() else v for k, v in fx["inputs"].items()}
    with torch.no_grad():
        y_hat = net(inp["t_x"], inp["z"], inp["gy"])
        assert_close_to_stored(y_hat, fx["eval"]["translation"])
        ref0 = fx["float64_reference"]["translation_sample0"]
        torch.testing.assert_close(y_hat[0], ref0, rtol=0, atol=1e-9)
        assert_close_to_stored(d(inp["x"], inp["y"]), fx["eval"]["D_real_logits"])
    assert w.training_state["itr"] == 138000
    assert set(w.optimizer_states) == {"G", "D", "E1"}  # no A1_optim.pth in this folder
    assert w.optimizer_states["G"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert len(w.optimizer_states["G"]["state"]) == len(list(w.network.generator.parameters()))

    suffixed = tmp_path / "copies"  # save_weights(name_suffix="best0") writes G_best0.pth ...
    suffixed.mkdir()
    for name in ("G", "E1", "A1"):
        shutil.copy(folder / f"{name}.pth", suffixed / f"{name}_best0.pth")
    again = load_published_deepi2i(suffixed, suffix="best0")
    assert states_equal(again.network.generator.state_dict(), load(folder / "G.pth"))
    with pytest.raises(MissingWeightsError, match="'G.pth' not found"):
        load_published_deepi2i(suffixed)


# ----------------------------------------------------------------------------- BigGAN release
def test_biggan_release_initialises_like_the_published_loader(fx, release_dir):
    w = build_deepi2i_from_biggan(release_dir, optimizers=True)
    net = w.network
    assert states_equal(net.generator.state_dict(), load(release_dir / "G_ema.pth"))
    assert states_equal(w.discriminator.state_dict(), load(release_dir / "D.pth"))
    assert states_equal(net.encoder.state_dict(), load(release_dir / "D.pth"), HEADS)  # E1 <- D.pth
    assert not states_equal(net.adaptors.state_dict(), fx["state_A1"], HEADS)  # fresh adaptors
    after = fx["release"]["after_load"]
    assert w.training_state["itr"] == after["deepi2i_state_dict"]["itr"] == 138000
    groups = after["optimizer_param_groups"]
    for name in ("G", "D", "E1"):
        assert w.optimizer_states[name]["param_groups"][0]["lr"] == pytest.approx(groups[name]["lr"]), name
    assert states_equal(build_deepi2i_from_biggan(release_dir, generator="G").network.generator.state_dict(),
                        load(release_dir / "G.pth"))

    # with the fixture's A1, the published evaluation after loading
    net.adaptors.load_state_dict({k: v for k, v in fx["state_A1"].items() if not k.startswith(HEADS)})
    net = net.double().eval()
    inp = {k: v.double() if v.is_floating_point() else v for k, v in fx["inputs"].items()}
    with torch.no_grad():
        assert_close_to_stored(net.encoder(inp["t_x"])[4], fx["release"]["eval_after_load"]["E1_feats_4"])
        assert_close_to_stored(net(inp["t_x"], inp["z"], inp["gy"]), fx["release"]["eval_after_load"]["translation"])


def test_class_embedding_rows_kept_as_published_or_truncated(release_dir, tmp_path):
    folder = tmp_path / "release"
    shutil.copytree(release_dir, folder)
    d_state = load(folder / "D.pth")
    d_state["embed.weight"][4] *= 10  # an unused row that dominates the embedding's spectral norm
    torch.save(d_state, folder / "D.pth")
    kept = build_deepi2i_from_biggan(folder, class_names=["a", "b", "c"])
    assert kept.class_names == ["a", "b", "c"]
    assert kept.network.generator.num_classes == 5 and kept.discriminator.num_classes == 5  # nothing resized
    cut = build_deepi2i_from_biggan(folder, num_classes=3, truncate_class_embeddings=True)
    assert cut.network.generator.shared.weight.shape == (3, 16) and cut.discriminator.embed.u0.shape == (1, 3)
    assert torch.equal(cut.network.generator.shared.weight, load(folder / "G_ema.pth")["shared.weight"][:3])
    # the projection embedding is normalised over all its rows: cutting rows changes D's logits
    x, y = torch.rand(2, 3, 128, 128) * 2 - 1, torch.tensor([0, 2])
    with torch.no_grad():
        assert not torch.allclose(cut.discriminator.eval()(x, y), kept.discriminator.eval()(x, y))
    with pytest.raises(ValueError, match="7 classes requested, but the release .* has 5 class embeddings"):
        build_deepi2i_from_biggan(folder, num_classes=7)
    with pytest.raises(ValueError, match="unique"):
        build_deepi2i_from_biggan(folder, class_names=["a", "a"])


def random_biggan(ch=4, classes=10, shared_dim=8, dim_z=60, attention=(32,)):
    torch.manual_seed(1)
    g = BigGANGenerator(128, ch, classes, dim_z, shared_dim, attention=attention)
    d = BigGANDiscriminator(128, ch, classes, attention=attention)
    return g, d


def test_release_standins_under_standard_names_and_default_location(tmp_path, monkeypatch):
    g, d = random_biggan()
    folder = tmp_path / "torch" / "hub" / "checkpoints" / RELEASE_NAME
    folder.mkdir(parents=True)
    torch.save(g.state_dict(), folder / "G_ema.pth")
    torch.save(BigGANGenerator(128, 4, 10, 60, 8, attention=(32,)).state_dict(), folder / "G.pth")
    torch.save(d.state_dict(), folder / "D.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    w = build_deepi2i_from_biggan(class_names=["cat", "dog", "fox"], identity=[4])  # $TORCH_HOME/hub/checkpoints
    assert states_equal(w.network.generator.state_dict(), g.state_dict())
    assert states_equal(w.network.encoder.state_dict(), d.state_dict(), HEADS)
    assert w.network.adaptors.identity == [4] and w.training_state is None
    with torch.no_grad():
        y = w.network.eval()(torch.rand(2, 3, 128, 128) * 2 - 1, torch.randn(2, 60), torch.tensor([0, 2]))
    assert y.shape == (2, 3, 128, 128) and torch.isfinite(y).all()

    (folder / "D.pth").unlink()
    with pytest.raises(MissingWeightsError, match=rf"'D.pth' not found in .*{RELEASE_NAME}.*{RELEASE_NAME}.zip"):
        build_deepi2i_from_biggan()


def test_published_files_of_another_width_load_and_translate(tmp_path):
    """ch=4, 7 classes, shared_dim 8, dim_z 60, attention at 32: everything read off the shapes."""
    g, d = random_biggan(classes=7)
    e = Encoder(128, 4, attention=(32,))
    e.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith(HEADS)})
    a = build_adaptors(e, g)
    torch.nn.init.normal_(a.blocks[0][0].conv1.weight)
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(g.state_dict(), folder / "G.pth")
    torch.save(d.state_dict(), folder / "E1.pth")
    torch.save(with_heads(a.state_dict(), 64, 7), folder / "A1.pth")
    translator = gpunit.load_translator(str(folder))
    got = translator.network.generator
    assert (got.ch, got.num_classes, got.dim_z, got.shared_dim, got.attention) == (4, 7, 60, 8, (32,))
    assert translator.network.encoder.attention == (32,) and translator.num_classes == 7
    x, z, c = torch.rand(2, 3, 128, 128) * 2 - 1, torch.randn(2, 60), torch.tensor([6, 1])
    with torch.no_grad():
        expected = DeepI2I(e, a, g).eval()(x, z, c)
    assert torch.equal(translator.translate(x, target_class=c, z=z), expected)


# ----------------------------------------------------------------------------- errors
def test_missing_and_mismatched_files_are_named(fx, release_dir, tmp_path):
    folder = published_folder(fx, release_dir, tmp_path / "w")
    (folder / "E1.pth").unlink()
    with pytest.raises(MissingWeightsError, match=r"'E1.pth' not found in .*w \(found: A1.pth, D.pth"):
        load_published_deepi2i(folder)
    shutil.copy(release_dir / "D.pth", folder / "E1.pth")

    shutil.copy(release_dir / "D.pth", folder / "G.pth")  # a D state dict where G belongs
    with pytest.raises(CheckpointError, match=r"G.pth: does not look like a BigGAN generator"):
        load_published_deepi2i(folder)
    shutil.copy(release_dir / "G_ema.pth", folder / "G.pth")

    g, d = random_biggan(classes=5)  # A1 of another width
    torch.save(with_heads(build_adaptors(Encoder(128, 4, attention=(32,)), g).state_dict(), 64, 5), folder / "A1.pth")
    with pytest.raises(CheckpointError, match=r"not from one model: .*at 32x32 takes 8 channels, the encoder gives 16"):
        load_published_deepi2i(folder)
    torch.save(fx["state_A1"], folder / "A1.pth")

    torch.save(random_biggan(ch=8, classes=9, shared_dim=16, dim_z=120, attention=(64,))[1].state_dict(),
               folder / "D.pth")
    with pytest.raises(CheckpointError, match="G.pth has 5 class embeddings but D.pth has 9"):
        load_published_deepi2i(folder, discriminator=True)
    (folder / "D.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="D.pth: cannot be read"):
        load_published_deepi2i(folder, discriminator=True)

    with pytest.raises(CheckpointError, match="one state dict of a BigGAN/DeepI2I weights folder; give the folder"):
        gpunit.load_translator(str(folder / "G.pth"))
    with pytest.raises(MissingWeightsError, match="BigGAN release folder .*build_deepi2i_from_biggan"):
        gpunit.load_translator(str(release_dir))
    with pytest.raises(ValueError, match="has its own encoder"):
        gpunit.load_translator(str(folder), content_encoder="content_encoder.pt")


# ----------------------------------------------------------------------------- training state
def test_training_state_reading(tmp_path, caplog):
    path = tmp_path / "state_dict.pth"
    torch.save({"itr": 7, "config": {"G_activation": nn.ReLU(inplace=True), "training_scratch": True}}, path)
    state = read_training_state(path)  # the release pickles torch.nn.ReLU objects: allowed, made plain
    assert state == {"itr": 7, "config": {"G_activation": "ReLU(inplace=True)", "training_scratch": True}}

    folder = tmp_path / "scratch"
    g, d = random_biggan(classes=3)
    e = Encoder(128, 4, attention=(32,))
    folder.mkdir()
    torch.save(g.state_dict(), folder / "G.pth")
    torch.save(d.state_dict(), folder / "E1.pth")
    torch.save(with_heads(build_adaptors(e, g).state_dict(), 64, 3), folder / "A1.pth")
    shutil.copy(path, folder / "state_dict.pth")
    assert load_published_deepi2i(folder).network.fusion_weights == {32: 0.1, 16: 1.0, 8: 1.0, 4: 1.0}
    assert SCRATCH_FUSION_WEIGHTS == {4: 1.0, 8: 1.0, 16: 1.0, 32: 0.1}
    torch.save({"itr": 1, "config": {"E1_fea_w": {4: 0.5, 8: 0.5, 16: 0.5, 32: 0.5}}}, folder / "state_dict.pth")
    assert set(load_published_deepi2i(folder).network.fusion_weights.values()) == {0.5}

    torch.save({"itr": 1, "when": datetime.datetime(2020, 1, 1)}, folder / "state_dict.pth")  # not allow-listed
    with caplog.at_level(logging.WARNING):
        w = load_published_deepi2i(folder)
    assert w.training_state is None and "state_dict.pth" in caplog.text
    assert w.network.fusion_weights == {32: 0.1, 16: 0.1, 8: 0.1, 4: 0.1}


# ----------------------------------------------------------------------------- our file
def test_own_format_round_trip_weights_only(tmp_path):
    g, d = random_biggan(classes=4)
    e = Encoder(128, 4, attention=(32,))
    net = DeepI2I(e, build_adaptors(e, g, resolutions=[16, 4], identity=[4]), g, {16: 0.3, 4: 1.0}).eval()
    path = tmp_path / "out" / "deepi2i.pt"
    path.parent.mkdir()
    path.write_bytes(b"an older file")  # replaced atomically
    save_deepi2i_translator(path, net, ["w", "x", "y", "z"], config={"train": {"lr": 1e-4}, "act": nn.ReLU()})
    assert [p.name for p in path.parent.iterdir()] == ["deepi2i.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["class_names"] == ["w", "x", "y", "z"]
    assert raw["config"] == {"train": {"lr": 1e-4}, "act": "ReLU()"}

    loaded, names, config = load_deepi2i_translator_file(path)
    assert names == ["w", "x", "y", "z"] and config["train"]["lr"] == 1e-4
    assert loaded.adaptors.resolutions == [16, 4] and loaded.adaptors.identity == [4]
    assert loaded.fusion_weights == {16: 0.3, 4: 1.0}
    for ours, theirs in [(loaded.encoder, e), (loaded.adaptors, net.adaptors), (loaded.generator, g)]:
        assert states_equal(ours.state_dict(), theirs.state_dict())
    x, z, c = torch.rand(2, 3, 128, 128) * 2 - 1, torch.randn(2, 60), torch.tensor([3, 0])
    with torch.no_grad():
        assert torch.equal(loaded(x, z, c), net(x, z, c))
    translator = gpunit.load_translator(str(path))
    assert translator.class_names == ["w", "x", "y", "z"]

    torch.save({"format": "something-else-v1"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a gpunit DeepI2I translator"):
        load_deepi2i_translator_file(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="5 class names, but the generator has 4"):
        save_deepi2i_translator(tmp_path / "x.pt", net, list("abcde"))
