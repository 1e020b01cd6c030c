"""DeepI2I translation: gpunit.load_translator on DeepI2I files and folders, translate(), and the CLI."""
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_translate_script import translate_script

import gpunit
from gpunit.biggan.models import BigGANGenerator
from gpunit.data.images import load_rgb, resize_for_model, to_tensor
from gpunit.deepi2i.models import DeepI2I, Encoder, build_adaptors
from gpunit.deepi2i.translator import DeepI2ITranslator
from gpunit.deepi2i.weights import save_deepi2i_translator
from gpunit.gp_unit.models import ContentEncoder, Generator, StyleSampler
from gpunit.gp_unit.weights import save_translator
from gpunit.translate_folder import GRID_HEADER, describe_summary, translate_folder_classes

SIZE = 64  # the tiny translator's image size
CLASSES = ["cat", "dog", "fox", "red panda"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random DeepI2I in our format: 64 px, ch=4, 4 named classes."""
    torch.manual_seed(0)
    g = BigGANGenerator(SIZE, 4, len(CLASSES), dim_z=20, shared_dim=4, attention=(16,))
    e = Encoder(SIZE, 4, attention=(16,))
    net = DeepI2I(e, build_adaptors(e, g), g)
    return save_deepi2i_translator(tmp_path_factory.mktemp("ckpt") / "deepi2i.pt", net, CLASSES)


@pytest.fixture(scope="module")
def translator(checkpoint) -> DeepI2ITranslator:
    return gpunit.load_translator(str(checkpoint))


def photo(path: Path, size=(40, 30), seed=0, mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert(mode) if mode != "RGB" else img).save(path)
    return path


def names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- the published folder
def test_published_folder_translation_is_the_fixtures(fixtures_dir, tmp_path):
    fx = torch.load(fixtures_dir / "deepi2i" / "deepi2i_small_seed0.pt", weights_only=True)
    release = fixtures_dir / "deepi2i" / "biggan_release_layout"
    folder = tmp_path / "DeepI2I_small"
    folder.mkdir()
    shutil.copy(release / "G_ema.pth", folder / "G.pth")
    torch.save(fx["state_E1"], folder / "E1.pth")
    torch.save(fx["state_A1"], folder / "A1.pth")
    (tmp_path / "names.txt").write_text("ant\nbee\n\ncow\ndog\nelk\n")
    translator = gpunit.load_translator(str(folder), class_names=str(tmp_path / "names.txt"))
    assert isinstance(translator, DeepI2ITranslator) and translator.class_names == ["ant", "bee", "cow", "dog", "elk"]
    inp = fx["inputs"]
    names_of_gy = [translator.class_names[int(c)] for c in inp["gy"]]

    y32 = translator.translate(inp["t_x"], target_class=names_of_gy, z=inp["z"])
    # float32 on this CPU: within 10x the fixture's own float32 rounding (its distance from float64)
    ref64 = fx["float64_reference"]["translation_sample0"]
    own_rounding = float((fx["eval"]["translation"][0].double() - ref64).abs().max())
    assert 0 < own_rounding < 1e-4
    torch.testing.assert_close(y32.double(), fx["eval"]["translation"].double(), rtol=0, atol=10 * own_rounding)
    # float64 weights: the float64 reference up to the final cast to float32
    y64 = translator.double().translate(inp["t_x"].double(), target_class=inp["gy"], z=inp["z"].double())
    torch.testing.assert_close(y64[0].double(), ref64, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- translate()
def test_translate_classes_noise_and_seeds(translator):
    torch.manual_seed(3)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    by_name = translator.translate(x, target_class=["dog", "red panda"], seed=5)
    by_index = translator.translate(x, target_class=torch.tensor([1, 3]), seed=5)
    assert by_name.shape == (2, 3, SIZE, SIZE) and torch.equal(by_name, by_index)
    assert torch.equal(translator.translate(x, target_class=[1, 3], seed=5), by_name)
    assert torch.equal(translator.translate(x, target_class="dog", seed=5)[0], by_name[0])  # one class for all
    assert not torch.equal(translator.translate(x, target_class="fox", seed=5)[0], by_name[0])

    many = translator.translate(x, target_class=["cat", "fox"], num_styles=3, seed=0)
    assert many.shape == (6, 3, SIZE, SIZE)
    assert torch.equal(many, translator.translate(x, target_class=["cat", "fox"], num_styles=3, seed=0))
    assert not torch.equal(many, translator.translate(x, target_class=["cat", "fox"], num_styles=3, seed=1))
    # image-major: rows 3..5 are image 1 with the noise vectors 3..5 of the seed's draw
    z = translator.sample_z(6, seed=0)
    explicit = translator.translate(x.repeat_interleave(3, 0), target_class=[0, 0, 0, 2, 2, 2], z=z)
    torch.testing.assert_close(many, explicit, rtol=1e-5, atol=1e-6)
    # other input sizes are resized to the model's
    assert translator.translate(torch.rand(1, 3, 100, 80) * 2 - 1, "cat", seed=0).shape == (1, 3, SIZE, SIZE)


def test_translate_rejects_bad_targets_and_noise(translator):
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with pytest.raises(ValueError, match=r"unknown target class 'wolf' \(known: cat, dog, fox, red panda\)"):
        translator.translate(x, target_class=["wolf", "cat"])
    with pytest.raises(ValueError, match="out of range: this translator has 4 classes"):
        translator.translate(x, target_class=[0, 4])
    with pytest.raises(ValueError, match="3 target classes for 2 input"):
        translator.translate(x, target_class=[0, 1, 2])
    with pytest.raises(ValueError, match=r"z must be \(N, dim_z\) = \(2, 20\)"):
        translator.translate(x, target_class=[0, 1], z=torch.zeros(2, 19))
    with pytest.raises(ValueError, match="either z or num_styles"):
        translator.translate(x, target_class=[0, 1], z=torch.zeros(2, 20), num_styles=2)


# ----------------------------------------------------------------------------- folders and the CLI
def model_input(path: Path) -> torch.Tensor:
    return to_tensor(resize_for_model(load_rgb(path), SIZE))[None]


def test_cli_target_classes_outputs_grid_and_resume(checkpoint, translator, tmp_path):
    src = tmp_path / "in"
    photo(src / "a.jpg", (50, 40))
    photo(src / "sub" / "b.png", (33, 70), seed=1, mode="L")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", out,
                            "--target-class", "fox", "red panda", "--seed", "3")
    assert done.status == 0, done.err
    results = {f"{stem}__{c}__s0.png" for stem in ("a", "sub/b") for c in ("fox", "red_panda")}
    assert names(out) == results | {"grids/grid_000_000.png"}
    line = done.out
    assert "translated 4 image(s)" in line and "1 unreadable" in line and "broken.jpg" in line
    # one row per input, the input then one column per class
    grid = Image.open(out / "grids" / "grid_000_000.png")
    assert grid.size == (3 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2 + GRID_HEADER)
    # a white strip above names the columns: dark text over each of them
    strip = np.asarray(grid.convert("L"))[:GRID_HEADER]
    assert all(strip[:, c * (SIZE + 2):(c + 1) * (SIZE + 2)].min() < 128 for c in range(3))
    # each file is G(A(E(x)), z_0, c) with z_0 drawn from the seed, up to 8-bit rounding
    expected = translator.translate(model_input(src / "a.jpg"), "red panda", z=translator.sample_z(1, seed=3))
    result = to_tensor(load_rgb(out / "a__red_panda__s0.png"))
    assert (result - expected[0].clamp(-1, 1)).abs().max() <= 2.02 / 255

    old = 1_000_000_000
    for p in out.rglob("*.png"):
        os.utime(p, (old, old))
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", out,
                            "--target-class", "fox", "red panda", "--seed", "3")
    assert done.status == 0 and "nothing new: all 4 output(s) already exist" in done.out
    assert all(p.stat().st_mtime == old for p in out.rglob("*.png"))  # nothing overwritten, grid kept


def test_cli_all_classes_and_styles(checkpoint, tmp_path):
    src = tmp_path / "in"
    photo(src / "x.png")
    out = tmp_path / "out"
    assert translate_script("--checkpoint", checkpoint, "--input", src, "--output", out, "--all-classes",
                            "--num-styles", 2).status == 0
    labels = ["cat", "dog", "fox", "red_panda"]
    assert names(out) == {f"x__{c}__s{k}.png" for c in labels for k in (0, 1)} | {"grids/grid_000_000.png"}
    # two rows (noise vectors), input + 4 classes
    grid_size = Image.open(out / "grids" / "grid_000_000.png").size
    assert grid_size == (5 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2 + GRID_HEADER)
    a, b = (np.asarray(Image.open(out / f"x__dog__s{k}.png"), np.int16) for k in (0, 1))
    assert np.abs(a - b).max() > 2  # another noise vector, another result


def test_grid_pages_split_classes_and_inputs(translator, tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        photo(src / f"p{i}.png", seed=i)
    summary = translate_folder_classes(translator, src, tmp_path / "out", classes_per_page=3, inputs_per_page=2,
                                       progress=False)
    pages = sorted(p.name for p in (tmp_path / "out" / "grids").iterdir())
    assert pages == [f"grid_{i:03d}_{j:03d}.png" for i in range(math.ceil(3 / 2)) for j in range(math.ceil(4 / 3))]
    assert summary["translated"] == 12 and len(summary["grids"]) == 4
    w = lambda cols: cols * (SIZE + 2) + 2  # noqa: E731
    grids = tmp_path / "out" / "grids"
    assert Image.open(grids / "grid_000_000.png").size == (w(4), w(2) + GRID_HEADER)  # 2 inputs, 3 classes
    assert Image.open(grids / "grid_001_001.png").size == (w(2), w(1) + GRID_HEADER)  # 1 input, 1 class
    assert "translated 12 image(s)" in describe_summary(summary)
    again = translate_folder_classes(translator, src, tmp_path / "out", target_classes=[0], batch_size=1,
                                     progress=False)
    assert again["translated"] == 0 and again["skipped_existing"] == 3


def test_cli_errors(checkpoint, tmp_path):
    src = tmp_path / "in"
    photo(src / "a.png")
    out = tmp_path / "out"
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", out, "--target-class", "wolf")
    assert done.status == 2 and "unknown target class 'wolf'" in done.err
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", out)
    assert done.status == 2 and "give --target-class NAME... or --all-classes" in done.err
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", out, "--all-classes",
                            "--target-class", "cat")
    assert done.status == 2 and "not allowed with argument" in done.err  # mutually exclusive
    assert not out.exists()

    torch.manual_seed(0)
    gpunit_ckpt = save_translator(tmp_path / "translator.pt", ContentEncoder(64, 8, 8, 32),
                                  Generator(64, 8, 8, 32, style_dim=32, style_base_channels=8, style_hidden=8),
                                  StyleSampler(16, 16, 32))
    done = translate_script("--checkpoint", gpunit_ckpt, "--input", src, "--output", out, "--target-class", "cat")
    assert done.status == 2 and "GP-UNIT translator: --target-class/--all-classes are for DeepI2I" in done.err
    assert translate_script("--checkpoint", gpunit_ckpt, "--input", src, "--output", out).status == 0  # as before
    assert names(out) == {"a__s0.png", "a__grid.png"}
