"""BigGAN pair generation and instance masks, on a tiny randomly initialised BigGAN."""
import json
import runpy
import shutil
from pathlib import Path

import pytest
import requests
import torch
from helpers import run_script
from PIL import Image
from pytorch_pretrained_biggan import BigGAN, BigGANConfig, one_hot_from_int
from torchvision.transforms.v2.functional import pil_to_tensor

from gpunit.engine.pretrained import MissingWeightsError
from gpunit.gp_unit.prior import biggan_pairs as bg
from gpunit.gp_unit.prior.masks import MaskRCNNMasker, check_mask_folder, select_instance_mask, write_masks

REPO = Path(__file__).resolve().parents[2]
CLASSES = [11, 232, 627]


def tiny_biggan() -> BigGAN:
    """A 32x32 BigGAN-deep with random weights that still produces finite, varied images."""
    config = BigGANConfig(output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4,
                          layers=[(True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)],
                          attention_layer_position=2)
    model = BigGAN(config)
    with torch.no_grad():
        # Random u/v make the spectral-norm estimate u^T W v arbitrary (the weights then blow
        # up); set them to the exact top singular vectors, the fixed point of power iteration.
        for module in model.modules():
            if hasattr(module, "weight_orig"):
                u, _, vh = torch.linalg.svd(module.weight_orig.flatten(1), full_matrices=False)
                module.weight_u.copy_(u[:, 0])
                module.weight_v.copy_(vh[0])
        # The unconditional final BatchNorm's affine parameters are left uninitialised (torch.Tensor(n)).
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def biggan_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_biggan")
    torch.manual_seed(0)
    model = tiny_biggan()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(model.config.to_json_string())
    return folder


@pytest.fixture(scope="module")
def model(biggan_dir) -> BigGAN:
    return bg.load_biggan(biggan_dir)


def read(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return pil_to_tensor(img)


def write_png(image: torch.Tensor, path: Path) -> None:
    bg.write_png(Path(path), image)


# ------------------------------------------------------------------------------- classes
def test_paper_classes_and_groups():
    assert len(bg.PAPER_CLASSES) == len(set(bg.PAPER_CLASSES)) == 291
    assert {bg.imagenet_group(i) for i in bg.PAPER_CLASSES} == {"bird", "dog", "otheranimal", "vehicle"}
    folders = bg.class_folders(bg.PAPER_CLASSES)
    assert (folders[7], folders[11], folders[232], folders[271], folders[101], folders[627]) == (
        "7_bird", "11_bird", "232_dog", "271_otheranimal", "101_otheranimal", "627_vehicle")
    assert bg.class_folders(bg.BIRD_DOG_CAR)[436] == "436_car"
    with pytest.raises(ValueError, match="0..999"):
        bg.class_folders([5, 1000])
    with pytest.raises(ValueError, match="more than once"):
        bg.class_folders([5, 5])


def test_truncation_split_half_and_half():
    t = bg.latent_truncations(655)
    assert t[:328] == [0.5] * 328 and t[328:] == [1.0] * 327
    assert bg.latent_truncations(6, (0.25, 0.5, 1.0)) == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]


# ------------------------------------------------------------------------------- loading
def test_loaded_model_is_finite_and_matches_saved(model, biggan_dir):
    assert not model.training
    z = bg.latent_noise(0, 16, 1.0)
    images = model(z.repeat(3, 1), torch.from_numpy(one_hot_from_int(CLASSES, 3)), 1.0)
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
    assert images.std() > 0.05 and (images[0] - images[1]).abs().mean() > 1e-3  # classes differ
    torch.manual_seed(0)  # the fixture's seed: the same weights, built afresh
    fresh = tiny_biggan()(z.repeat(3, 1), torch.from_numpy(one_hot_from_int(CLASSES, 3)), 1.0)
    assert torch.equal(fresh, images)


def test_missing_weights_folder_names_both_files(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        bg.load_biggan(tmp_path / "nowhere")
    for text in ("pytorch_model.bin", "config.json", "--biggan", "biggan-deep-128-pytorch_model.bin"):
        assert text in str(err.value)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="pytorch_model.bin missing"):
        bg.load_biggan(tmp_path)


