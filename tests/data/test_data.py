"""Image decoding, folder scanning, the training datasets and the resumable sampler."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpunit.data.datasets import (
    Augment,
    ImageFolderDataset,
    InfiniteSampler,
    PriorImageDataset,
    UnpairedDataset,
    domain_labels,
    make_loader,
)
from gpunit.data.images import (
    UnreadableImageError,
    filter_readable,
    load_mask,
    load_rgb,
    resize_for_model,
    save_image,
    scan_images,
    to_pil,
    to_tensor,
)


def write(path: Path, array_or_image, **save_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    img.save(path, **save_args)
    return path


def solid(color, size=(8, 8)) -> Image.Image:
    return Image.new("RGB", size, color)


def position_image(size=20, offset=0) -> np.ndarray:
    """RGB image whose pixels encode their position: R = column, G = row, B = offset (identifies the file)."""
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([cols * 10, rows * 10, np.full_like(rows, offset)], -1).astype(np.uint8)


def corrupt(path: Path) -> Path:
    write(path, position_image(32))
    path.write_bytes(path.read_bytes()[:60])  # header survives, pixel data truncated
    return path


def pixel(img: Image.Image, xy=(0, 0)):
    return img.getpixel(xy)


# ----------------------------------------------------------------------------- decoding
def test_modes_load_as_rgb(tmp_path):
    gray = write(tmp_path / "gray.png", np.full((4, 4), 100, np.uint8))
    assert load_rgb(gray).mode == "RGB" and pixel(load_rgb(gray)) == (100, 100, 100)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)  # opaque blue; the rest transparent black
    img = load_rgb(write(tmp_path / "rgba.png", rgba))
    assert pixel(img, (0, 0)) == (0, 0, 255) and pixel(img, (1, 1)) == (255, 255, 255)  # composited on white

    la = load_rgb(write(tmp_path / "la.png", Image.new("LA", (4, 4), (0, 0))))
    assert pixel(la) == (255, 255, 255)

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    assert pixel(load_rgb(write(tmp_path / "p.png", palette))) == (200, 10, 20)
    palette.info["transparency"] = 1
    assert pixel(load_rgb(write(tmp_path / "pt.png", palette, transparency=1))) == (255, 255, 255)

    sixteen = write(tmp_path / "16.png", np.array([[0, 32896, 65535]], np.uint16))
    assert Image.open(sixteen).mode.startswith("I")
    assert [pixel(load_rgb(sixteen), (x, 0))[0] for x in range(3)] == [0, 128, 255]  # scaled, not clipped
    mode_i = write(tmp_path / "i.tif", Image.fromarray(np.array([[0, 65535]], np.int32), mode="I"))
    assert [pixel(load_rgb(mode_i), (x, 0))[0] for x in range(2)] == [0, 255]

    cmyk = Image.new("CMYK", (4, 4), (255, 0, 0, 0))  # pure cyan
    assert pixel(load_rgb(write(tmp_path / "c.tif", cmyk))) == (0, 255, 255)
    jpg = np.array(pixel(load_rgb(write(tmp_path / "c.jpg", cmyk, quality=100))))
    assert np.abs(jpg - (0, 255, 255)).max() < 8


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(position_image(20)[:10])  # 20 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = write(tmp_path / "rot.jpg", img, exif=exif.tobytes(), quality=100)
    assert Image.open(path).size == (20, 10)
    out = load_rgb(path)
    assert out.size == (10, 20)
    # Rotating clockwise moves the stored top-left pixel (R=0, G=0) to the top-right corner.
    r, g, _ = pixel(out, (9, 0))
    assert r < 8 and g < 8 and pixel(out, (0, 0))[1] > 60


def test_corrupt_file_raises_clear_error(tmp_path):
    bad = corrupt(tmp_path / "bad.png")
    with pytest.raises(UnreadableImageError, match="bad.png"):
        load_rgb(bad)
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match="x.jpg"):
        load_rgb(tmp_path / "x.jpg")


def test_filter_readable_logs_one_warning(tmp_path, caplog):
    good = [write(tmp_path / f"{k}.png", solid("red")) for k in range(3)]
    bad = [corrupt(tmp_path / "bad.png"), corrupt(tmp_path / "bad2.jpg")]
    with caplog.at_level(logging.WARNING, logger="gpunit.data"):
        ok, skipped = filter_readable(good[:2] + bad + good[2:])
    assert ok == good and skipped == bad
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bad.png" in warnings[0].getMessage() and "bad2.jpg" in warnings[0].getMessage()


def test_load_mask(tmp_path):
    assert load_mask(write(tmp_path / "m.png", solid((255, 7, 7)))).mode == "L"
    assert pixel(load_mask(tmp_path / "m.png")) == 255  # first channel of an RGB mask
    labels = write(tmp_path / "l.png", np.array([[0, 1]], np.uint8))
    assert [pixel(load_mask(labels), (x, 0)) for x in range(2)] == [0, 255]


def test_tensor_roundtrip_and_save(tmp_path):
    img = Image.fromarray(position_image(6))
    t = to_tensor(img)
    assert t.shape == (3, 6, 6) and t.min() >= -1 and t.max() <= 1 and t[0, 0, 0] == -1
    assert np.array_equal(np.asarray(to_pil(t)), np.asarray(img))
    save_image(t[None], tmp_path / "sub" / "out.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sub" / "out.png")), np.asarray(img))
    with pytest.raises(ValueError, match="shape"):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_resize_for_model():
    wide = Image.fromarray(position_image(40)[:20])  # 40 x 20
    for policy in ("shortside_crop", "stretch", "pad"):
        assert resize_for_model(wide, 16, policy).size == (16, 16)
    padded = np.asarray(resize_for_model(Image.new("RGB", (40, 20), "white"), 16, "pad"))
    assert padded[0, 8].tolist() == [0, 0, 0] and padded[8, 8].tolist() == [255, 255, 255]
    cropped = np.asarray(resize_for_model(Image.new("RGB", (40, 20), "white"), 16, "shortside_crop"))
    assert cropped.min() == 255
    with pytest.raises(ValueError, match="policy"):
        resize_for_model(wide, 16, "zoom")


# ----------------------------------------------------------------------------- folders
def test_scan_images(tmp_path):
    for name in ["10.png", "2.PNG", "1.jpg", ".hidden.png", "notes.txt", "sub/3.webp", ".cache/4.png"]:
        write(tmp_path / name, solid("red")) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    assert [p.name for p in scan_images(tmp_path, recursive=False)] == ["1.jpg", "2.PNG", "10.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)] == \
        ["1.jpg", "2.PNG", "10.png", "sub/3.webp"]
    with pytest.raises(FileNotFoundError, match="missing"):
        scan_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        scan_images(tmp_path / "empty")


def test_domain_labels_sorted_union(tmp_path):
    for folder in ["a/11_bird", "a/3_star", "b/3_star", "b/20_cat", "b/.git"]:
        (tmp_path / folder).mkdir(parents=True)
    assert domain_labels(tmp_path / "a", None, tmp_path / "b") == {"3_star": 0, "11_bird": 1, "20_cat": 2}


# ----------------------------------------------------------------------------- datasets
def make_prior(root: Path, classes=("0_a", "1_b", "2_c"), stems=range(4), mask_ext="png", size=20):
    """Class k, stem s: a position image with B = 10 * k + s; its mask has the same position code in R."""
    for k, cls in enumerate(classes):
        for s in stems:
            write(root / "img" / cls / f"{s}.png", position_image(size, 10 * k + s))
            write(root / "mask" / cls / f"{s}.{mask_ext}", position_image(size, 0))
    return root / "img", root / "mask"


def decode(t: torch.Tensor) -> np.ndarray:
    return ((t + 1) * 127.5).round().numpy()


def test_augment_crops_and_flips():
    aug = Augment(image_size=8, load_size=20, flip=True)
    img = Image.fromarray(position_image(20))
    g = torch.Generator().manual_seed(0)
    params = [aug.sample(g) for _ in range(30)]
    assert {p.flip for p in params} == {True, False} and len({(p.top, p.left) for p in params}) > 5
    assert all(0 <= p.top <= 12 and 0 <= p.left <= 12 for p in params)
    p = next(q for q in params if not q.flip)
    out = np.asarray(aug(img, p))
    assert out.shape == (8, 8, 3) and out[0, 0, 0] == 10 * p.left and out[0, 0, 1] == 10 * p.top
    p = next(q for q in params if q.flip)
    assert np.asarray(aug(img, p))[0, 0, 0] == 10 * (p.left + 7)
    no_crop = Augment(image_size=8, load_size=0, flip=False)
    assert no_crop.sample(g).top == 0 and aug.resize_to == 20 and no_crop.resize_to == 8


def test_prior_dataset_items(tmp_path):
    img_root, mask_root = make_prior(tmp_path, mask_ext="jpg")
    labels = domain_labels(img_root)
    ds = PriorImageDataset(img_root, mask_root, labels, image_size=8, load_size=12, per_domain=3)
    assert len(ds) == 9  # 3 classes x first 3 stems
    item = ds[4]
    assert item["x"].shape == (3, 8, 8) and item["m_x"].shape == (1, 8, 8) and item["l_x"].dtype == torch.long
    assert item["x"].min() >= -1 and item["x"].max() <= 1 and item["m_x"].min() >= -1
    assert int(item["l_x"]) == 1 and "y" not in item
    # The mask got the image's crop: its R channel (position) matches the image's.
    assert np.abs(decode(item["m_x"][0]) - decode(item["x"][0])).max() <= 8


def test_prior_dataset_domain_counts(tmp_path):
    """images_per_domain for every class folder, except those named in domain_counts (the published Stage I
    run: 600 per ImageNet class, 29,000 CelebA-HQ faces)."""
    img_root, mask_root = make_prior(tmp_path, stems=range(5))
    ds = PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8, 12, per_domain=2,
                           domain_counts={"1_b": 4, "2_c": 0})
    per_class = {}
    for it in ds.items:
        per_class.setdefault(ds.domains[it.domain], []).append(it.stem)
    assert per_class == {"0_a": ["0", "1"], "1_b": ["0", "1", "2", "3"], "2_c": ["0", "1", "2", "3", "4"]}


def test_prior_dataset_pairs_share_stem_and_crop(tmp_path):
    img_root, mask_root = make_prior(tmp_path, size=24)
    ds = PriorImageDataset(img_root, mask_root, domain_labels(img_root), image_size=8, load_size=24,
                           paired=True, per_domain=0)
    partners = set()
    for i in range(40):
        item = ds[i]
        x, y = decode(item["x"]), decode(item["y"])
        cls_x, stem_x = divmod(int(x[2, 4, 4]), 10)
        cls_y, stem_y = divmod(int(y[2, 4, 4]), 10)
        assert stem_y == stem_x and cls_y != cls_x and cls_y == int(item["l_y"]) and cls_x == int(item["l_x"])
        assert np.array_equal(x[:2], y[:2])  # position channels: identical crop and flip
        assert torch.equal(item["m_x"], item["m_y"])
        partners.add((cls_x, cls_y))
    assert len(partners) == 6  # every ordered pair of distinct classes occurs


def test_prior_dataset_drops_incomplete_pairs(tmp_path, caplog):
    img_root, mask_root = make_prior(tmp_path)
    (img_root / "1_b" / "3.png").unlink()
    with caplog.at_level(logging.WARNING, logger="gpunit.data"):
        ds = PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8, 12, paired=True)
    assert len(ds) == 9 and "dropping 2" in caplog.text
    for folder in ("0_a", "2_c"):
        for s in range(3):
            (img_root / folder / f"{s}.png").unlink()
    with pytest.raises(ValueError, match="every class folder"):
        PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8, 12, paired=True)


def test_prior_dataset_missing_mask_and_labels(tmp_path):
    img_root, mask_root = make_prior(tmp_path)
    (mask_root / "1_b" / "2.png").unlink()
    (mask_root / "2_c" / "0.png").unlink()
    with pytest.raises(FileNotFoundError, match="2 image") as err:
        PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8)
    assert "1_b" in str(err.value) and "2.png" in str(err.value)
    with pytest.raises(ValueError, match="no label"):
        PriorImageDataset(img_root, mask_root, {"0_a": 0}, 8)


def test_prior_dataset_skips_corrupt_file(tmp_path, caplog):
    img_root, mask_root = make_prior(tmp_path)
    corrupt(img_root / "1_b" / "1.png")
    with caplog.at_level(logging.WARNING, logger="gpunit.data"):
        ds = PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8, 12)
    assert len(ds) == 11 and "1.png" in caplog.text
    assert all(ds[i]["x"].shape == (3, 8, 8) for i in range(len(ds)))


def test_determinism(tmp_path):
    img_root, mask_root = make_prior(tmp_path, size=24)
    ds = PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8, 24, paired=True)
    a, b = ds[5], ds[5]
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(123)  # global RNG state must not matter
    assert torch.equal(ds[5]["y"], a["y"])
    # Same item (5 and 5 + len) but a different global id: a different crop.
    assert not torch.equal(ds[5 + len(ds)]["x"], a["x"])
    other_seed = PriorImageDataset(img_root, mask_root, domain_labels(img_root), 8, 24, seed=1)
    assert not torch.equal(other_seed[5]["x"], a["x"])


def make_folder(root: Path, n: int, offset: int = 0, size: int = 12) -> Path:
    for k in range(n):
        write(root / f"{k}.png", position_image(size, offset + k))
    return root


def test_unpaired_dataset(tmp_path, caplog):
    src = [make_folder(tmp_path / "s1", 5), make_folder(tmp_path / "s2" / "deep", 3, 100).parent]
    tgt = [make_folder(tmp_path / "t", 6, 200)]
    ds = UnpairedDataset([str(p) for p in src], [str(p) for p in tgt], [2, 0], None, image_size=8, load_size=12)
    assert len(ds) == 5 and ds.len_target == 6  # 2 of s1 + all 3 of s2 (recursive)
    sources = {int(decode(ds[i]["x"])[2, 0, 0]) for i in range(5)}
    assert sources == {0, 1, 100, 101, 102}
    targets = {int(decode(ds[i]["y"])[2, 0, 0]) for i in range(60)}
    assert targets == set(range(200, 206))
    assert torch.equal(ds[3]["y"], ds[3]["y"]) and ds[3]["x"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="source_counts has 1 entries for 2"):
        UnpairedDataset([str(p) for p in src], [str(p) for p in tgt], [1], None, image_size=8)
    corrupt(tmp_path / "t" / "9.png")
    with caplog.at_level(logging.WARNING, logger="gpunit.data"):
        assert UnpairedDataset([str(src[0])], [str(tgt[0])], image_size=8).len_target == 6
    assert "9.png" in caplog.text
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="none"):
        UnpairedDataset([str(src[0])], [str(tmp_path / "none")], image_size=8)


def test_unpaired_dataset_crops_independent_or_shared(tmp_path):
    """Default: x and y get their own crop and flip; same_crop=True gives y the crop and flip of x (published)."""
    src, tgt = make_folder(tmp_path / "s", 4, size=16), make_folder(tmp_path / "t", 4, 200, size=16)
    kw = dict(image_size=8, load_size=16, seed=3)
    independent = UnpairedDataset([str(src)], [str(tgt)], **kw)
    shared = UnpairedDataset([str(src)], [str(tgt)], same_crop=True, **kw)
    same = []
    for i in range(30):
        a, b = independent[i], shared[i]
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"][2], b["y"][2])  # same draws of x and of the target
        x, y = decode(b["x"]), decode(b["y"])
        assert np.array_equal(x[:2], y[:2])  # position channels: one crop and flip
        same.append(np.array_equal(decode(a["x"])[:2], decode(a["y"])[:2]))
    assert sum(same) < 5  # independent draws rarely coincide (9 x 9 offsets x 2 flips)


def test_image_folder_dataset(tmp_path):
    folder = make_folder(tmp_path / "f", 4)
    ds = ImageFolderDataset(str(folder), image_size=6, counts=[3])
    assert len(ds) == 3 and ds[1]["path"] == str(folder / "1.png") and ds[1]["x"].shape == (3, 6, 6)
    assert torch.equal(ds[1]["x"], ds[4]["x"])  # no jitter by default: id 4 is item 1 again


# ----------------------------------------------------------------------------- sampling
def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_infinite_sampler_epochs_and_resume():
    ids = take(iter(InfiniteSampler(5, seed=3)), 17)
    for epoch in range(3):
        assert sorted(ids[5 * epoch:5 * epoch + 5]) == list(range(5 * epoch, 5 * epoch + 5))
    assert ids[:5] != [0, 1, 2, 3, 4] or ids[5:10] != [5, 6, 7, 8, 9]
    for k in (0, 3, 5, 12):
        assert take(iter(InfiniteSampler(5, seed=3, start=k)), 17 - k) == ids[k:]
    assert take(iter(InfiniteSampler(5, seed=4)), 5) != ids[:5]
    with pytest.raises(ValueError, match="empty"):
        InfiniteSampler(0, seed=0)


def test_loader_independent_of_workers_and_resumable(tmp_path):
    folder = make_folder(tmp_path / "f", 5, size=16)
    ds = UnpairedDataset([str(folder)], [str(folder)], image_size=8, load_size=16)
    batches = {}
    for workers in (0, 2):
        it = iter(make_loader(ds, batch_size=3, seed=7, num_workers=workers))
        batches[workers] = take(it, 4)
    for b0, b2 in zip(batches[0], batches[2]):
        assert torch.equal(b0["x"], b2["x"]) and torch.equal(b0["y"], b2["y"])
    resumed = take(iter(make_loader(ds, batch_size=3, seed=7, start=6)), 2)
    for b, r in zip(batches[0][2:], resumed):
        assert torch.equal(b["x"], r["x"]) and torch.equal(b["y"], r["y"])
