#!/usr/bin/env python
"""Stage I, generative prior distillation: train the content encoder Ec.

    python scripts/train_stage1.py --config configs/gp_unit/stage1/synthetic.yaml [--set train.iterations=100] [--resume]

Writes <out_dir>/<name>/: config.yaml, checkpoints/, TensorBoard logs, images/, and at the end
content_encoder.pt (for Stage II), content_encoder_published.pt and prior_distillation_published.pt.
"""
from gpunit.engine.cli import run_main, training_main
from gpunit.gp_unit.config import Stage1Config
from gpunit.gp_unit.stage1 import run_stage1

if __name__ == "__main__":
    run_main(lambda: training_main(__doc__, Stage1Config, run_stage1, "configs/gp_unit/stage1/synthetic.yaml"))
