#!/usr/bin/env python
"""The main job on the built-in data.

    python scripts/demo.py                   # GP-UNIT: synthetic prior -> Stage I -> Stage II -> translate -> evaluate
    python scripts/demo.py --method deepi2i  # DeepI2I: synthetic prior -> BigGAN -> DeepI2I (transfer) -> grid -> evaluate

Re-running reuses every finished stage (and resumes an interrupted one). Each takes minutes on a
2-core CPU; docs/gp_unit.md and docs/deepi2i.md give the figures they print.
"""
import argparse

from gpunit.deepi2i.demo import run_deepi2i_demo
from gpunit.engine.cli import run_main
from gpunit.gp_unit.demo import run_demo


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["gpunit", "deepi2i"], default="gpunit")
    p.add_argument("--data", default="data/synthetic", help="where the synthetic data goes")
    p.add_argument("--out-dir", default="runs", help="run folders (TensorBoard logs, checkpoints)")
    p.add_argument("--outputs", help="translated images and the evaluation (default: outputs/demo, "
                                     "outputs/demo_deepi2i)")
    p.add_argument("--source", default="ellipse", help="GP-UNIT: synthetic source domain")
    p.add_argument("--target", default="star", help="GP-UNIT: synthetic target domain")
    p.add_argument("--stage1-set", nargs="+", default=[], help="GP-UNIT: config overrides for Stage I (KEY=VALUE)")
    p.add_argument("--stage2-set", nargs="+", default=[], help="GP-UNIT: config overrides for Stage II (KEY=VALUE)")
    p.add_argument("--biggan-set", nargs="+", default=[], help="DeepI2I: config overrides for the BigGAN (KEY=VALUE)")
    p.add_argument("--deepi2i-set", nargs="+", default=[], help="DeepI2I: config overrides for DeepI2I (KEY=VALUE)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    if args.method == "deepi2i":
        run_deepi2i_demo(args.data, args.out_dir, args.outputs or "outputs/demo_deepi2i", args.biggan_set,
                         args.deepi2i_set, progress=not args.no_progress, device=args.device)
    else:
        run_demo(args.data, args.out_dir, args.outputs or "outputs/demo", args.source, args.target, args.stage1_set,
                 args.stage2_set, progress=not args.no_progress, device=args.device)
    return 0


if __name__ == "__main__":
    run_main(main)
