"""The built-in synthetic prior: one latent fixes the content, the class fixes the appearance."""
import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpunit.data.synthetic import (
    CLASS_NAMES,
    make_dataset,
    measure_object,
    object_stats,
    read_content_csv,
    render,
    render_background,
)

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / np.maximum(a, b).sum())


def _supersampled_ellipse(size, cx, cy, a, b, angle_deg, ss=8):
    """Coverage of a rotated ellipse (semi-axes a, b) drawn independently of the module under test."""
    t = (np.arange(size * ss) + 0.5) / ss
    x, y = np.meshgrid(t - cx, t - cy)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    u, v = c * x + s * y, -s * x + c * y
    inside = (u / a) ** 2 + (v / b) ** 2 <= 1
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


# ---------------------------------------------------------------------------------- rendering
def test_render_is_deterministic_and_depends_on_index():
    image, mask, stats = render(3, 5, 2, SIZE)
    image2, mask2, stats2 = render(3, 5, 2, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.float32
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(mask, mask2)
    assert stats == stats2
    other, other_mask, _ = render(3, 6, 2, SIZE)
    assert not np.array_equal(image, other) and not np.array_equal(mask, other_mask)
    assert not np.array_equal(image, render(4, 5, 2, SIZE)[0])  # the seed matters too


@pytest.mark.parametrize("index", [0, 7, 123])
def test_same_latent_shares_background_and_content_across_classes(index):
    background = render_background(0, index, SIZE)
    renders = [render(0, index, c, SIZE) for c in range(len(CLASS_NAMES))]
    for image, mask, stats in renders:
        np.testing.assert_array_equal(image[mask == 0], background[mask == 0])  # background: latent only
    ref = renders[0][2]
    for _, _, stats in renders[1:]:
        assert abs(stats["cx"] - ref["cx"]) < 0.5 and abs(stats["cy"] - ref["cy"]) < 0.5
        assert abs(stats["scale"] / ref["scale"] - 1) < 0.05
        if ref["elongation"] > 1.25:  # orientation is only well defined for elongated objects
            assert min(abs(stats["angle"] - ref["angle"]), 180 - abs(stats["angle"] - ref["angle"])) < 3
    for (im_a, _, _), (im_b, _, _) in itertools.combinations(renders, 2):
        assert np.abs(im_a.astype(int) - im_b.astype(int)).max() > 50  # the appearance differs


def test_different_latents_give_different_content():
    a, b = render(0, 1, 0, SIZE)[2], render(0, 2, 0, SIZE)[2]
    assert abs(a["cx"] - b["cx"]) + abs(a["cy"] - b["cy"]) + abs(a["scale"] - b["scale"]) > 0.5
    assert not np.array_equal(render_background(0, 1, SIZE), render_background(0, 2, SIZE))
    # Every latent is its own (including the large indexes of the held-out splits).
    indexes = list(range(12)) + [100_000_000, 300_000_000, 301_000_000, 400_000_000]
    centroids = {round(render(0, i, 0, SIZE)[2]["cx"], 2) for i in indexes}
    assert len(centroids) == len(indexes)


def test_classes_differ_in_shape():
    ious = []
    for index in range(3):
        masks = [render(0, index, c, SIZE)[1] for c in range(len(CLASS_NAMES))]
        ious += [_iou(a, b) for a, b in itertools.combinations(masks, 2)]
    assert max(ious) < 0.95 and min(ious) < 0.6
    assert np.mean(ious) < 0.8


def test_classes_are_told_apart_by_appearance():
    """A nearest-mean classifier on object colour statistics separates the classes."""
    def features(index, class_id):
        image, mask, _ = render(0, index, class_id, SIZE)
        w, px = mask[..., None], image.astype(np.float64) / 255
        mean = (px * w).sum((0, 1)) / w.sum()
        std = np.sqrt((((px - mean) ** 2) * w).sum((0, 1)) / w.sum())
        return np.concatenate([mean, std])

    classes = range(len(CLASS_NAMES))
    centroids = np.array([np.mean([features(i, c) for i in range(6)], axis=0) for c in classes])
    hits = [np.argmin(((centroids - features(i, c)) ** 2).sum(1)) == c for c in classes for i in range(100, 106)]
    assert np.mean(hits) >= 0.9


def test_masks_are_soft_coverage_in_unit_range():
    image, mask, _ = render(0, 4, 3, SIZE)
    assert mask.min() >= 0 and mask.max() <= 1 and mask.max() == 1
    fractional = (mask > 0) & (mask < 1)
    assert fractional.sum() >= 10  # anti-aliased edge
    # Edge pixels blend object and background.
    background = render_background(0, 4, SIZE)
    assert np.any(image[fractional] != background[fractional])


def test_any_size_renders_the_same_content():
    small, large = render(0, 9, 1, 32)[2], render(0, 9, 1, 96)[2]
    assert abs(large["cx"] / 3 - small["cx"]) < 0.3 and abs(large["scale"] / 3 - small["scale"]) < 0.3


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="class_id"):
        render(0, 0, len(CLASS_NAMES), SIZE)
    with pytest.raises(ValueError, match=">= 0"):
        render(0, -1, 0, SIZE)
    with pytest.raises(ValueError, match="size"):
        render_background(0, 0, 4)


