"""FLOPs per step and the device's peak (gpunit/engine/flops.py): exact counts of known layers, R1's double
backward counted, and the benchmark's rows giving their fraction of the peak."""
from __future__ import annotations

import torch
import torch.nn as nn

from gpunit.engine import flops

CPU = torch.device("cpu")


def test_conv_and_linear_counts_are_exact():
    conv, linear = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 16 * 16, 5)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)

    def make():
        return (lambda: linear(conv(x).flatten(1)).sum().backward()), {"conv": conv, "linear": linear}

    counted = flops.count_modules(make)
    conv_fwd = 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 x N x C_out x H x W x C_in x k x k
    linear_fwd = 2 * 2 * (8 * 16 * 16) * 5
    assert counted["by_network"]["conv"] == {"forward": conv_fwd, "backward": 2 * conv_fwd}  # grad input + weight
    assert counted["by_network"]["linear"] == {"forward": linear_fwd, "backward": 2 * linear_fwd}
    assert counted["total"] == 3 * (conv_fwd + linear_fwd)


def test_double_backward_is_counted_per_network_forward():
    """R1 (torch.autograd.grad with create_graph) stops torch's module tracker: forward per network and the
    backward of all networks together, the same total as the sum of the passes."""
    d = nn.Conv2d(3, 1, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)

    def step():
        real = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
        grad.pow(2).sum().backward()

    counted = flops.count_modules(lambda: (step, {"discriminator": d}))
    fwd = 2 * 2 * 1 * 8 * 8 * 3 * 9
    assert counted["by_network"]["discriminator"] == {"forward": fwd, "backward": 0}
    assert counted["by_network"]["(all networks)"]["backward"] >= 2 * fwd  # grad of input, then its backward
    assert "autograd.grad" in counted["method"] and counted["total"] > 3 * fwd


def test_cpu_peak_derivation():
    zen4 = flops.cpu_flops_per_cycle({"avx2", "fma", "avx512f", "avx512_bf16"}, "AuthenticAMD", 25)
    assert zen4["fp32"][0] == 32 and zen4["bf16"][0] == 64
    xeon = flops.cpu_flops_per_cycle({"avx2", "fma", "avx512f", "amx_bf16", "amx_tile"}, "GenuineIntel", 6)
    assert xeon["fp32"][0] == 64 and xeon["bf16"][0] == 1024
    assert flops.cpu_flops_per_cycle({"avx2", "fma"}, "AuthenticAMD", 23)["bf16"][0] == 32
    assert flops.cpu_clock_ghz({"CPU max MHz": "3700.0000"}, {})[0] == 3.7
    assert abs(flops.cpu_clock_ghz({"BogoMIPS": "5192.28"}, {})[0] - 2.596) < 1e-3
    peak = flops.peak(CPU, "fp32")
    assert peak["flops"] > 0 and "cores" in peak["derivation"] and "FLOPs/cycle" in peak["derivation"]


def test_benchmark_row_gives_the_fraction_of_peak():
    from gpunit.gp_unit.benchmark import format_table

    row = flops.annotate({"measure": "stage2 step (G+D+EMA, data)", "ms_per_step": 100.0, "images_per_s": 80.0,
                          "peak_memory_mb": 1.0, "precision": "fp32", "channels_last": True}, 5 * 10**9, 100e9)
    assert row["gflop_per_s"] == 50.0 and row["peak_fraction"] == 0.5
    table = format_table([row])
    assert "of peak" in table.splitlines()[0] and "50.0%" in table and "fp32 + channels_last" in table


def test_biggan_and_deepi2i_step_rows_give_flops_and_the_fraction():
    from pathlib import Path

    from gpunit.biggan.config import BigGANConfig
    from gpunit.deepi2i.benchmark import step_benchmark
    from gpunit.deepi2i.config import DeepI2IConfig
    from gpunit.engine.config import load_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    tiny = ["model.g_ch=8", "model.d_ch=8", "model.dim_z=20", "model.shared_dim=8", "train.batch_size=2"]
    rows = step_benchmark(load_config(configs / "biggan/synthetic.yaml", BigGANConfig, tiny),
                          load_config(configs / "deepi2i/synthetic.yaml", DeepI2IConfig, ["train.batch_size=2"]),
                          CPU, steps=1, warmup=0)
    assert [r["measure"] for r in rows] == ["biggan step (G+D+EMA, data)", "deepi2i step (phase 2, data)"]
    for r in rows:
        assert r["gflop_per_step"] > 0 and 0 < r["peak_fraction"] < 1
        assert r["flops_by_network"]["discriminator"]["backward"] > 0
