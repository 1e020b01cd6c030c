#!/usr/bin/env python
"""DeepI2I: train many-class translation y_hat = G(A(E(x)), z, c) by transfer from a BigGAN (or from scratch).

    python scripts/train_deepi2i.py --config configs/deepi2i/synthetic.yaml [--set train.iterations=100] [--resume]

Phase 1 trains the adaptors and the discriminator, phase 2 everything but the encoder. Writes
<out_dir>/<name>/: config.yaml, checkpoints/, TensorBoard logs, images/, and at the end deepi2i.pt
(for scripts/translate.py --checkpoint and gpunit.load_translator; class names inside).
"""
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.deepi2i.trainer import run_deepi2i
from gpunit.engine.cli import run_main, training_main

if __name__ == "__main__":
    run_main(lambda: training_main(__doc__, DeepI2IConfig, run_deepi2i, "configs/deepi2i/synthetic.yaml"))
