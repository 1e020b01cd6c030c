"""scripts/translate.py and gpunit.translate_folder: naming, pairing, batching, resuming and bad input."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ScriptRun, run_script
from PIL import Image

import gpunit
from gpunit.data.images import load_rgb, resize_for_model, to_tensor, write_png_atomic
from gpunit.gp_unit.models import ContentEncoder, Generator, StyleSampler
from gpunit.gp_unit.weights import export_published_content_encoder, export_published_stage2, save_translator
from gpunit.translate_folder import describe_summary, translate_folder, translate_pairs

SIZE = 64  # the tiny translator's image size


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    encoder = ContentEncoder(SIZE, 8, 8, 32)
    generator = Generator(SIZE, 8, 8, 32, style_dim=32, style_base_channels=8, style_hidden=8)
    sampler = StyleSampler(16, 16, 32)
    return save_translator(tmp_path_factory.mktemp("ckpt") / "translator.pt", encoder, generator, sampler)


@pytest.fixture(scope="module")
def translator(checkpoint):
    return gpunit.load_translator(str(checkpoint))


def photo(path: Path, size=(40, 30), seed=0, mode="RGB", **save_args) -> Path:
    """A random image file (different content per seed)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_args)
    return path


def folder(root: Path, names, size=(40, 30)) -> Path:
    for k, name in enumerate(names):
        photo(root / name, size, seed=k)
    return root


def names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def model_input(path: Path, policy: str = "shortside_crop") -> torch.Tensor:
    return to_tensor(resize_for_model(load_rgb(path), SIZE, policy))[None]


def translate_script(*args) -> ScriptRun:
    """scripts/translate.py in this process (tests/helpers.py): (exit status, stdout, stderr)."""
    return run_script("scripts/translate.py", *args, "--no-progress")


# ----------------------------------------------------------------------------- naming and pairing
def test_latent_guided_names_count_and_grid(translator, tmp_path):
    src = folder(tmp_path / "in", ["cat1.jpg", "cat2.png"])
    summary = translate_folder(translator, src, tmp_path / "out", num_styles=3, seed=0, progress=False)
    expected = {f"cat{i}__s{k}.png" for i in (1, 2) for k in range(3)}
    assert names(tmp_path / "out") == expected | {"cat1__grid.png", "cat2__grid.png"}
    assert summary["translated"] == 6 and summary["skipped_existing"] == 0 and summary["unreadable"] == 0
    assert {p.name for p in summary["written"]} == expected and len(summary["grids"]) == 2
    # one row: input + 3 results, 64 px tiles with 2 px borders
    assert Image.open(tmp_path / "out" / "cat1__grid.png").size == (4 * (SIZE + 2) + 2, SIZE + 4)
    # s<k> is the same sampled style for every content image and differs between k
    s0, s1 = (to_tensor(load_rgb(tmp_path / "out" / f"cat1__s{k}.png")) for k in (0, 1))
    assert (s0 - s1).abs().max() > 0.01


def test_exemplar_all_pairs(translator, tmp_path):
    src = folder(tmp_path / "in", ["a.jpg", "b.jpg"])
    styles = folder(tmp_path / "styles", ["dog1.png", "dog2.png", "dog3.png"], size=(50, 50))
    summary = translate_folder(translator, src, tmp_path / "out", style=styles, grid=False, progress=False)
    assert names(tmp_path / "out") == {f"{c}__dog{k}.png" for c in "ab" for k in (1, 2, 3)}
    assert summary["translated"] == 6 and summary["grids"] == []
    # each file is G(Ec(content), Es(its style)), up to 8-bit rounding
    for c, k in [("a", 1), ("b", 3)]:
        expected = translator.translate(model_input(src / f"{c}.jpg"), style=model_input(styles / f"dog{k}.png"))
        result = to_tensor(load_rgb(tmp_path / "out" / f"{c}__dog{k}.png"))
        assert (result - expected[0].clamp(-1, 1)).abs().max() <= 1.01 / 255 * 2


def test_exemplar_grid_has_style_row(translator, tmp_path):
    src = photo(tmp_path / "x.png", (30, 90))  # a single file as input
    styles = folder(tmp_path / "styles", ["y1.png", "y2.png"])
    translate_folder(translator, src, tmp_path / "out", style=styles, progress=False)
    assert names(tmp_path / "out") == {"x__y1.png", "x__y2.png", "x__grid.png"}
    assert Image.open(tmp_path / "out" / "x__grid.png").size == (3 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)


