#!/usr/bin/env python
"""Stage I, generative prior distillation: train the content encoder Ec.

    python scripts/train_stage1.py --config configs/stage1/synthetic.yaml [--set train.iterations=100] [--resume]

Writes <out_dir>/<name>/: config.yaml, checkpoints/, TensorBoard logs, images/, and at the end
content_encoder.pt (for Stage II), content_encoder_published.pt and prior_distillation_published.pt.
"""
import argparse

from gpunit.cli import run_main
from gpunit.config import ConfigError, Stage1Config, add_config_arguments, config_from_args
from gpunit.train.stage1 import run_stage1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default_config="configs/stage1/synthetic.yaml")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    args = parser.parse_args()
    try:
        cfg = config_from_args(args, Stage1Config)
    except ConfigError as err:
        parser.error(str(err))
    outputs = run_stage1(cfg, resume=args.resume, progress=not args.no_progress)
    if not outputs:
        print("interrupted; resume with the same command and --resume")
        return 0
    for name, value in outputs.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    run_main(main)