def test_default_folder_is_the_hub_cache_and_nothing_is_downloaded(monkeypatch, tmp_path, biggan_dir):
    """Without --biggan the weights are looked for in $TORCH_HOME/hub/checkpoints/<model name>/; a missing
    file names that folder and the download addresses, and no network is touched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(requests, "get", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(MissingWeightsError, match=r"config.json.*--biggan") as err:
        bg.load_biggan(None, "biggan-deep-256")
    assert str(tmp_path / "hub" / "checkpoints" / "biggan-deep-256") in str(err.value)
    folder = tmp_path / "hub" / "checkpoints" / "biggan-deep-128"
    shutil.copytree(biggan_dir, folder)
    assert isinstance(bg.load_biggan(None, "biggan-deep-128"), torch.nn.Module)


def test_wrong_weights_file_is_rejected(tmp_path, biggan_dir):
    (tmp_path / "config.json").write_text((biggan_dir / "config.json").read_text())
    torch.save({"embeddings.weight": torch.zeros(16, 1000)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="lacks"):
        bg.load_biggan(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"truncated download")
    with pytest.raises(ValueError, match="does not hold BigGAN weights"):
        bg.load_biggan(tmp_path)


# ---------------------------------------------------------------------------- generation
def test_layout_determinism_and_truncation(model, tmp_path):
    summary = bg.generate_pairs(model, tmp_path / "a", CLASSES, num_latents=4, batch_size=3, progress=False)
    assert summary == {"written": 12, "skipped": 0, "latents": 4, "classes": 3, "out": str(tmp_path / "a/pairs")}
    pairs = tmp_path / "a/pairs"
    assert sorted(p.name for p in pairs.iterdir()) == ["11_bird", "232_dog", "627_vehicle"]
    for folder in pairs.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == [f"{k:05d}.png" for k in range(4)]
    assert not list(tmp_path.rglob("*.tmp"))

    # same settings -> identical files
    bg.generate_pairs(model, tmp_path / "b", CLASSES, num_latents=4, batch_size=3, progress=False)
    for path in pairs.rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "b/pairs" / path.relative_to(pairs)).read_bytes()
    # batch size must not matter: every latent has its own seeded noise (float rounding in
    # batched convolutions may still move a pixel by one level on some hardware)
    bg.generate_pairs(model, tmp_path / "c", CLASSES, num_latents=4, batch_size=1, progress=False)
    for path in pairs.rglob("*.png"):
        other = read(tmp_path / "c/pairs" / path.relative_to(pairs))
        assert (read(path).int() - other.int()).abs().max() <= 1

    # latent 0 is rendered at truncation 0.5, latent 3 at 1.0, from noise seeded by (seed, k)
    for k, t in ((0, 0.5), (3, 1.0)):
        expected = bg.to_uint8(model(bg.latent_noise(k, 16, t), torch.from_numpy(one_hot_from_int([232])), t))[0]
        assert torch.equal(read(pairs / f"232_dog/{k:05d}.png"), expected)
    assert not torch.equal(read(pairs / "232_dog/00000.png"), read(pairs / "232_dog/00001.png"))
    assert not torch.equal(read(pairs / "232_dog/00000.png"), read(pairs / "11_bird/00000.png"))

    bg.generate_pairs(model, tmp_path / "d", CLASSES, num_latents=4, seed=1, progress=False)
    assert read(tmp_path / "d/pairs/232_dog/00000.png").ne(read(pairs / "232_dog/00000.png")).any()


def test_resume_regenerates_only_missing(model, tmp_path):
    bg.generate_pairs(model, tmp_path, CLASSES, num_latents=3, progress=False)
    files = sorted((tmp_path / "pairs").rglob("*.png"))
    removed = tmp_path / "pairs/627_vehicle/00001.png"
    original = removed.read_bytes()
    removed.unlink()
    before = {p: p.stat().st_mtime_ns for p in files if p != removed}
    summary = bg.generate_pairs(model, tmp_path, CLASSES, num_latents=3, batch_size=2, progress=False)
    assert (summary["written"], summary["skipped"]) == (1, 8)
    assert removed.read_bytes() == original
    assert {p: p.stat().st_mtime_ns for p in before} == before
    with pytest.raises(ValueError, match="other settings"):
        bg.generate_pairs(model, tmp_path, CLASSES, num_latents=3, seed=7, progress=False)
    assert json.loads((tmp_path / "biggan_pairs.json").read_text())["seed"] == 0


def test_shards_and_resize(model, tmp_path):
    summary = bg.generate_pairs(model, tmp_path, {"bird": [10]}, num_latents=4, start_index=2,
                                size=16, progress=False)
    assert summary["written"] == 2
    assert sorted(p.name for p in (tmp_path / "pairs/10_bird").iterdir()) == ["00002.png", "00003.png"]
    assert read(tmp_path / "pairs/10_bird/00002.png").shape == (3, 16, 16)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        bg.generate_pairs(model, tmp_path / "t", [10], num_latents=2, truncations=(0.0, 1.0), progress=False)


def test_script_on_tiny_model(biggan_dir, tmp_path):
    script = ["scripts/generate_pairs.py", "--quiet"]
    done = run_script(*script, "--out", tmp_path, "--biggan", biggan_dir, "--classes", "11,232", "--num-latents", 2,
                      "--size", 16, "--device", "cpu")
    assert done.status == 0, done.err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")) == [
        "pairs/11_bird/00000.png", "pairs/11_bird/00001.png", "pairs/232_dog/00000.png", "pairs/232_dog/00001.png"]
    assert read(tmp_path / "pairs/11_bird/00000.png").shape == (3, 16, 16)

    # the error paths
    done = run_script(*script, "--out", tmp_path / "x", "--biggan", tmp_path / "no")
    assert done.status == 2 and done.err.startswith("error: BigGAN weights: folder")

    # masks asked for without Mask R-CNN weights: stops before generating anything
    done = run_script(*script, "--out", tmp_path / "m", "--biggan", biggan_dir, "--classes", "11,232",
                      "--num-latents", 2, "--size", 16, "--masks", "maskrcnn", env={"TORCH_HOME": tmp_path / "hub"})
    assert done.status == 2 and "images written" not in done.out and not (tmp_path / "m/pairs").exists()
    assert "maskrcnn_resnet50_fpn_v2_coco" in done.err and "--maskrcnn-weights" in done.err
    done = run_script(*script, "--out", tmp_path / "m", "--min-object-area", 0.1)
    assert done.status == 2 and "--masks maskrcnn" in done.err


# --------------------------------------------------------------------------------- masks
def test_check_mask_folder_reports_missing(tmp_path):
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    for name in ("a/1.png", "a/2.png", "b/3.png"):
        (tmp_path / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        write_png(image, str(tmp_path / "img" / name))
    (tmp_path / "mask/a").mkdir(parents=True)
    write_png(image[:1], str(tmp_path / "mask/a/1.png"))
    assert check_mask_folder(tmp_path / "img", tmp_path / "mask") == ["a/2.png", "b/3.png"]
    with pytest.raises(FileNotFoundError, match="mask folder"):
        check_mask_folder(tmp_path / "img", tmp_path / "nomask")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        check_mask_folder(tmp_path / "empty", tmp_path / "mask")


def test_maskrcnn_missing_weights_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        MaskRCNNMasker()
    assert "maskrcnn_resnet50_fpn_v2_coco" in str(err.value) and "--maskrcnn-weights" in str(err.value)
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torchvision Mask R-CNN"):
        MaskRCNNMasker(tmp_path / "corrupt.pth")


def test_select_instance_mask_keeps_best_instance():
    masks = torch.stack([torch.full((1, 4, 5), 0.2), torch.full((1, 4, 5), 0.9)])
    best = select_instance_mask({"scores": torch.tensor([0.6, 0.8]), "masks": masks}, 4, 5, 0.5)
    assert torch.allclose(best, torch.full((4, 5), 0.9))
    low = select_instance_mask({"scores": torch.tensor([0.3, 0.4]), "masks": masks}, 4, 5, 0.5)
    none = select_instance_mask({"scores": torch.zeros(0), "masks": torch.zeros(0, 1, 4, 5)}, 4, 5, 0.5)
    assert low.shape == none.shape == (4, 5) and low.abs().sum() == none.abs().sum() == 0


def test_write_masks_resumable_grayscale(tmp_path):
    for k in range(3):
        (tmp_path / "img/7_bird").mkdir(parents=True, exist_ok=True)
        write_png(torch.full((3, 6, 4), 60 * k, dtype=torch.uint8), str(tmp_path / f"img/7_bird/{k}.png"))
    (tmp_path / "img/7_bird/bad.jpg").write_bytes(b"not an image")
    seen = []

    def brightness_masker(images):  # stands in for Mask R-CNN: mask = mean intensity
        seen.extend(images)
        return [img.float().mean(0) / 255 for img in images]

    summary = write_masks(tmp_path / "img", tmp_path / "mask", brightness_masker, batch_size=2, progress=False)
    assert summary == {"written": 3, "skipped": 0, "failed": 1} and len(seen) == 3
    mask = read(tmp_path / "mask/7_bird/2.png")
    assert mask.shape == (1, 6, 4) and mask.dtype == torch.uint8 and int(mask[0, 0, 0]) == 120
    assert check_mask_folder(tmp_path / "img", tmp_path / "mask") == ["7_bird/bad.jpg"]
    (tmp_path / "mask/7_bird/1.png").unlink()
    assert write_masks(tmp_path / "img", tmp_path / "mask", brightness_masker, progress=False)["written"] == 1
    assert len(seen) == 4


@pytest.mark.slow
def test_maskrcnn_masker_runs_with_random_weights(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), tmp_path / "m.pth")
    masker = MaskRCNNMasker(tmp_path / "m.pth", score_threshold=0.0)
    masks = masker(torch.randint(0, 256, (2, 3, 24, 32), dtype=torch.uint8))
    assert masks.shape == (2, 24, 32) and 0 <= masks.min() and masks.max() <= 1 and masks.max() > 0


# ----------------------------------------------------------------------------- filtering
@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A random-weight stand-in for vgg19-dcbb9e9d.pth (its features up to conv5_2, under the same keys)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])[:31]
    for conv in features:
        if isinstance(conv, torch.nn.Conv2d):  # torchvision's VGG init: the signal survives 13 layers
            torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def brightness_masker(images):
    """Stands in for Mask R-CNN: the mask is the mean intensity, so its area is the mean brightness."""
    return [img.float().mean(0) / 255 for img in images]


def test_select_latents_ranks_within_each_class():
    from gpunit.gp_unit.prior.pair_filter import select_latents

    torch.manual_seed(0)
    t = torch.rand(20, 3)
    kept, info = select_latents(t, keep=5)
    ranks = torch.stack([torch.tensor([sum(t[j, c] < t[k, c] for j in range(20)) / 19 for k in range(20)])
                         for c in range(3)], 1)
    assert torch.allclose(info["score"], ranks.mean(1))
    assert kept == sorted(ranks.mean(1).argsort(descending=True)[:5].tolist())
    # every class weighs alike: a class with a wider spread of typicality does not decide alone
    stretched = t.clone()
    stretched[:, 1] = 100 * stretched[:, 1] - 40
    assert select_latents(stretched, keep=5)[0] == kept
    assert sorted(stretched.mean(1).argsort(descending=True)[:5].tolist()) != kept  # a plain mean would differ


def test_select_latents_object_check(caplog):
    from gpunit.gp_unit.prior.pair_filter import select_latents

    t = torch.tensor([[0.9, 0.9, 0.9], [0.8, 0.8, 0.8], [0.7, 0.7, 0.7], [0.1, 0.1, 0.1]])
    area = torch.tensor([[0.01, 0.5, 0.5],    # too small in one class of three
                         [0.01, 0.01, 0.5],   # too small in two
                         [0.3, 0.3, 0.3], [0.3, 0.3, 0.3]])
    assert select_latents(t, 2)[0] == [0, 1]
    assert select_latents(t, 2, area, min_object_area=0.05, min_object_classes=0.6)[0] == [0, 2]
    with caplog.at_level("WARNING"):
        kept, info = select_latents(t, 3, area, min_object_area=0.05, min_object_classes=1.0)
    assert kept == [2, 3] and info["passed"].tolist() == [False, False, True, True]
    assert "only 2 of 4 latents pass" in caplog.text
    with pytest.raises(ValueError, match="mask model"):
        select_latents(t, 2, None, min_object_area=0.05)


def test_scores_come_from_the_written_images(model, vgg_file, tmp_path):
    """Typicality and object area are those of the images generate_pairs writes; the scores are saved per
    class and reused (resume) while the settings match."""
    from gpunit.gp_unit.prior import pair_filter as pf

    feature_net = pf.StyleFeature(vgg_file)
    scores = pf.score_latents(model, tmp_path / "f", CLASSES, num_latents=6, feature_net=feature_net,
                              masker=brightness_masker, batch_size=4, progress=False)
    assert scores["typicality"].shape == scores["object_area"].shape == (6, 3)
    assert sorted(p.name for p in (tmp_path / "f/filter").iterdir()) == ["11_bird.pt", "232_dog.pt", "627_vehicle.pt"]
    bg.generate_pairs(model, tmp_path / "all", CLASSES, num_latents=6, progress=False)
    for j, folder in enumerate(["11_bird", "232_dog", "627_vehicle"]):
        images = torch.stack([read(tmp_path / f"all/pairs/{folder}/{k:05d}.png") for k in range(6)])
        features = feature_net(images.float() / 127.5 - 1)
        mean = features.mean(0, keepdim=True)
        expected = (features * mean).sum(1) / (features.norm(dim=1) * mean.norm())
        torch.testing.assert_close(scores["typicality"][:, j], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(scores["object_area"][:, j], images.float().mean((1, 2, 3)) / 255)
    assert scores["typicality"].std() > 1e-4  # the stand-in VGG tells latents apart
    again = pf.score_latents(model, tmp_path / "f", CLASSES, num_latents=6, masker=brightness_masker, progress=False)
    assert torch.equal(again["typicality"], scores["typicality"])  # read back, nothing rendered
    with pytest.raises(ValueError, match="feature_net"):  # other settings: the saved scores do not apply
        pf.score_latents(model, tmp_path / "f", CLASSES, num_latents=6, seed=1, progress=False)


def test_wrong_vgg_file_is_rejected(tmp_path, monkeypatch):
    from gpunit.gp_unit.prior.pair_filter import StyleFeature

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="vgg19-dcbb9e9d.pth.*--vgg-weights"):
        StyleFeature()
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not torchvision's VGG19"):
        StyleFeature(tmp_path / "bad.pth")


def test_script_keeps_the_best_latents(biggan_dir, vgg_file, tmp_path, capsys):
    """--num-latents 6 --keep 3: every latent is scored, the 3 best are written, the same in every class."""
    main = runpy.run_path(str(REPO / "scripts/generate_pairs.py"))["main"]
    args = ["--out", str(tmp_path), "--biggan", str(biggan_dir), "--classes", "11,232", "--num-latents", "6",
            "--keep", "3", "--vgg-weights", str(vgg_file), "--device", "cpu", "--quiet"]
    main(args)
    selection = json.loads((tmp_path / "filter/selection.json").read_text())
    best = sorted(sorted(range(6), key=lambda k: -selection["score"][k])[:3])
    assert selection["kept"] == best and sum(selection["kept_per_truncation"].values()) == 3
    for folder in ("11_bird", "232_dog"):
        assert sorted(p.name for p in (tmp_path / "pairs" / folder).iterdir()) == [f"{k:05d}.png" for k in best]
    assert "kept 3 of 6 latents" in capsys.readouterr().out
    main(args)  # resume: scores read back, nothing rendered again
    assert "0 images written, 6 already there" in capsys.readouterr().out
    with pytest.raises(ValueError, match="other settings"):  # the unfiltered latents never mix in
        main(args[:-7] + ["--keep", "0", "--device", "cpu", "--quiet"])