# ---------------------------------------------------------------------------------- measuring
@pytest.mark.parametrize("angle", [0.0, 30.0, 120.0])
def test_object_stats_of_an_analytic_ellipse(angle):
    mask = _supersampled_ellipse(64, cx=30.5, cy=25.0, a=12, b=5, angle_deg=angle)
    stats = object_stats(mask)
    assert stats["cx"] == pytest.approx(30.5, abs=0.05) and stats["cy"] == pytest.approx(25.0, abs=0.05)
    assert stats["angle"] == pytest.approx(angle, abs=0.5)
    assert stats["scale"] == pytest.approx(math.sqrt((12 ** 2 + 5 ** 2) / 4), rel=0.01)  # rms radius
    assert stats["area"] == pytest.approx(math.pi * 12 * 5, rel=0.01)
    assert stats["elongation"] == pytest.approx(12 / 5, rel=0.02)


def test_object_stats_of_an_empty_mask_is_nan():
    assert all(math.isnan(object_stats(np.zeros((8, 8)))[k]) for k in ("cx", "cy", "scale", "angle"))
    with pytest.raises(ValueError, match="2-D"):
        object_stats(np.zeros((8, 8, 3)))


@pytest.mark.parametrize("class_id", range(len(CLASS_NAMES)))
def test_measure_object_recovers_the_mask_stats(class_id):
    image, mask, stats = render(1, 11, class_id, 64)
    measured = measure_object(image, render_background(1, 11, 64))
    assert abs(measured["cx"] - stats["cx"]) < 0.5 and abs(measured["cy"] - stats["cy"]) < 0.5
    assert abs(measured["scale"] / stats["scale"] - 1) < 0.08


def test_measure_object_finds_nothing_on_the_background():
    background = render_background(0, 3, SIZE)
    assert math.isnan(measure_object(background, background)["cx"])
    with pytest.raises(ValueError, match="same shape"):
        measure_object(background, background[:16])


