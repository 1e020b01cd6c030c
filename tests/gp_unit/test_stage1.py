"""Stage I prior distillation: one step, gradients, exact resume, the script end to end."""
from pathlib import Path

import pytest
import torch
from helpers import run_script

from gpunit.engine.config import load_config
from gpunit.engine.loop import train_loop
from gpunit.engine.run import prepare_run_dir
from gpunit.gp_unit.config import Stage1Config
from gpunit.gp_unit.stage1 import Stage1Trainer
from gpunit.metrics.prior import pair_feature_ratio

REPO = Path(__file__).resolve().parents[2]


def tiny_config(root, out, **extra) -> Stage1Config:
    sets = [f"data.paired_root={root}/pairs", f"data.paired_mask_root={root}/pairs_mask",
            f"data.unpaired_root={root}/unpaired", f"data.unpaired_mask_root={root}/unpaired_mask",
            f"data.test_root={root}/pairs_test", f"out_dir={out}", "model.base_channels=8",
            "model.max_channels=16", "data.num_workers=0", "train.batch_size=2", "train.log_every=1",
            "train.image_every=100", "train.checkpoint_every=2"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(REPO / "configs/gp_unit/stage1/synthetic.yaml", Stage1Config, sets)


def test_one_step_trains_every_parameter(tiny_synthetic, tmp_path):
    trainer = Stage1Trainer(tiny_config(tiny_synthetic, tmp_path), torch.device("cpu"))
    assert trainer.model.C.fc3.out_features == 3  # num_domains inferred from the class folders
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    losses = trainer.train_step(1)
    expected = {"loss/arec/l2", "loss/arec/perceptual", "loss/srec", "loss/dis/content", "loss/dis/shape",
                "loss/reg/cls", "loss/reg/norm", "loss/total"}
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert not torch.equal(before[name], p.detach()), name
    grids = trainer.sample_images(1)
    assert grids["images/stage1"].shape[0] == 3


def run(cfg, resume=None):
    run_dir = prepare_run_dir(cfg.out_dir, cfg.name, {}, resume=resume is not None)
    trainer = Stage1Trainer(cfg, torch.device("cpu"))
    t = cfg.train
    train_loop(trainer, run_dir=run_dir, total_steps=t.iterations, log_every=1, image_every=100,
               checkpoint_every=t.checkpoint_every, keep_checkpoints=2, resume=resume, progress=False)
    return trainer


def test_resume_is_exact(tiny_synthetic, tmp_path):
    torch.manual_seed(0)
    straight = run(tiny_config(tiny_synthetic, tmp_path / "a", **{"train.iterations": 4}))
    torch.manual_seed(0)
    run(tiny_config(tiny_synthetic, tmp_path / "b", **{"train.iterations": 2}))
    torch.manual_seed(123)  # a resumed run restores every RNG from the checkpoint
    resumed = run(tiny_config(tiny_synthetic, tmp_path / "b", **{"train.iterations": 4}), resume="auto")
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_pair_ratio_and_script(tiny_synthetic, tmp_path):
    args = ["scripts/train_stage1.py", "--no-progress", "--set", *tiny_config_sets(tiny_synthetic, tmp_path)]
    done = run_script(*args)
    assert done.status == 0, done.err[-2000:]
    run_dir = tmp_path / "stage1_synthetic"
    for name in ("content_encoder.pt", "content_encoder_published.pt", "prior_distillation_published.pt",
                 "config.yaml", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    # the figure it prints is the exported encoder's, measured again here
    from gpunit.gp_unit.weights import load_content_encoder
    encoder = load_content_encoder(run_dir / "content_encoder.pt").eval()
    stats = pair_feature_ratio(encoder, tiny_synthetic / "pairs_test")
    assert stats["classes"] == 3 and stats["latents"] == 4
    assert f"pair_ratio: {stats}" in done.out, done.out
    # a second run without --resume refuses to overwrite the run
    again = run_script(*args)
    assert again.status == 2 and "error: " in again.err and "--resume" in again.err


def tiny_config_sets(root, out):
    return [f"data.paired_root={root}/pairs", f"data.paired_mask_root={root}/pairs_mask",
            f"data.unpaired_root={root}/unpaired", f"data.unpaired_mask_root={root}/unpaired_mask",
            f"data.test_root={root}/pairs_test", f"out_dir={out}", "model.base_channels=8",
            "model.max_channels=16", "data.num_workers=0", "train.batch_size=2", "train.iterations=2",
            "train.checkpoint_every=2"]


def test_bad_data_fails_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = load_config(None, Stage1Config, [f"data.paired_root={empty}", f"data.paired_mask_root={empty}",
                                           "data.unpaired_root=null"])
    with pytest.raises(ValueError, match=r"no class folders in .*empty; expected sub-folders named <label>_<name>"):
        Stage1Trainer(cfg, torch.device("cpu"))
