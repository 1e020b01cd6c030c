"""torchrun with 2 CPU processes (gloo) against one process, for Stage I and Stage II; resume; a
global batch that does not divide fails clearly.

Same results: from the same weights, 2 processes with batch B/2 compute the gradient of one process
with batch B (compared through Adam's first moment, which holds it), so one step lands on the same
weights. Over several steps that comparison is fragile: a parameter whose true gradient is 0 (a
conv bias followed by instance norm) moves by +-lr on the sign of float noise, and the GAN carries
such differences on. So gradients and weights are compared after one step from the same state,
and a resumed distributed run is compared with an uninterrupted one (the same arithmetic).
"""
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpunit.gp_unit.models import ContentEncoder, Discriminator, Generator, PriorAutoEncoder
from gpunit.gp_unit.weights import save_content_encoder
from gpunit.nn import ConvBlock

REPO = Path(__file__).resolve().parents[2]
LR, STAGE1_LR = 1e-4, 2e-4  # Stage II's and Stage I's defaults, set explicitly below
# Gradients: the all-reduce sums in another order than one big batch (rounding, ~1e-6 relative).
GRADIENT_ATOL, GRADIENT_RTOL = 1e-4, 1e-3  # atol relative to the tensor's largest gradient
# Stage II biases followed by instance norm: zero true gradient, so only rounding noise to compare.
ZERO_GRADIENT = re.compile(r"(reslayer|postlayer)\.conv_0\.bias$")


@pytest.fixture(scope="module")
def setup(tiny_synthetic, tmp_path_factory):
    encoder = tmp_path_factory.mktemp("ec") / "content_encoder.pt"
    torch.manual_seed(0)
    save_content_encoder(ContentEncoder(64, 8, 8, 16), encoder)
    root = tiny_synthetic
    sets = [f"content_encoder={encoder}", f"data.source=[{root}/domains/ellipse/train]",
            f"data.target=[{root}/domains/star/train]", "model.base_channels=8", "model.max_channels=16",
            "model.style_base_channels=8", "model.style_dim=16", "model.style_hidden=8",
            "model.disc_base_channels=8", "model.disc_max_channels=16", "data.num_workers=0",
            f"train.lr={LR}", "train.batch_size=4", "sampler.max_epochs=2", "train.checkpoint_every=2",
            "train.log_every=1"]
    return sets


