"""scripts/app.py through its API (gradio_client), as a program would use the page: both methods, awkward
and bad uploads, the queue, and the command line (host, share, a missing checkpoint)."""
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from app_servers import (  # noqa: F401  (fixtures)
    deepi2i_checkpoint, deepi2i_server, gp_unit_checkpoint, gp_unit_server, sample)
from helpers import run_script
from PIL import Image

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

import gpunit.app  # noqa: E402
from gpunit.gp_unit.weights import export_published_content_encoder, export_published_stage2  # noqa: E402
from gpunit.translate_folder import translate_folder, translate_folder_classes  # noqa: E402


def client(server) -> Client:
    return _client(server[1])


@cache
def _client(url: str) -> Client:  # one per server: a Client reads the page's API on connecting
    return Client(url, verbose=False)


def gp_unit(server, contents, guidance="sampled styles", style=None, num_styles=2, seed=0, resize="shortside_crop"):
    """One /translate request: (gallery, grids, downloads, status)."""
    files = [handle_file(str(p)) for p in contents]
    return client(server).predict(files, guidance, handle_file(str(style)) if style else None, num_styles, seed,
                                  resize, api_name="/translate")


def deepi2i(server, images, classes, num_styles=1, seed=0):
    return client(server).predict([handle_file(str(p)) for p in images], classes, num_styles, seed, "shortside_crop",
                                  api_name="/translate")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def photo(path: Path, size=(40, 30), mode="RGB", seed=0, **save) -> Path:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    (img.convert(mode) if mode != "RGB" else img).save(path, **save)
    return path