# ---------------------------------------------------------------------------------- data set
COUNTS = dict(pairs_per_class=3, unpaired_per_class=2, domain_train=2, domain_test=1, pair_test=1)


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_make_dataset_layout_csv_and_skip(tmp_path):
    out = tmp_path / "syn"
    classes = ["ellipse", "star", "heart"]
    summary = make_dataset(out, size=SIZE, classes=classes, seed=2, workers=2, progress=False, **COUNTS)
    folders = ["0_ellipse", "3_star", "7_heart"]
    assert not summary["skipped"] and summary["images"] == 3 * (3 + 1 + 2 + 2 + 1)
    for root, n in (("pairs", 3), ("pairs_test", 1), ("unpaired", 2)):
        assert sorted(p.name for p in (out / root).iterdir() if p.is_dir()) == folders
        for folder in folders:
            assert _pngs(out / root / folder) == [f"{k:05d}.png" for k in range(n)]
            assert _pngs(out / f"{root}_mask" / folder) == _pngs(out / root / folder)
    for name in classes:
        assert len(_pngs(out / "domains" / name / "train")) == 2 and len(_pngs(out / "domains" / name / "test")) == 1
    mask = np.asarray(Image.open(out / "pairs_mask" / "3_star" / "00001.png"))
    assert mask.ndim == 2 and mask.dtype == np.uint8

    rows = {root: read_content_csv(out / root / "content.csv")
            for root in ("pairs", "pairs_test", "unpaired", "domains")}
    assert list(csv.DictReader(open(out / "pairs" / "content.csv")).fieldnames) == \
        ["path", "class", "seed", "index", "cx", "cy", "scale", "angle"]
    assert [len(r) for r in rows.values()] == [9, 3, 6, 9]
    for root_rows in rows.values():
        for row in root_rows:
            assert (out / row["path"]).is_file() and row["seed"] == 2
    # Same k = same latent across class folders; the CSV holds the mask's stats and the PNG the render.
    by_path = {row["path"]: row for row in rows["pairs"]}
    assert {by_path[f"pairs/{f}/00002.png"]["index"] for f in folders} == {2}
    row = by_path["pairs/7_heart/00002.png"]
    image, mask, stats = render(2, row["index"], CLASS_NAMES.index("heart"), SIZE)
    np.testing.assert_array_equal(np.asarray(Image.open(out / row["path"])), image)
    assert row["cx"] == pytest.approx(stats["cx"], abs=1e-3) and row["angle"] == pytest.approx(stats["angle"], abs=1e-3)
    written_mask = np.asarray(Image.open(out / "pairs_mask/7_heart/00002.png")) / 255.0
    assert object_stats(written_mask)["cx"] == pytest.approx(row["cx"], abs=0.05)
    # No latent repeats across splits (paired latents repeat across classes within pairs only).
    latents = {root: {r["index"] for r in root_rows} for root, root_rows in rows.items()}
    for a, b in itertools.combinations(latents, 2):
        assert not latents[a] & latents[b], (a, b)
    domain_train = {r["index"] for r in rows["domains"] if "/train/" in r["path"]}
    assert domain_train and not domain_train & {r["index"] for r in rows["domains"] if "/test/" in r["path"]}
    assert len(latents["unpaired"]) == 6  # independent latents per class
    assert json.loads((out / "synthetic.json").read_text())["complete"]

    # A re-run with the same parameters reuses the folder: nothing is rewritten.
    written = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    again = make_dataset(out, size=SIZE, classes=classes, seed=2, workers=2, progress=False, **COUNTS)
    assert again["skipped"]
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == written


def test_make_dataset_regenerates_on_new_parameters_and_after_damage(tmp_path):
    out = tmp_path / "syn"
    small = dict(COUNTS, unpaired_per_class=0, domain_train=0, domain_test=0, pair_test=0)
    make_dataset(out, size=SIZE, classes=[0, 1], workers=0, progress=False, **dict(small, pairs_per_class=3))
    (tmp_path / "keep.txt").write_text("not ours")
    summary = make_dataset(out, size=SIZE, classes=[0, 1], workers=0, progress=False, **dict(small, pairs_per_class=2))
    assert not summary["skipped"] and _pngs(out / "pairs" / "0_ellipse") == ["00000.png", "00001.png"]
    assert (tmp_path / "keep.txt").is_file()
    (out / "pairs" / "1_rectangle" / "00001.png").unlink()  # a damaged folder is not "complete"
    summary = make_dataset(out, size=SIZE, classes=[0, 1], workers=0, progress=False, **dict(small, pairs_per_class=2))
    assert not summary["skipped"] and (out / "pairs" / "1_rectangle" / "00001.png").is_file()


def test_make_dataset_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown class"):
        make_dataset(tmp_path / "a", classes=["dragon"], progress=False)
    with pytest.raises(ValueError, match="counts"):
        make_dataset(tmp_path / "b", pairs_per_class=-1, progress=False)
    foreign = tmp_path / "foreign"
    (foreign / "pairs" / "7_bird").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="synthetic.json"):
        make_dataset(foreign, size=SIZE, classes=[0], workers=0, progress=False, **COUNTS)
    assert (foreign / "pairs" / "7_bird").is_dir()  # nothing of someone else's is deleted


def test_script_runs_end_to_end(tmp_path):
    out = tmp_path / "syn"
    cmd = [sys.executable, "scripts/make_synthetic.py", "--out", str(out), "--size", "16", "--classes", "ring",
           "cross", "--pairs", "2", "--pair-test", "1", "--unpaired", "1", "--domain-train", "1", "--domain-test", "1",
           "--workers", "1", "--quiet"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "12 images" in result.stdout and "written" in result.stdout
    assert _pngs(out / "pairs" / "4_cross") == ["00000.png", "00001.png"]
    assert Image.open(out / "domains" / "ring" / "test" / "00000.png").size == (16, 16)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "skipped" in again.stdout
