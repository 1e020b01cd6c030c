#!/usr/bin/env python
"""Time the training steps and translation for a config, batch size, device and precision.

    python scripts/benchmark.py --stage2 configs/gp_unit/stage2/synthetic.yaml --stage1 configs/gp_unit/stage1/synthetic.yaml
    python scripts/benchmark.py --stage2 configs/gp_unit/stage2/cat2dog.yaml --device cuda --set train.precision=bf16
    python scripts/benchmark.py --biggan configs/biggan/synthetic.yaml --deepi2i configs/deepi2i/synthetic.yaml

Prints a table (median ms per step after warm-up, images/s, peak memory) and writes JSON. Rows:
the data loader alone, the G step, the D step, a full step (G + D + EMA, with data), the published
step in plain fp32 (timed in turns with the full step; their ratio is printed) and exemplar-guided
translation; --biggan / --deepi2i add the BigGAN and DeepI2I steps. Each training step's row also gives its
FLOPs (torch's counter: convolutions and matrix products), achieved GFLOP/s and the fraction of the device's
peak in the step's precision, whose derivation is printed. If the loader's images/s is below the full step's, training waits for data: raise
data.num_workers. The config's Stage II image folders are read when they exist, else random images
at the config's size stand in; random weights stand in for missing VGG19 / IR-SE50 files.
--agreement-steps N first trains our step and the published one side by side from the same weights
and compares their mean loss terms: the speed-ups must not change the results.
"""
import argparse
import json
import platform

import torch

from gpunit.biggan.config import BigGANConfig
from gpunit.deepi2i.benchmark import step_benchmark
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.engine import flops, speed
from gpunit.engine.cli import run_main
from gpunit.engine.config import ConfigError, load_config
from gpunit.engine.device import resolve_device
from gpunit.engine.flops import format_flops
from gpunit.gp_unit.benchmark import (
    benchmark_stage1,
    benchmark_stage2,
    format_agreement,
    format_table,
    loss_agreement,
    speedup_over_published,
    stage2_trainers,
)
from gpunit.gp_unit.config import Stage1Config, Stage2Config


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage1", help="a Stage I config to time")
    p.add_argument("--stage2", help="a Stage II config to time (also times translation)")
    p.add_argument("--biggan", help="a BigGAN config to time (random images of its size)")
    p.add_argument("--deepi2i", help="a DeepI2I config to time (with --biggan: transferring from that BigGAN)")
    p.add_argument("--set", nargs="+", default=[], help="overrides for both configs (train.batch_size=16 ...)")
    p.add_argument("--set1", nargs="+", default=[], help="overrides for the Stage I config only")
    p.add_argument("--set2", nargs="+", default=[], help="overrides for the Stage II config only")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--translate-batch", type=int, help="batch size of the translation row (default: train.batch_size)")
    p.add_argument("--agreement-steps", type=int, default=0,
                   help="also train this many steps of our step and of the published fp32 step side by side from "
                        "the same weights and batches, and compare their loss terms")
    p.add_argument("--output", default="benchmark.json")
    args = p.parse_args()
    if not (args.stage1 or args.stage2 or args.biggan):
        p.error("give --stage1, --stage2 and/or --biggan [--deepi2i] config files")
    if args.deepi2i and not args.biggan:
        p.error("--deepi2i needs --biggan (the BigGAN it transfers from)")
    device = resolve_device(args.device)
    rows = []
    try:
        cfg2 = load_config(args.stage2, Stage2Config, args.set + args.set2) if args.stage2 else None
        cfg1 = load_config(args.stage1, Stage1Config, args.set + args.set1) if args.stage1 else None
        cfg_g = load_config(args.biggan, BigGANConfig, args.set) if args.biggan else None
        cfg_t = load_config(args.deepi2i, DeepI2IConfig, args.set) if args.deepi2i else None
    except ConfigError as err:
        p.error(str(err))
    if cfg1:
        rows += benchmark_stage1(cfg1, device, args.steps, args.warmup)
    agreement = None
    if cfg2:
        with stage2_trainers(cfg2, device) as (ours, reference):
            if args.agreement_steps > 0:  # on the fresh networks, before timing trains them
                agreement = loss_agreement(ours, reference, args.agreement_steps)
            rows += benchmark_stage2(ours, reference, args.steps, args.warmup, args.translate_batch)
    if cfg_g:
        rows += step_benchmark(cfg_g, cfg_t, device, args.steps, args.warmup)
    cfg = cfg2 or cfg1 or cfg_g
    if device.type == "cuda":
        machine = {"device": torch.cuda.get_device_name(device)}
    else:  # CPU figures depend on the instruction set: bf16 is emulated (slow) without AVX-512/AMX
        machine = {"device": platform.processor() or "cpu", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "native_bf16": speed.cpu_has_native("bf16"), "amx": torch.cpu._is_amx_tile_supported()}
    info = {**machine, "threads": torch.get_num_threads(), "batch_size": cfg.train.batch_size,
            "image_size": cfg.model.image_size,
            "precision": cfg.train.precision, "channels_last": cfg.train.channels_last, "compile": cfg.train.compile,
            "overrides": args.set + args.set1 + args.set2}
    peaks = {p: flops.peak(device, p) for p in sorted({r["precision"] for r in rows if "precision" in r})}
    info["peak_gflop_s"] = {p: v["flops"] and v["flops"] / 1e9 for p, v in peaks.items()}
    print(format_table(rows, " ".join(f"{k}={v}" for k, v in info.items())))
    for precision, value in peaks.items():  # FLOPs: convolutions and matrix products (torch's FLOP counter)
        print(f"peak {precision}: {value['derivation']}")
    for r in rows:
        if "flops_method" in r:
            counted = {"total": r["gflop_per_step"] * 1e9, "by_network": r["flops_by_network"]}
            print(f"{r['measure']}: {format_flops(counted)} [{r['flops_method']}]")
    speedup = speedup_over_published(rows)
    if speedup is not None:
        print(f"Stage II: {speedup:.2f}x the images/s of the published step in plain fp32 (timed in turns)")
    if agreement:
        print(format_agreement(agreement, args.agreement_steps))
    with open(args.output, "w") as f:
        json.dump({"settings": info, "rows": rows, "stage2_speedup_over_published": speedup,
                   "loss_agreement": agreement}, f, indent=2)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
