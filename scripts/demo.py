#!/usr/bin/env python
"""The main job on the built-in data: synthetic prior -> Stage I -> Stage II -> translate -> evaluate.

    python scripts/demo.py

Re-running reuses every finished stage (and resumes an interrupted one). About 13 minutes on a
2-core CPU; see README.md for the figures it prints.
"""
import argparse

from gpunit.cli import run_main
from gpunit.demo import run_demo


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic", help="where the synthetic data goes")
    p.add_argument("--out-dir", default="runs", help="run folders (TensorBoard logs, checkpoints)")
    p.add_argument("--outputs", default="outputs/demo", help="translated images and the evaluation")
    p.add_argument("--source", default="ellipse", help="synthetic source domain")
    p.add_argument("--target", default="star", help="synthetic target domain")
    p.add_argument("--stage1-set", nargs="+", default=[], help="config overrides for Stage I (KEY=VALUE)")
    p.add_argument("--stage2-set", nargs="+", default=[], help="config overrides for Stage II (KEY=VALUE)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    run_demo(args.data, args.out_dir, args.outputs, args.source, args.target, args.stage1_set, args.stage2_set,
             progress=not args.no_progress, device=args.device)
    return 0


if __name__ == "__main__":
    run_main(main)
