"""scripts/demo.py (GP-UNIT) end to end on tiny data and networks: Stage I -> Stage II -> translations -> report,
with finished stages reused, a longer run continued, and a run with other settings never overwritten."""
import json

import pytest
from conftest import TINY_SYNTHETIC

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


def test_the_demo_runs_reuses_continues_and_protects_finished_runs(tiny_synthetic, tmp_path, capsys):
    first = run(tiny_synthetic, tmp_path)
    report = capsys.readouterr().out
    for line in ("Domain accuracy", "Centroid error", "Shape accuracy", "Silhouette IoU", "wall time"):
        assert line in report
    scores = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert "shape_accuracy" in scores and "silhouette_iou" in scores
    assert len(list((tmp_path / "out" / "latent").glob("*__grid.png"))) == TINY_SYNTHETIC["domain_test"]
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