def awkward_images(folder: Path) -> list[Path]:
    """Grayscale, RGBA, 16-bit grayscale and an EXIF-rotated JPEG: what translate.py decodes without a word."""
    folder.mkdir()
    rgba = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 4), dtype=np.uint8), "RGBA")
    rgba.save(folder / "rgba.png")
    Image.fromarray(np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)).save(folder / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    return [photo(folder / "gray.png", mode="L"), folder / "rgba.png", folder / "sixteen.png",
            photo(folder / "rotated.jpg", (60, 20), exif=exif)]


# ----------------------------------------------------------------------------- GP-UNIT
def test_sampled_styles_are_what_translate_py_writes(gp_unit_server, sample, tmp_path):
    gallery, grids, downloads, status = gp_unit(gp_unit_server, [sample], num_styles=3, seed=5)
    assert status.startswith("Translated 3 image(s).")
    assert [item["caption"] for item in gallery] == [f"{sample.stem}__s{k}" for k in range(3)]
    summary = translate_folder(gp_unit_server[0], sample, tmp_path / "cli", num_styles=3, seed=5, progress=False)
    for item, expected in zip(gallery, summary["written"]):
        assert Image.open(item["image"]).size == (64, 64)
        assert np.array_equal(pixels(item["image"]), pixels(expected))
    assert len(grids) == 1 and Image.open(grids[0]["image"]).size == (4 * 66 + 2, 66 + 2)  # input + 3 results
    assert Path(downloads[0]).suffix == ".zip" and len(downloads) == 1 + 3 + 1


def test_exemplar_and_awkward_images(gp_unit_server, tmp_path):
    images = awkward_images(tmp_path / "in")
    style = photo(tmp_path / "style.png", (50, 50), seed=9)
    gallery, grids, _, status = gp_unit(gp_unit_server, images, "exemplar image", style)
    assert status == "Translated 4 image(s)." and len(grids) == 4
    # decoded and translated as scripts/translate.py does (EXIF turned upright, 16 bits scaled, alpha on white)
    summary = translate_folder(gp_unit_server[0], tmp_path / "in", tmp_path / "cli", style=style, progress=False)
    expected = {p.stem: p for p in summary["written"]}
    for item in gallery:
        assert np.array_equal(pixels(item["image"]), pixels(expected[item["caption"]]))


def test_huge_image_is_downscaled_and_said(gp_unit_server, tmp_path):
    huge = tmp_path / "panorama.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (40, 24))).save(huge)  # 6144 x 40
    gallery, _, _, status = gp_unit(gp_unit_server, [huge], num_styles=1)
    assert len(gallery) == 1 and "panorama.png** is 6144x40: downscaled to 2048x13 first" in status


def test_bad_uploads_get_messages_and_the_server_lives_on(gp_unit_server, sample, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(AppError, match="broken.png is not an image that can be read"):
        gp_unit(gp_unit_server, [broken])
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(AppError, match="Invalid file type"):
        gp_unit(gp_unit_server, [notes])
    with pytest.raises(AppError, match="needs a style image"):
        gp_unit(gp_unit_server, [sample], "exemplar image")
    with pytest.raises(AppError, match="at least one content image"):
        gp_unit(gp_unit_server, [])
    # a bad file beside a good one: the good one is translated, the bad one named
    gallery, _, _, status = gp_unit(gp_unit_server, [sample, broken], num_styles=1)
    assert len(gallery) == 1 and "broken.png** is not an image that can be read" in status


def test_requests_queue(gp_unit_server, sample):
    c = client(gp_unit_server)
    jobs = [c.submit([handle_file(str(sample))], "sampled styles", None, 1, seed, "stretch", api_name="/translate")
            for seed in range(3)]
    results = [job.result(timeout=60) for job in jobs]
    assert all(r[3] == "Translated 1 image(s)." for r in results)
    assert not np.array_equal(pixels(results[0][0][0]["image"]), pixels(results[1][0][0]["image"]))


# ----------------------------------------------------------------------------- DeepI2I
def test_deepi2i_classes_and_noise(deepi2i_server, sample, tmp_path):
    gallery, grids, _, status = deepi2i(deepi2i_server, [sample], ["dog", "red panda"], num_styles=2, seed=3)
    assert status == "Translated 4 image(s)." and len(grids) == 1
    assert [g["caption"] for g in gallery] == [f"{sample.stem}__{c}__s{k}" for c in ("dog", "red_panda")
                                               for k in range(2)]
    summary = translate_folder_classes(deepi2i_server[0], sample, tmp_path / "cli", ["dog", "red panda"],
                                       num_styles=2, seed=3, progress=False)
    for item, expected in zip(gallery, summary["written"]):
        assert Image.open(item["image"]).size == (64, 64)
        assert np.array_equal(pixels(item["image"]), pixels(expected))


def test_deepi2i_bad_classes_get_messages(deepi2i_server, sample):
    with pytest.raises(AppError, match="unknown target class 'zebra' .known: cat, dog, fox, red panda"):
        deepi2i(deepi2i_server, [sample], ["dog", "zebra"])
    with pytest.raises(AppError, match="Choose at least one target class"):
        deepi2i(deepi2i_server, [sample], [])
    assert deepi2i(deepi2i_server, [sample], ["3"])[3] == "Translated 1 image(s)."  # an index is a class too


# ----------------------------------------------------------------------------- the command line
def test_cli_local_by_default_and_demo_checkpoint(gp_unit_checkpoint, monkeypatch):
    served = []
    monkeypatch.setattr(gpunit.app, "launch", lambda app, host, port, share: served.append((app, host, port, share)))
    monkeypatch.setitem(gpunit.app.DEMO_CHECKPOINTS, "gp_unit", gp_unit_checkpoint)
    done = run_script("scripts/app.py", "--device", "cpu")
    assert done.status == 0 and f"gp_unit translator from {gp_unit_checkpoint}" in done.out
    assert served[0][1:] == ("127.0.0.1", 7860, False)
    assert run_script("scripts/app.py", "--checkpoint", gp_unit_checkpoint, "--host", "0.0.0.0", "--port", 8000,
                      "--share").status == 0
    assert served[1][1:] == ("0.0.0.0", 8000, True)


def test_cli_opens_the_authors_published_files(gp_unit_server, tmp_path, monkeypatch):
    served = []
    monkeypatch.setattr(gpunit.app, "launch", lambda app, *args: served.append(app))
    ours = gp_unit_server[0]
    stage2 = export_published_stage2(ours.generator, ours.sampler, tmp_path / "cat2dog.pt")
    encoder = export_published_content_encoder(ours.content_encoder, tmp_path / "content_encoder.pt")
    done = run_script("scripts/app.py", "--checkpoint", stage2, "--content-encoder", encoder, "--device", "cpu")
    assert done.status == 0 and f"gp_unit translator from {stage2} on cpu" in done.out and len(served) == 1


def test_cli_missing_checkpoints(tmp_path, monkeypatch):
    done = run_script("scripts/app.py", "--checkpoint", tmp_path / "nope.pt")
    assert done.status == 2 and "checkpoint not found" in done.err
    monkeypatch.setitem(gpunit.app.DEMO_CHECKPOINTS, "deepi2i", tmp_path / "runs" / "deepi2i.pt")
    done = run_script("scripts/app.py", "--method", "deepi2i")
    assert done.status == 2 and "python scripts/demo.py --method deepi2i" in done.err