def test_random_pairing_one_style_per_image_and_seeded(translator, tmp_path):
    src = folder(tmp_path / "in", [f"c{i}.png" for i in range(8)])
    styles = folder(tmp_path / "styles", [f"s{k}.png" for k in range(4)])

    def pairing(seed, out):
        translate_folder(translator, src, tmp_path / out, style=styles, style_pairing="random", seed=seed,
                         grid=False, progress=False)
        found = sorted(names(tmp_path / out))
        assert len(found) == 8 and [n.split("__")[0] for n in found] == sorted(f"c{i}" for i in range(8))
        return found

    first = pairing(0, "r0")
    assert pairing(0, "r0_again") == first
    assert pairing(1, "r1") != first  # another seed, another draw (fixed seeds: not flaky)
    # a randomly paired result equals the same pair from the all-pairs run
    translate_folder(translator, src, tmp_path / "all", style=styles, grid=False, progress=False)
    assert set(first) <= names(tmp_path / "all")
    for name in first[:3]:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "r0" / name)),
                              np.asarray(Image.open(tmp_path / "all" / name)))


def test_subfolders_are_mirrored(translator, tmp_path):
    photo(tmp_path / "in" / "top.png")
    photo(tmp_path / "in" / "a" / "x.png", seed=1)
    photo(tmp_path / "in" / "b" / "c" / "y.jpg", seed=2)
    translate_folder(translator, tmp_path / "in", tmp_path / "out", grid=False, progress=False)
    assert names(tmp_path / "out") == {"top__s0.png", "a/x__s0.png", "b/c/y__s0.png"}


def test_output_folder_inside_input_is_not_translated_again(translator, tmp_path):
    src = folder(tmp_path / "in", ["a.png"])
    translate_folder(translator, src, src / "out", progress=False)
    again = translate_folder(translator, src, src / "out", num_styles=2, progress=False)
    assert {p.name for p in again["written"]} == {"a__s1.png"}  # not out/a__s0__s0.png and the like


def test_name_clash_is_explained(translator, tmp_path):
    src = folder(tmp_path / "in", ["a.png", "a.jpg"])
    with pytest.raises(ValueError, match="would both write"):
        translate_folder(translator, src, tmp_path / "out", progress=False)


# ----------------------------------------------------------------------------- batching
def test_batched_equals_unbatched(translator, tmp_path):
    torch.manual_seed(1)
    content = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    codes = translator.sample_styles(4, seed=3)
    pairs = [(i, j) for i in range(3) for j in range(4)][:-1]  # 11 pairs: the last batch of 4 is partial
    one = torch.cat(list(translate_pairs(translator, content, codes, pairs, batch_size=1)))
    four = torch.cat(list(translate_pairs(translator, content, codes, pairs, batch_size=4)))
    torch.testing.assert_close(four, one, rtol=1e-4, atol=1e-5)
    reference = torch.cat([translator.translate_codes(content[i:i + 1], codes[j:j + 1]) for i, j in pairs])
    torch.testing.assert_close(one, reference, rtol=1e-4, atol=1e-5)

    # and through the folder code: the same PNGs up to 8-bit rounding
    src = folder(tmp_path / "in", [f"c{i}.png" for i in range(5)])
    for batch_size in (1, 4):
        translate_folder(translator, src, tmp_path / f"b{batch_size}", num_styles=3, batch_size=batch_size,
                         grid=False, progress=False)
    assert len(names(tmp_path / "b1")) == 15 and names(tmp_path / "b1") == names(tmp_path / "b4")
    for name in names(tmp_path / "b1"):
        a = np.asarray(Image.open(tmp_path / "b1" / name), np.int16)
        b = np.asarray(Image.open(tmp_path / "b4" / name), np.int16)
        assert np.abs(a - b).max() <= 1, name


