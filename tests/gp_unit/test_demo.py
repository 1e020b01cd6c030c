"""scripts/demo.py (GP-UNIT) end to end on tiny data and networks: Stage I -> Stage II -> translations -> report,
with finished stages reused, a longer run continued, and a run with other settings never overwritten."""
import json

import numpy as np
import pytest
from conftest import TINY_SYNTHETIC
from PIL import Image

from gpunit.gp_unit.demo import run_demo

TINY_STAGE1 = ["model.base_channels=8", "model.max_channels=16", "train.iterations=2", "train.batch_size=2",
               "train.checkpoint_every=2", "data.num_workers=0"]
TINY_STAGE2 = ["model.base_channels=8", "model.max_channels=16", "model.style_base_channels=8", "model.style_dim=16",
               "model.style_hidden=8", "model.disc_base_channels=8", "model.disc_max_channels=16",
               "train.iterations=2", "train.batch_size=2", "train.checkpoint_every=2", "sampler.max_epochs=2",
               "data.num_workers=0"]


def run(root, tmp_path, *stage2_extra):
    return run_demo(root, tmp_path / "runs", tmp_path / "out", overrides1=TINY_STAGE1,
                    overrides2=[*TINY_STAGE2, *stage2_extra], num_outputs=2, progress=False, device="cpu",
                    dataset_options=TINY_SYNTHETIC)


def test_the_demo_runs_reuses_continues_and_protects_finished_runs(tiny_synthetic, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no user's weights: FID and LPIPS skipped
    first = run(tiny_synthetic, tmp_path)
    report = capsys.readouterr().out
    scores = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert scores == json.loads(json.dumps(first["results"], default=float))  # what the demo returned
    assert set(scores["skipped"]) == {"fid_kid", "lpips_diversity"}
    # the report prints the figures of eval.json
    for key, label in (("domain_accuracy", "Domain accuracy"), ("content_centroid_px", "Centroid error (px)"),
                       ("shape_accuracy", "Shape accuracy"), ("silhouette_iou", "Silhouette IoU")):
        assert f"  {label:<22} {scores[key]:.4g}\n" in report, key
    assert "wall time" in report
    # what any pipeline gives on the tiny data, however little 2 steps train: 4 held-out inputs x 2 outputs,
    # shares of those 8, and the untranslated ellipses, which are no stars
    assert (scores["num_inputs"], scores["num_outputs"]) == (TINY_SYNTHETIC["domain_test"], 2)
    assert all(scores[k] * 8 == round(scores[k] * 8) for k in ("domain_accuracy", "content_object_found"))
    assert scores["source_shape_accuracy"] == 0.0
    # 4 sampled styles per input: files that are not their input, and differ from style to style
    assert len(list((tmp_path / "out" / "latent").glob("*__grid.png"))) == TINY_SYNTHETIC["domain_test"]
    content = sorted((tiny_synthetic / "domains" / "ellipse" / "test").glob("*.png"))[0]
    styles = [np.asarray(Image.open(tmp_path / "out" / "latent" / f"{content.stem}__s{k}.png"), np.int16)
              for k in range(4)]
    source = np.asarray(Image.open(content).convert("RGB"), np.int16)
    assert all(np.abs(y - source).mean() > 5 for y in styles)  # 8-bit levels: not a copy of the input
    assert all(np.abs(styles[0] - y).max() > 2 for y in styles[1:])  # another style, another image
    stage2 = tmp_path / "runs" / "stage2_ellipse2star"
    assert first["translator"] == stage2 / "translator.pt"
    stamp = first["translator"].stat().st_mtime_ns

    run(tiny_synthetic, tmp_path, "train.log_every=1")  # how a run logs is not what it trains
    assert capsys.readouterr().out.count("reusing") == 2
    assert first["translator"].stat().st_mtime_ns == stamp

    # a longer run continues the finished one from its last checkpoint
    run(tiny_synthetic, tmp_path, "train.iterations=4")
    assert "continuing" in capsys.readouterr().out
    assert first["translator"].stat().st_mtime_ns != stamp
    assert sorted(p.name for p in (stage2 / "checkpoints").glob("step-*.pt"))[-1] == "step-0000004.pt"

    # a longer run stopped half-way continues, not the translator of the shorter one
    (stage2 / "checkpoints" / "step-0000004.pt").unlink()
    run(tiny_synthetic, tmp_path, "train.iterations=4")
    assert "continuing" in capsys.readouterr().out
    assert (stage2 / "checkpoints" / "step-0000004.pt").is_file()

    # other settings: a clear refusal that names them, and the trained run is left as it was
    stamp = first["translator"].stat().st_mtime_ns
    with pytest.raises(SystemExit, match=r"(?s)other settings.*train.lr: 0.001 -> 0.0002.*--out-dir"):
        run(tiny_synthetic, tmp_path, "train.iterations=4", "train.lr=2e-4")
    assert first["translator"].stat().st_mtime_ns == stamp
