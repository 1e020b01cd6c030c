#!/usr/bin/env python
"""Stage II, adversarial image translation: train G, Es, D and the style sampler on a frozen Ec.

    python scripts/train_stage2.py --config configs/stage2/synthetic.yaml [--set train.iterations=100] [--resume]

Writes <out_dir>/<name>/: config.yaml, checkpoints/, TensorBoard logs, images/, and at the end
translator.pt (for scripts/translate.py and gpunit.load_translator) and translator_published.pt
(the authors' {"g_ema", "sampler"} format).
"""
import argparse

from gpunit.cli import run_main
from gpunit.config import ConfigError, Stage2Config, add_config_arguments, config_from_args
from gpunit.train.stage2 import run_stage2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default_config="configs/stage2/synthetic.yaml")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    args = parser.parse_args()
    try:
        cfg = config_from_args(args, Stage2Config)
    except ConfigError as err:
        parser.error(str(err))
    outputs = run_stage2(cfg, resume=args.resume, progress=not args.no_progress)
    if not outputs:
        print("interrupted; resume with the same command and --resume")
        return 0
    for name, value in outputs.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    run_main(main)
