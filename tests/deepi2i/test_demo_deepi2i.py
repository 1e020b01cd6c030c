"""scripts/demo.py --method deepi2i end to end on tiny data and networks: BigGAN -> DeepI2I -> grid -> scores."""
import json

import numpy as np
import pytest
from conftest import TINY_SYNTHETIC
from helpers import run_script
from PIL import Image
from test_deepi2i_evaluate import run_evaluate

from gpunit.deepi2i.demo import run_deepi2i_demo

TINY_BIGGAN = ["model.g_ch=4", "model.d_ch=4", "model.dim_z=20", "model.shared_dim=8", "model.d_attention=[16]",
               "train.iterations=2", "train.batch_size=4", "train.ema_start=1", "data.num_workers=0"]
TINY_DEEPI2I = ["train.iterations=2", "train.phase1_steps=1", "train.batch_size=4", "data.num_workers=0"]


def run(root, tmp_path):
    return run_deepi2i_demo(root, tmp_path / "runs", tmp_path / "out", TINY_BIGGAN, TINY_DEEPI2I, progress=False,
                            device="cpu", dataset_options=TINY_SYNTHETIC)


def test_the_deepi2i_demo_translates_every_class_and_reuses_finished_stages(tiny_synthetic, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no user's weights
    first = run(tiny_synthetic, tmp_path)
    report = capsys.readouterr().out
    classes = TINY_SYNTHETIC["classes"]
    scores = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert scores == json.loads(json.dumps(first["results"]))  # what the demo returned
    assert sorted(scores["classes"]) == sorted(classes) and set(scores["per_class"]) == set(classes)
    # 4 held-out inputs per class, each into the 2 other classes, 2 noise vectors: 16 per target class
    assert all(s["count"] == 16 for s in scores["per_class"].values())
    assert scores["chance"] == pytest.approx(1 / 3)
    # the report prints the figures of eval.json
    for key, label in (("texture_accuracy", "Texture accuracy"), ("shape_accuracy", "Shape accuracy"),
                       ("silhouette_iou", "Silhouette IoU"), ("centroid_px", "Centroid error (px)")):
        assert f"  {label:<22} {scores[key]:.4g}" in report, key
    assert "wall time" in report
    # the grid's translations (an input of each class into every class): not their input, and another class
    # gives another image, however little 2 steps train
    for source in classes:
        (image,) = (tmp_path / "out" / "inputs").glob(f"{source}_*.png")
        x = np.asarray(Image.open(image).convert("RGB"), np.int16)
        outputs = {c: np.asarray(Image.open(tmp_path / "out" / "translations" / f"{image.stem}__{c}__s0.png"),
                                 np.int16) for c in classes}
        assert all(np.abs(y - x).mean() > 5 for y in outputs.values()), source  # 8-bit levels
        assert np.abs(outputs[classes[0]] - outputs[classes[1]]).max() > 2, source
    # the grid: one row per input of each class and noise vector; columns: the input, then each class
    grids = sorted((tmp_path / "out" / "translations" / "grids").glob("*.png"))
    assert len(grids) == 1
    width, height = Image.open(grids[0]).size
    assert width >= 64 * (1 + len(classes)) and height >= 64 * len(classes) * 2
    stamp = (tmp_path / "runs" / "deepi2i_synthetic" / "deepi2i.pt").stat().st_mtime_ns

    # a second start trains nothing (and scores the same translator: its figures are the first run's, not
    # computed a second time here)
    figures = {k: v for k, v in first["results"].items() if k != "prior"}
    monkeypatch.setattr("gpunit.deepi2i.demo.score_on_synthetic_data", lambda *a, **k: dict(figures))
    monkeypatch.setattr("gpunit.deepi2i.demo.prior_figures", lambda *a, **k: first["results"]["prior"])
    run(tiny_synthetic, tmp_path)
    again = capsys.readouterr().out
    assert again.count("reusing") == 2  # neither the BigGAN nor DeepI2I is trained again
    assert (tmp_path / "runs" / "deepi2i_synthetic" / "deepi2i.pt").stat().st_mtime_ns == stamp

    # scripts/evaluate.py on the demo's translator adds the same synthetic figures to the many-class protocol:
    # the demo's own (the tiny data has the 4 held-out inputs per class that both score)
    out = tmp_path / "eval.json"
    domains = [str(tiny_synthetic / "domains" / c / "test") for c in classes]
    done = run_evaluate("--checkpoint", tmp_path / "runs" / "deepi2i_synthetic" / "deepi2i.pt", "--content", *domains,
                        "--real", *domains, "--synthetic-root", tiny_synthetic, "--num-outputs", 2, "--max-content", 1,
                        "--classifier-size", 32, "--classifier-epochs", 1, "--device", "cpu", "--output", out)
    assert done.status == 0, done.err
    assert json.loads(out.read_text())["synthetic"] == json.loads(json.dumps(figures))
    assert "built-in synthetic data:" in done.out


def test_the_demo_script_offers_both_methods(monkeypatch):
    calls = {}
    monkeypatch.setattr("gpunit.deepi2i.demo.run_deepi2i_demo", lambda *a, **k: calls.setdefault("deepi2i", a))
    monkeypatch.setattr("gpunit.gp_unit.demo.run_demo", lambda *a, **k: calls.setdefault("gpunit", a))
    for method in ("deepi2i", "gpunit"):
        done = run_script("scripts/demo.py", "--method", method, "--data", "d")
        assert done.status == 0, done.err
    assert calls["deepi2i"][0] == "d" and calls["deepi2i"][2] == "outputs/demo_deepi2i"
    assert calls["gpunit"][2] == "outputs/demo"
