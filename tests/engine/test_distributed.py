"""torchrun with 2 CPU processes (gloo) against one process, for Stage I and Stage II; resume; a
global batch that does not divide fails clearly.

Same results: from the same weights, 2 processes with batch B/2 compute the gradient of one process
with batch B (compared through Adam's first moment, which holds it), so one step lands on the same
weights. Over several steps that comparison is fragile: a parameter whose true gradient is 0 (a
conv bias followed by instance norm) moves by +-lr on the sign of float noise, and the GAN carries
such differences on. So gradients and weights are compared after one step from the same state,
and a resumed distributed run is compared with an uninterrupted one (the same arithmetic).

Real processes where the tests need them: one torchrun job of 2 (gloo) processes for the module, its runs one
after the other in the same processes (tests/engine/torchrun_scripts.py; a launch costs two interpreter starts
and a rendezvous, ~10 s on 2 cores); a one-process run trains in this process (tests/helpers.py).
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_script

from gpunit.engine import distributed
from gpunit.engine.config import load_config
from gpunit.gp_unit.config import Stage2Config
from gpunit.gp_unit.models import ContentEncoder, Discriminator, Generator, PriorAutoEncoder
from gpunit.gp_unit.stage2 import Stage2Trainer
from gpunit.gp_unit.weights import save_content_encoder
from gpunit.nn import ConvBlock

REPO = Path(__file__).resolve().parents[2]
LR, STAGE1_LR = 1e-4, 2e-4  # Stage II's and Stage I's defaults, set explicitly below
# Gradients: the all-reduce sums in another order than one big batch (rounding, ~1e-6 relative).
GRADIENT_ATOL, GRADIENT_RTOL = 1e-4, 1e-3  # atol relative to the tensor's largest gradient
# Stage II biases followed by instance norm: zero true gradient, so only rounding noise to compare.
ZERO_GRADIENT = re.compile(r"(reslayer|postlayer)\.conv_0\.bias$")
# float32 rounding of a weight after an update: a few units in the last place of the weight and of the step
WEIGHT_ROUNDING = 1e-6


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
            f"train.lr={LR}", "train.batch_size=4", "sampler.max_epochs=2",
            "train.log_every=1", "train.checkpoint_every=1", "train.keep_checkpoints=10"]
    return sets


def command(stage: int, sets: list[str], out: Path, steps: int, resume: str | Path | None = None) -> list[str]:
    """scripts/train_stage<stage>.py for ``steps`` steps into ``out`` (``resume``: the checkpoint it continues)."""
    return [f"scripts/train_stage{stage}.py", "--no-progress", "--set", *sets, f"out_dir={out}",
            f"train.iterations={steps}", *(["--resume", str(resume)] if resume else [])]


def launch(nproc: int, *commands: list[str]) -> None:
    """The commands as a user runs them: for one process in this one, for more all of them one after the other
    in one torchrun job of ``nproc`` processes."""
    if nproc == 1:
        for args in commands:
            done = run_script(*args)
            assert done.status == 0, done.err[-3000:]
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "tests/engine/torchrun_scripts.py", json.dumps([[str(a) for a in c] for c in commands])]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def stage1_sets(tiny_synthetic):
    root = tiny_synthetic
    return [f"data.paired_root={root}/pairs", f"data.paired_mask_root={root}/pairs_mask",
            f"data.unpaired_root={root}/unpaired", f"data.unpaired_mask_root={root}/unpaired_mask",
            "data.test_root=null", "model.base_channels=8", "model.max_channels=16", "data.num_workers=0",
            f"train.lr={STAGE1_LR}", "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=1",
            "loss.lambda_reg=1"]  # a weight that makes a wrong norm visible


QUIET = ["model.content_noise=0"]  # Stage I without its per-process content noise


@pytest.fixture(scope="module")
def two_processes(setup, stage1_sets, tmp_path_factory) -> Path:
    """Every 2-process run of this module, in one torchrun job: Stage II for 4 steps (a checkpoint at every step)
    and the same resumed from its step 1 (a new run folder, --resume PATH); Stage I's quiet step, its straight
    (noisy) run of 4 steps and that run resumed from its step 2."""
    out = tmp_path_factory.mktemp("two_processes")
    launch(2, command(2, setup, out / "stage2", 4),
           command(2, setup, out / "stage2_resumed", 4, checkpoint_file(out / "stage2", 1)),
           command(1, stage1_sets + QUIET, out / "stage1_quiet", 1),
           command(1, stage1_sets, out / "stage1", 4),
           command(1, stage1_sets, out / "stage1_resumed", 4, checkpoint_file(out / "stage1", 2, 1)))
    return out


def checkpoint_file(out, step, stage=2) -> Path:
    return out / f"stage{stage}_synthetic" / "checkpoints" / f"step-{step:07d}.pt"


def checkpoint(out, step, stage=2):
    return torch.load(checkpoint_file(out, step, stage), weights_only=True)


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


def assert_same_weights(a, b, nets: dict[str, tuple[str, list[str]]], max_step=1.0):
    """After one Adam step from the same weights: ``nets`` maps each network to (its optimiser, the names of its
    parameters in the optimiser's order); an EMA network maps to its network's optimiser.

    Adam moves an element by lr * u with u = m/(sqrt(v) + eps), |u| <= ``max_step`` (1 for a first step), m and
    v its bias-corrected moments. Where both sides' m (from the checkpoints) have one sign and agree closely, u
    is the same to first order: the weights differ by at most 2 max_step lr |m_a - m_b| / min |m| (plus eps's
    share and float rounding): rounding for a clear gradient. Only where m is rounding-level, its sign noise,
    can the two sides step apart, by at most 2 max_step lr. The spectral-norm vectors are the power iteration's
    on the same weights: equal to rounding.
    """
    tight = total = 0
    for net, (opt, names) in nets.items():
        optimizer_a, state_b = a["trainer"]["optimizers"][opt], b["trainer"]["optimizers"][opt]["state"]
        (group,) = optimizer_a["param_groups"]
        lr, beta1, eps = group["lr"], group["betas"][0], group["eps"]
        weights_a, weights_b = a["trainer"][net], b["trainer"][net]
        for i, name in enumerate(names):
            step = float(optimizer_a["state"][i]["step"])
            m_a, m_b = (s[i]["exp_avg"] / (1 - beta1 ** step) for s in (optimizer_a["state"], state_b))
            apart = 2 * max_step * lr
            agree = (m_a * m_b > 0) * apart * ((m_a - m_b).abs() + eps) / torch.minimum(m_a.abs(), m_b.abs())
            allowed = torch.where(m_a * m_b > 0, agree.clamp(max=apart), torch.full_like(m_a, apart))
            w_a, w_b = weights_a[name], weights_b[name]
            allowed = allowed + WEIGHT_ROUNDING * (w_a.abs() + lr)
            excess = (w_a - w_b).abs() - allowed
            assert excess.max() <= 0, (f"{net}.{name}: {int((excess > 0).sum())} of {w_a.numel()} elements apart "
                                       f"by more than their gradients allow (worst by {float(excess.max()):.3g})")
            tight += int((allowed < 1e-3 * apart).sum())
            total += w_a.numel()
        for key in weights_a.keys() - set(names):
            torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-5, atol=1e-6, msg=f"{net}.{key}")
    assert tight > 0.8 * total, f"only {tight} of {total} elements have a clear gradient"  # the check has teeth


def assert_identical(a, b, nets):
    for net in nets:
        for key, value in a["trainer"][net].items():
            assert torch.equal(value, b["trainer"][net][key]), f"{net}.{key}"


STAGE2_NETS = ("generator", "generator_ema", "discriminator")


def stage2_optimizers(skip=ZERO_GRADIENT):
    return {"generator": trainable(Generator(64, 8, 8, 16, 16, 8, 8), skip),
            "discriminator": trainable(Discriminator(64, 8, 16), skip)}


def stage2_weights():
    names = stage2_optimizers(skip=None)
    return {"generator": ("generator", names["generator"]), "generator_ema": ("generator", names["generator"]),
            "discriminator": ("discriminator", names["discriminator"])}


def test_stage2_two_processes_match_one_resume_and_change_count(setup, two_processes, tmp_path):
    """4 steps in 2 processes against one process; resumed from step 1 in 2 processes, and in one."""
    ddp = two_processes / "stage2"
    first = checkpoint(ddp, 1)
    assert first["step"] == 1 and first["trainer"]["consumed"] == {"train": 4}
    launch(1, command(2, setup, tmp_path / "single", 1))
    single = checkpoint(tmp_path / "single", 1)
    assert_same_gradients(single, first, stage2_optimizers())
    assert_same_weights(single, first, stage2_weights())

    # a distributed run resumed from step 1 ends where the uninterrupted one does
    assert_identical(checkpoint(ddp, 4), checkpoint(two_processes / "stage2_resumed", 4), STAGE2_NETS)

    # the step-1 checkpoint of 2 processes goes on in one: the same step 2 as in two
    launch(1, command(2, setup, tmp_path / "one", 2, checkpoint_file(ddp, 1)))
    one, two = checkpoint(tmp_path / "one", 2), checkpoint(ddp, 2)
    assert_same_gradients(one, two, stage2_optimizers())
    # A second Adam step with beta1 = 0 moves an element by up to sqrt(1 + beta2) lr (a gradient much larger
    # than the first step's).
    assert_same_weights(one, two, stage2_weights(), max_step=math.sqrt(1 + 0.99))


def normalised_conv_biases():
    """Stage I conv biases followed by instance norm (or AdaIN): zero true gradient."""
    names = [f"{name}.conv.bias" for name, m in PriorAutoEncoder(64, 8, 8, 16, num_domains=3).named_modules()
             if isinstance(m, ConvBlock) and m.norm is not None]
    assert names
    return re.compile("^(" + "|".join(re.escape(n) for n in names) + ")$")


def test_stage1_two_processes_match_one_and_resume(stage1_sets, two_processes, tmp_path):
    """Stage I too: the flip of the style input is one coin per global batch and L_reg's norm runs
    over the global batch, as in one process. The content noise is drawn per process (the same
    distribution, other numbers), so it is off for the comparison with one process, and on for the
    resume, where every process must go on with its own random stream."""
    launch(1, command(1, stage1_sets + QUIET, tmp_path / "single", 1))
    single, double = checkpoint(tmp_path / "single", 1, 1), checkpoint(two_processes / "stage1_quiet", 1, 1)
    assert double["trainer"]["consumed"] == {"paired": 4, "unpaired": 4}
    model = PriorAutoEncoder(64, 8, 8, 16, num_domains=3)
    assert_same_gradients(single, double, {"model": trainable(model, normalised_conv_biases())})
    assert_same_weights(single, double, {"model": ("model", trainable(model))})

    assert_identical(checkpoint(two_processes / "stage1", 4, 1), checkpoint(two_processes / "stage1_resumed", 4, 1),
                     ("model",))


def test_indivisible_global_batch_is_explained(setup, tmp_path, monkeypatch):
    """A global batch of 3 on 2 processes stops before any work with a message naming both (here the trainer
    is built as rank 0 of 2, which is what each torchrun process does)."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    cfg = load_config(REPO / "configs/gp_unit/stage2/synthetic.yaml", Stage2Config,
                      [*setup, f"out_dir={tmp_path}", "train.batch_size=3"])
    with pytest.raises(ValueError, match=r"train.batch_size=3 .*does not divide by the 2 processes"):
        Stage2Trainer(cfg, torch.device("cpu"))


def test_gpu_jobs_get_nccl_for_tensors_and_gloo_for_cpu_agreements(monkeypatch):
    """On GPUs the gradients go over NCCL, but the per-step stop agreement is a CPU tensor, which
    NCCL cannot carry: the process group must have gloo for CPU tensors too."""
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
