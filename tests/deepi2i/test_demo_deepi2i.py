"""scripts/demo.py --method deepi2i end to end on tiny data and networks: BigGAN -> DeepI2I -> grid -> scores."""
import json
import sys

from conftest import TINY_SYNTHETIC
from PIL import Image
from test_deepi2i_evaluate import run_evaluate

from gpunit.deepi2i.demo import run_deepi2i_demo

TINY_BIGGAN = ["model.g_ch=4", "model.d_ch=4", "model.dim_z=20", "model.shared_dim=8", "model.d_attention=[16]",
               "train.iterations=2", "train.batch_size=4", "train.ema_start=1", "data.num_workers=0"]
TINY_DEEPI2I = ["train.iterations=2", "train.phase1_steps=1", "train.batch_size=4", "data.num_workers=0"]


def run(root, tmp_path):
    return run_deepi2i_demo(root, tmp_path / "runs", tmp_path / "out", TINY_BIGGAN, TINY_DEEPI2I, progress=False,
                            device="cpu", dataset_options=TINY_SYNTHETIC)


def test_the_deepi2i_demo_translates_every_class_and_reuses_finished_stages(tiny_synthetic, tmp_path, capsys):
    first = run(tiny_synthetic, tmp_path)
    report = capsys.readouterr().out
    classes = TINY_SYNTHETIC["classes"]
    scores = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert sorted(scores["classes"]) == sorted(classes) and set(scores["per_class"]) == set(classes)
    # 4 held-out inputs per class, each into the 2 other classes, 2 noise vectors: 16 per target class
    assert all(s["count"] == 16 for s in scores["per_class"].values())
    for key in ("texture_accuracy", "shape_accuracy", "silhouette_iou", "centroid_px", "random_centroid_px"):
        assert key in scores and key in json.dumps(first["results"])
    assert "Shape accuracy" in report and "wall time" in report
    # the grid: one row per input of each class and noise vector; columns: the input, then each class
    grids = sorted((tmp_path / "out" / "translations" / "grids").glob("*.png"))
    assert len(grids) == 1
    width, height = Image.open(grids[0]).size
    assert width >= 64 * (1 + len(classes)) and height >= 64 * len(classes) * 2
    stamp = (tmp_path / "runs" / "deepi2i_synthetic" / "deepi2i.pt").stat().st_mtime_ns

    run(tiny_synthetic, tmp_path)
    again = capsys.readouterr().out
    assert again.count("reusing") == 2  # neither the BigGAN nor DeepI2I is trained again
    assert (tmp_path / "runs" / "deepi2i_synthetic" / "deepi2i.pt").stat().st_mtime_ns == stamp

    # scripts/evaluate.py on the demo's translator adds the same synthetic figures to the many-class protocol
    out = tmp_path / "eval.json"
    domains = [str(tiny_synthetic / "domains" / c / "test") for c in classes]
    assert run_evaluate("--checkpoint", tmp_path / "runs" / "deepi2i_synthetic" / "deepi2i.pt", "--content", *domains,
                        "--real", *domains, "--synthetic-root", tiny_synthetic, "--num-outputs", 2, "--max-content", 3,
                        "--classifier-size", 32, "--classifier-epochs", 1, "--device", "cpu", "--output", out) == 0
    synthetic = json.loads(out.read_text())["synthetic"]
    assert synthetic["per_class"].keys() == scores["per_class"].keys() and "shape_accuracy" in synthetic
    assert "built-in synthetic data:" in capsys.readouterr().out


def test_the_demo_script_offers_both_methods(monkeypatch):
    import runpy
    calls = {}
    monkeypatch.setattr("gpunit.deepi2i.demo.run_deepi2i_demo", lambda *a, **k: calls.setdefault("deepi2i", a))
    monkeypatch.setattr("gpunit.gp_unit.demo.run_demo", lambda *a, **k: calls.setdefault("gpunit", a))
    for method in ("deepi2i", "gpunit"):
        monkeypatch.setattr(sys, "argv", ["demo.py", "--method", method, "--data", "d"])
        try:
            runpy.run_path("scripts/demo.py", run_name="__main__")
        except SystemExit as stop:
            assert stop.code in (0, None)
    assert calls["deepi2i"][0] == "d" and calls["deepi2i"][2] == "outputs/demo_deepi2i"
    assert calls["gpunit"][2] == "outputs/demo"