def launch(sets, out, steps, nproc, resume=False, stage=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    cmd = [*runner, f"scripts/train_stage{stage}.py", "--no-progress", "--set", *sets, f"out_dir={out}",
           f"train.iterations={steps}"] + (["--resume"] if resume else [])
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return checkpoint(out, steps, stage)


def checkpoint(out, step, stage=2):
    return torch.load(out / f"stage{stage}_synthetic" / "checkpoints" / f"step-{step:07d}.pt", weights_only=True)


def trainable(module, skip=None) -> list[str | None]:
    """The names of ``module``'s trained parameters in optimiser order (None for those to skip)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    return [None if skip is not None and skip.search(n) else n for n in names]


def assert_same_gradients(a, b, optimizers: dict[str, list]):
    """Adam's first moments (the gradient itself with beta1 = 0, 0.1 * it after one step with 0.9)."""
    for opt, names in optimizers.items():
        state_a, state_b = a["trainer"]["optimizers"][opt]["state"], b["trainer"]["optimizers"][opt]["state"]
        assert len(state_a) == len(state_b) == len(names), opt
        for i, name in enumerate(names):
            if name is None:
                continue
            g_a, g_b = state_a[i]["exp_avg"], state_b[i]["exp_avg"]
            scale = max(float(g_a.abs().max()), float(g_b.abs().max()))
            torch.testing.assert_close(g_b, g_a, rtol=GRADIENT_RTOL, atol=GRADIENT_ATOL * scale, msg=f"{opt} {name}")


def assert_same_weights(a, b, nets, lr, max_step=1.0):
    """After one Adam step from the same state: an element moves by about lr on both sides, except
    where a rounding-level gradient sets the sign of its step: then the two sides can be up to
    ``max_step`` lr each, in opposite directions."""
    for net in nets:
        for key, value in a["trainer"][net].items():
            torch.testing.assert_close(b["trainer"][net][key], value, rtol=1e-5, atol=(2 * max_step + 0.5) * lr,
                                       msg=lambda m, k=f"{net}.{key}": f"{k}: {m}")


def assert_identical(a, b, nets):
    for net in nets:
        for key, value in a["trainer"][net].items():
            assert torch.equal(value, b["trainer"][net][key]), f"{net}.{key}"


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


STAGE2_NETS = ("generator", "generator_ema", "discriminator")


def stage2_optimizers():
    return {"generator": trainable(Generator(64, 8, 8, 16, 16, 8, 8), ZERO_GRADIENT),
            "discriminator": trainable(Discriminator(64, 8, 16))}


def test_stage2_two_processes_match_one_resume_and_change_count(setup, tmp_path):
    single = launch(setup, tmp_path / "single", 1, 1)
    double = launch(setup, tmp_path / "ddp", 1, 2)
    assert double["step"] == 1 and double["trainer"]["consumed"] == {"train": 4}
    assert_same_gradients(single, double, stage2_optimizers())
    assert_same_weights(single, double, STAGE2_NETS, LR)

    # a distributed run resumed from step 1 ends where an uninterrupted one does
    straight = launch(setup, tmp_path / "straight", 4, 2)
    resumed = launch(setup, copy_run(tmp_path / "ddp", tmp_path / "resumed"), 4, 2, resume=True)
    assert_identical(straight, resumed, STAGE2_NETS)

    # the step-1 checkpoint of 2 processes goes on in one: the same step 2 as in two
    one = launch(setup, copy_run(tmp_path / "ddp", tmp_path / "one"), 2, 1, resume=True)
    two = checkpoint(tmp_path / "resumed", 2)
    assert_same_gradients(one, two, stage2_optimizers())
    # A second Adam step with beta1 = 0 moves a noise-driven element by up to sqrt(1 + beta2) lr
    # (a noise gradient much larger than the first step's).
    assert_same_weights(one, two, STAGE2_NETS, LR, max_step=math.sqrt(1 + 0.99))


def normalised_conv_biases():
    """Stage I conv biases followed by instance norm (or AdaIN): zero true gradient."""
    names = [f"{name}.conv.bias" for name, m in PriorAutoEncoder(64, 8, 8, 16, num_domains=3).named_modules()
             if isinstance(m, ConvBlock) and m.norm is not None]
    assert names
    return re.compile("^(" + "|".join(re.escape(n) for n in names) + ")$")


def test_stage1_two_processes_match_one_and_resume(tiny_synthetic, tmp_path):
    """Stage I too: the flip of the style input is one coin per global batch and L_reg's norm runs
    over the global batch, as in one process. The content noise is drawn per process (the same
    distribution, other numbers), so it is off for the comparison with one process, and on for the
    resume, where every process must go on with its own random stream."""
    root = tiny_synthetic
    sets = [f"data.paired_root={root}/pairs", f"data.paired_mask_root={root}/pairs_mask",
            f"data.unpaired_root={root}/unpaired", f"data.unpaired_mask_root={root}/unpaired_mask",
            "data.test_root=null", "model.base_channels=8", "model.max_channels=16", "data.num_workers=0",
            f"train.lr={STAGE1_LR}", "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=1",
            "loss.lambda_reg=1"]  # a weight that makes a wrong norm visible
    quiet = sets + ["model.content_noise=0"]
    single = launch(quiet, tmp_path / "single", 1, 1, stage=1)
    double = launch(quiet, tmp_path / "ddp", 1, 2, stage=1)
    assert double["trainer"]["consumed"] == {"paired": 4, "unpaired": 4}
    model = PriorAutoEncoder(64, 8, 8, 16, num_domains=3)
    assert_same_gradients(single, double, {"model": trainable(model, normalised_conv_biases())})
    assert_same_weights(single, double, ("model",), STAGE1_LR)

    straight = launch(sets, tmp_path / "straight", 4, 2, stage=1)
    launch(sets, tmp_path / "resumed", 2, 2, stage=1)
    resumed = launch(sets, tmp_path / "resumed", 4, 2, resume=True, stage=1)
    assert_identical(straight, resumed, ("model",))


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
    from gpunit.engine import distributed

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
