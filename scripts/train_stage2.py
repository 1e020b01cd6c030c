#!/usr/bin/env python
"""Stage II, adversarial image translation: train G, Es, D and the style sampler on a frozen Ec.

    python scripts/train_stage2.py --config configs/gp_unit/stage2/synthetic.yaml [--set train.iterations=100] [--resume]

Writes <out_dir>/<name>/: config.yaml, checkpoints/, TensorBoard logs, images/, and at the end
translator.pt (for scripts/translate.py and gpunit.load_translator) and translator_published.pt
(the authors' {"g_ema", "sampler"} format).
"""
from gpunit.engine.cli import run_main, training_main
from gpunit.gp_unit.config import Stage2Config
from gpunit.gp_unit.stage2 import run_stage2

if __name__ == "__main__":
    run_main(lambda: training_main(__doc__, Stage2Config, run_stage2, "configs/gp_unit/stage2/synthetic.yaml"))