# ----------------------------------------------------------------------------- bad and odd input
def mixed_folder(root: Path) -> Path:
    photo(root / "good_wide.jpg", (97, 41))
    photo(root / "good_tall.png", (33, 120), seed=1)
    photo(root / "gray.png", (70, 50), seed=2, mode="L")
    photo(root / "rgba.png", (45, 77), seed=3, mode="RGBA")
    photo(root / "palette.png", (81, 64), seed=4, mode="P")
    Image.fromarray(np.random.default_rng(5).integers(0, 65535, (55, 66), dtype=np.uint16)).save(root / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated phone photo
    photo(root / "rotated.jpg", (90, 40), seed=6, exif=exif.tobytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_mixed_folder_translates_good_images_and_counts_corrupt(checkpoint, tmp_path):
    src = mixed_folder(tmp_path / "in")
    assert Image.open(src / "deep.png").mode.startswith("I")  # really a 16-bit file
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", tmp_path / "out", "--no-grid")
    assert done.status == 0, done.err
    good = ["good_wide", "good_tall", "gray", "rgba", "palette", "deep", "rotated"]
    assert names(tmp_path / "out") == {f"{n}__s0.png" for n in good}
    for name in names(tmp_path / "out"):
        img = Image.open(tmp_path / "out" / name)
        assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    summary_line = done.out
    assert "translated 7 image(s)" in summary_line and "1 unreadable" in summary_line and "broken.jpg" in summary_line


def test_resize_policies(translator, tmp_path):
    """resize= picks the model input of a non-square image: "pad" fits the long side and centres the image on
    black, "stretch" and "shortside_crop" (the default) keep other parts of it, and each written file is the
    translation of its own policy's input."""
    src = photo(tmp_path / "wide.png", (150, 37))
    style = photo(tmp_path / "styles" / "square.png", (50, 50), seed=1)  # square: the same under every policy
    padded = model_input(src, "pad")[0]
    height = round(37 * SIZE / 150)  # 16 rows of image, 24 black ones above and below
    image_rows = (padded != -1).any(0).any(1).nonzero()[:, 0].tolist()
    assert image_rows == list(range((SIZE - height) // 2, (SIZE - height) // 2 + height))
    outputs = {}
    for policy in ("shortside_crop", "stretch", "pad"):
        translate_folder(translator, src, tmp_path / policy, style=style.parent, resize=policy, grid=False,
                         progress=False)
        result = to_tensor(load_rgb(tmp_path / policy / "wide__square.png"))
        expected = translator.translate(model_input(src, policy), style=model_input(style, policy))[0]
        assert result.shape == (3, SIZE, SIZE)
        assert (result - expected.clamp(-1, 1)).abs().max() <= 1.01 / 255 * 2, policy  # 8-bit rounding
        outputs[policy] = result
    # the policies' inputs give translations far apart (so the checks above tell them apart)
    assert (outputs["stretch"] - outputs["shortside_crop"]).abs().max() > 0.1
    assert (outputs["pad"] - outputs["stretch"]).abs().max() > 0.1


def test_nothing_readable_fails(checkpoint, translator, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"garbage")
    (bad / "b.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="nothing translated"):
        translate_folder(translator, bad, tmp_path / "out", progress=False)
    done = translate_script("--checkpoint", checkpoint, "--input", bad, "--output", tmp_path / "out")
    assert done.status == 2 and "nothing translated" in done.err
    empty = tmp_path / "empty"
    empty.mkdir()
    done = translate_script("--checkpoint", checkpoint, "--input", empty, "--output", tmp_path / "out")
    assert done.status == 2 and "no images found" in done.err
    assert not (tmp_path / "out").exists() or names(tmp_path / "out") == set()


def test_unreadable_style_images(translator, tmp_path):
    src = folder(tmp_path / "in", ["a.png"])
    styles = folder(tmp_path / "styles", ["ok.png"])
    (styles / "bad.png").write_bytes(b"garbage")
    summary = translate_folder(translator, src, tmp_path / "out", style=styles, grid=False, progress=False)
    assert names(tmp_path / "out") == {"a__ok.png"} and summary["unreadable"] == 1
    (styles / "ok.png").unlink()
    with pytest.raises(ValueError, match="style image"):
        translate_folder(translator, src, tmp_path / "out2", style=styles, progress=False)


def test_existing_outputs_skipped_unless_overwrite(checkpoint, translator, tmp_path):
    src = folder(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    translate_folder(translator, src, out, num_styles=2, progress=False)
    old = 1_000_000_000  # mark every output as old, so a rewrite shows up whatever the mtime resolution
    for p in out.iterdir():
        os.utime(p, (old, old))

    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", out, "--num-styles", 2)
    assert done.status == 0 and "nothing new: all 4 output(s) already exist" in done.out
    assert all(p.stat().st_mtime == old for p in out.iterdir())

    (out / "b__s1.png").unlink()  # as after an interrupted run
    summary = translate_folder(translator, src, out, num_styles=2, progress=False)
    assert summary["written"] == [out / "b__s1.png"] and summary["skipped_existing"] == 3
    assert summary["grids"] == [out / "b__grid.png"]  # its grid is redone with the new result
    assert (out / "a__s0.png").stat().st_mtime == old
    assert "skipped 3 that already existed" in describe_summary(summary)

    assert translate_script("--checkpoint", checkpoint, "--input", src, "--output", out, "--num-styles", 2,
                            "--overwrite").status == 0
    assert all(p.stat().st_mtime != old for p in out.iterdir())
    assert names(out) == {"a__s0.png", "a__s1.png", "b__s0.png", "b__s1.png", "a__grid.png", "b__grid.png"}


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_png_atomic(Image.new("RGB", (4, 4)), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_published_stage2_needs_content_encoder(translator, tmp_path):
    stage2 = export_published_stage2(translator.generator, translator.sampler, tmp_path / "cat2dog.pt")
    src = folder(tmp_path / "in", ["a.png"])
    done = translate_script("--checkpoint", stage2, "--input", src, "--output", tmp_path / "out")
    assert done.status == 2
    err = done.err
    assert err.startswith("error:") and "does not hold the content encoder" in err and "--content-encoder" in err
    assert not (tmp_path / "out").exists()

    encoder = export_published_content_encoder(translator.content_encoder, tmp_path / "content_encoder.pt")
    assert translate_script("--checkpoint", stage2, "--content-encoder", encoder, "--input", src,
                            "--output", tmp_path / "out").status == 0
    assert names(tmp_path / "out") == {"a__s0.png", "a__grid.png"}


def test_conflicting_options_are_rejected(checkpoint, tmp_path):
    src = folder(tmp_path / "in", ["a.png"])
    for args, message in ((["--input", src, "--style", src, "--num-styles", 2], "error: --num-styles is for latent"),
                          (["--input", src, "--style-pairing", "random"], "error: --style-pairing needs style images"),
                          (["--input", tmp_path / "missing"], "error: input not found: ")):
        done = translate_script("--checkpoint", checkpoint, "--output", tmp_path / "o", *args)
        assert done.status == 2 and message in done.err, done
    with pytest.raises(ValueError, match="batch size"):
        translate_folder(gpunit.load_translator(str(checkpoint)), src, tmp_path / "o", batch_size=0)


def test_script_with_styles_subfolders_and_batches(checkpoint, tmp_path):
    src = folder(tmp_path / "in", ["a.png", "sub/b.jpg"])
    styles = folder(tmp_path / "styles", ["s.png"])
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--style", styles, "--output",
                            tmp_path / "out", "--device", "cpu", "--batch-size", 2)
    assert done.status == 0, done.err
    assert "translated 2 image(s)" in done.out
    assert names(tmp_path / "out") == {"a__s.png", "a__grid.png", "sub/b__s.png", "sub/b__grid.png"}


def test_bf16_translation_tracks_fp32(checkpoint, tmp_path):
    """precision="bf16" runs the networks under autocast: float32 out, within bf16 rounding of fp32,
    and the same for whole folders through the script."""
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    fp32 = gpunit.load_translator(str(checkpoint))
    bf16 = gpunit.load_translator(str(checkpoint), precision="bf16")
    a, b = fp32.translate(x, style=x.flip(0)), bf16.translate(x, style=x.flip(0))
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert (a - b).abs().mean() < 0.02
    latent = bf16.translate(x, num_styles=2, seed=0)
    assert latent.dtype == torch.float32 and (latent - fp32.translate(x, num_styles=2, seed=0)).abs().mean() < 0.02
    with pytest.raises(ValueError, match="precision"):
        gpunit.load_translator(str(checkpoint), precision="int8")

    src = folder(tmp_path / "in", ["a.png"])
    done = translate_script("--checkpoint", checkpoint, "--input", src, "--output", tmp_path / "out", "--device", "cpu",
                            "--precision", "bf16")
    assert done.status == 0, done.err
    assert (tmp_path / "out" / "a__s0.png").is_file()
