"""torchrun with 2 CPU processes (gloo): per-process batch B/2 follows the single-process run with
batch B, a distributed run resumes, and a global batch that does not divide fails clearly."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpunit.checkpoints import save_content_encoder
from gpunit.models import ContentEncoder

REPO = Path(__file__).resolve().parents[1]
# The gradient all-reduce sums in another order than one big batch: weights agree to ~1e-5 after
# 4 Adam steps of lr 1e-4. The bias of the first conv of each AdaIN residual block is followed by
# instance norm, so its true gradient is 0 and Adam turns float noise into steps of size ~lr; those
# biases are excluded.
TOLERANCE = dict(rtol=1e-4, atol=5e-5)
ZERO_GRADIENT = re.compile(r"(reslayer|postlayer)\.conv_0\.bias$")


@pytest.fixture(scope="module")
def setup(tiny_synthetic, tmp_path_factory):
    encoder = tmp_path_factory.mktemp("ec") / "content_encoder.pt"
    save_content_encoder(ContentEncoder(64, 8, 8, 16), encoder)
    root = tiny_synthetic
    sets = [f"content_encoder={encoder}", f"data.source=[{root}/domains/ellipse/train]",
            f"data.target=[{root}/domains/star/train]", "model.base_channels=8", "model.max_channels=16",
            "model.style_base_channels=8", "model.style_dim=16", "model.style_hidden=8",
            "model.disc_base_channels=8", "model.disc_max_channels=16", "data.num_workers=0",
            "train.batch_size=4", "sampler.max_epochs=2", "train.checkpoint_every=2", "train.log_every=1"]
    return sets


def launch(sets, out, steps, nproc, resume=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    cmd = [*runner, "scripts/train_stage2.py", "--no-progress", "--set", *sets, f"out_dir={out}",
           f"train.iterations={steps}"] + (["--resume"] if resume else [])
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(sorted((out / "stage2_synthetic" / "checkpoints").glob("*.pt"))[-1], weights_only=True)


def assert_same_networks(a, b):
    for net in ("generator", "generator_ema", "discriminator"):
        for key, value in a["trainer"][net].items():
            if ZERO_GRADIENT.search(key):
                continue
            torch.testing.assert_close(value, b["trainer"][net][key], **TOLERANCE, msg=f"{net}.{key}")


def test_two_processes_match_one_and_resume(setup, tmp_path):
    single = launch(setup, tmp_path / "single", 4, 1)
    double = launch(setup, tmp_path / "ddp", 4, 2)
    assert double["step"] == 4 and double["trainer"]["consumed"] == 16
    assert_same_networks(single, double)
    launch(setup, tmp_path / "resumed", 2, 2)
    resumed = launch(setup, tmp_path / "resumed", 4, 2, resume=True)
    assert_same_networks(single, resumed)


def test_indivisible_global_batch_is_explained(setup, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "scripts/train_stage2.py", "--no-progress", "--set", *setup, f"out_dir={tmp_path}",
           "train.batch_size=3", "train.iterations=1"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "does not divide by the 2 processes" in result.stderr


def test_gpu_jobs_get_nccl_for_tensors_and_gloo_for_cpu_agreements(monkeypatch):
    """On GPUs the gradients go over NCCL, but the per-step stop agreement is a CPU tensor, which
    NCCL cannot carry: the process group must have gloo for CPU tensors too."""
    from gpunit.train import distributed

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("device", device))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: calls.setdefault("backend", backend))
    assert distributed.init_from_env("auto") == torch.device("cuda", 1)
    assert calls == {"device": torch.device("cuda", 1), "backend": "cpu:gloo,cuda:nccl"}
    calls.clear()
    assert distributed.init_from_env("cpu") == torch.device("cpu")
    assert calls == {"backend": "gloo"}
