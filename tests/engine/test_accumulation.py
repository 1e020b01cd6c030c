"""Gradient accumulation in the engine (gpunit/engine/accumulate.py): k micro-batches of B/k give the update of one
batch of B, for Stage II and Stage I (DeepI2I: tests/deepi2i/test_deepi2i_train.py), and the helpers behind it.

Stated tolerance: every gradient within 1e-5 of the largest gradient of its network (plus 1e-4 relative);
float rounding alone separates them.
"""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from gpunit.biggan.models import SNConv2d
from gpunit.engine import accumulate
from gpunit.engine.config import load_config
from gpunit.gp_unit.config import Stage1Config, Stage2Config
from gpunit.gp_unit.models import ContentEncoder
from gpunit.gp_unit.stage1 import Stage1Trainer
from gpunit.gp_unit.stage2 import Stage2Trainer
from gpunit.gp_unit.weights import save_content_encoder

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def test_split_and_micro_batch_size():
    batch = {"x": torch.arange(8.).view(4, 2), "c": [torch.arange(4), torch.ones(4, 3)], "name": "shared"}
    a, b = accumulate.split(batch, 2)
    assert torch.equal(a["x"], batch["x"][:2]) and torch.equal(b["c"][1], batch["c"][1][2:]) and b["name"] == "shared"
    assert accumulate.split(batch, 1) == [batch]
    with pytest.raises(ValueError, match="into 3 equal micro-batches"):
        accumulate.split(batch, 3)
    assert accumulate.micro_batch_size(32, 8) == 4
    with pytest.raises(ValueError, match="train.accumulate=3"):
        accumulate.micro_batch_size(16, 3)


@pytest.mark.parametrize("kind", ["torch", "biggan"])
def test_spectral_norm_iterates_once_per_update(kind):
    """Two micro-batches under power_iteration_once, each calling the layer twice: the outputs, and the vectors
    afterwards, of one train-mode pass over the whole batch. Without it the second micro-batch would use
    vectors iterated further."""
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(3, 3, 3, padding=1)) if kind == "torch" else SNConv2d(3, 3)
    weight = conv.parametrizations.weight.original if kind == "torch" else conv.weight
    with torch.no_grad():  # close top singular values: the power iteration converges slowly, the vectors matter
        u, _, v = torch.linalg.svd(torch.randn(3, 27), full_matrices=False)
        weight.copy_(((u * torch.linspace(1.0, 0.9, 3)) @ v).view_as(weight))
    x = torch.randn(4, 3, 8, 8)
    reference, plain = copy.deepcopy(conv), copy.deepcopy(conv)
    twice = lambda layer, images: torch.cat([layer(images), layer(images.flip(-1))], 1)  # noqa: E731
    whole = twice(reference, x)
    with accumulate.power_iteration_once([conv]) as micro_batch_done:
        parts = []
        for part in x.chunk(2):
            parts.append(twice(conv, part))
            micro_batch_done()
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(conv.named_buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert conv.training and all(m.training for m in conv.modules())
    naive = torch.cat([twice(plain, part) for part in x.chunk(2)])
    assert not torch.allclose(naive, whole, rtol=1e-6, atol=1e-6)  # the test can tell the difference


def network_grads(module) -> dict:
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


def assert_same_update(a: dict, b: dict, what: str, tolerance: float = 1e-5) -> None:
    assert a.keys() == b.keys() and a, what
    scale = max(float(g.abs().max()) for g in a.values())
    worst = max(float((a[k] - b[k]).abs().max()) for k in a) / scale
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=tolerance * scale,
                                   msg=f"{what} {key}: worst {worst}")


# ----------------------------------------------------------------------------- Stage II
@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ec") / "content_encoder.pt"
    torch.manual_seed(0)
    save_content_encoder(ContentEncoder(64, 8, 8, 16), path)
    return path


def stage2(root, out, encoder, k: int) -> Stage2Trainer:
    sets = [f"content_encoder={encoder}", f"data.source=[{root}/domains/ellipse/train]",
            f"data.target=[{root}/domains/star/train]", f"out_dir={out}", "model.base_channels=8",
            "model.max_channels=16", "model.style_base_channels=8", "model.style_dim=16", "model.style_hidden=8",
            "model.disc_base_channels=8", "model.disc_max_channels=16", "data.num_workers=0", "train.batch_size=4",
            f"train.accumulate={k}"]
    torch.manual_seed(0)
    return Stage2Trainer(load_config(REPO / "configs/gp_unit/stage2/synthetic.yaml", Stage2Config, sets), CPU)


def test_stage2_accumulation_equals_one_batch(tiny_synthetic, tmp_path, encoder_file):
    """From the same state and batch, the G step and the D step with 2 micro-batches of 2 give the gradients,
    losses and spectral-norm vectors of one batch of 4 (R1 and every loss term are per-sample means)."""
    one, two = stage2(tiny_synthetic, tmp_path, encoder_file, 1), stage2(tiny_synthetic, tmp_path, encoder_file, 2)
    b = one.prepare_batch(1)
    state = copy.deepcopy(one.state_dict())
    out1, out2 = one.g_step(dict(b)), two.g_step(dict(b))
    assert_same_update(network_grads(one.generator), network_grads(two.generator), "G step")
    for tag, value in out1.items():
        torch.testing.assert_close(out2[tag], value, rtol=1e-5, atol=1e-6, msg=tag)
    for (name, u1), u2 in zip(one.discriminator.named_buffers(), two.discriminator.buffers()):
        torch.testing.assert_close(u2, u1, rtol=1e-5, atol=1e-6, msg=name)  # one power iteration per update
    for t in (one, two):  # the D step from the same state again (the G updates differ by rounding)
        t.load_state_dict(copy.deepcopy(state))
    out1, out2 = one.d_step(dict(b)), two.d_step(dict(b))
    assert_same_update(network_grads(one.discriminator), network_grads(two.discriminator), "D step")
    for tag, value in out1.items():
        torch.testing.assert_close(out2[tag], value, rtol=1e-4, atol=1e-6, msg=tag)


# ----------------------------------------------------------------------------- Stage I
def test_stage1_accumulation_equals_one_batch(tiny_synthetic, tmp_path):
    """The same for Stage I, whose L_reg norm runs over the whole batch (computed once, backpropagated with the
    last micro-batch), whose content noise is drawn for the whole batch and whose shape head runs twice per
    micro-batch (each call keeps its own spectral-norm sigma)."""
    root = tiny_synthetic
    trainers = []
    for k in (1, 2):
        sets = [f"data.paired_root={root}/pairs", f"data.paired_mask_root={root}/pairs_mask",
                f"data.unpaired_root={root}/unpaired", f"data.unpaired_mask_root={root}/unpaired_mask",
                "data.test_root=null", f"out_dir={tmp_path}", "model.base_channels=8", "model.max_channels=16",
                "data.num_workers=0", "train.batch_size=4", f"train.accumulate={k}", "loss.lambda_reg=1"]
        torch.manual_seed(0)
        trainers.append(Stage1Trainer(load_config(REPO / "configs/gp_unit/stage1/synthetic.yaml", Stage1Config, sets), CPU))
    outs = []
    for t in trainers:
        torch.manual_seed(5)  # the same content noise
        outs.append(t.train_step(1))
    assert_same_update(*(network_grads(t.model) for t in trainers), "Stage I")
    for tag, value in outs[0].items():
        torch.testing.assert_close(outs[1][tag], value, rtol=1e-3, atol=1e-5, msg=tag)
