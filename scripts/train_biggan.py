#!/usr/bin/env python
"""Train a class-conditional BigGAN on labelled folders (one folder per class): what DeepI2I transfers from.

    python scripts/train_biggan.py --config configs/biggan/synthetic.yaml [--set train.iterations=100] [--resume]

Writes <out_dir>/<name>/: config.yaml, checkpoints/, TensorBoard logs, images/ (one row per class), and
at the end biggan.pt (G, its moving average, D, Adam states, class names), which
scripts/train_deepi2i.py starts from with --set init.source=gpunit_biggan init.path=.../biggan.pt.
"""
from gpunit.biggan.config import BigGANConfig
from gpunit.biggan.trainer import run_biggan
from gpunit.engine.cli import run_main, training_main

if __name__ == "__main__":
    run_main(lambda: training_main(__doc__, BigGANConfig, run_biggan, "configs/biggan/synthetic.yaml"))
