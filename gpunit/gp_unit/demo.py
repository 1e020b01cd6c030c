"""The whole pipeline on the built-in synthetic data, as one command (``python scripts/demo.py``).

make the synthetic prior -> Stage I (content encoder) -> Stage II (ellipse -> star translator) ->
translate the held-out test images (latent- and exemplar-guided) -> evaluate -> a short report.
Every stage that already finished is reused; an interrupted training run is resumed.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from gpunit.data.synthetic import make_dataset
from gpunit.engine.cli import banner
from gpunit.engine.config import load_config
from gpunit.engine.device import resolve_device
from gpunit.engine.run import train_once
from gpunit.gp_unit.config import Stage1Config, Stage2Config
from gpunit.gp_unit.evaluate import evaluate, format_report
from gpunit.gp_unit.stage1 import run_stage1
from gpunit.gp_unit.stage2 import run_stage2
from gpunit.gp_unit.translator import load_gp_unit_translator
from gpunit.metrics.common import save_results
from gpunit.translate_folder import translate_folder

log = logging.getLogger("gpunit.demo")

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "gp_unit"


def run_demo(data_root="data/synthetic", out_dir="runs", outputs_dir="outputs/demo", source="ellipse",
             target="star", overrides1=(), overrides2=(), num_outputs=10, progress=True, device="auto",
             dataset_options: dict | None = None) -> dict:
    """``dataset_options``: :func:`gpunit.data.synthetic.make_dataset`'s sizes (default: the full data)."""
    start = time.perf_counter()
    data = Path(data_root)
    banner(f"1/5 synthetic prior data -> {data}")
    make_dataset(data, **{"progress": progress, **(dataset_options or {})})

    banner("2/5 Stage I: prior distillation (content encoder)")
    cfg1 = load_config(CONFIGS / "stage1" / "synthetic.yaml", Stage1Config, [
        f"out_dir={out_dir}", f"train.device={device}", f"data.paired_root={data}/pairs",
        f"data.paired_mask_root={data}/pairs_mask", f"data.unpaired_root={data}/unpaired",
        f"data.unpaired_mask_root={data}/unpaired_mask", f"data.test_root={data}/pairs_test", *overrides1])
    encoder = train_once(run_stage1, cfg1, Path(out_dir) / cfg1.name, "content_encoder.pt", progress)

    banner(f"3/5 Stage II: adversarial translation ({source} -> {target})")
    cfg2 = load_config(CONFIGS / "stage2" / "synthetic_shape.yaml", Stage2Config, [
        f"out_dir={out_dir}", f"train.device={device}", f"content_encoder={encoder}",
        f"data.source=[{data}/domains/{source}/train]", f"data.target=[{data}/domains/{target}/train]",
        f"name=stage2_{source}2{target}", *overrides2])
    run_dir = Path(out_dir) / cfg2.name
    checkpoint = train_once(run_stage2, cfg2, run_dir, "translator.pt", progress)

    banner("4/5 translating the held-out test images")
    translator = load_gp_unit_translator(checkpoint, device=resolve_device(device))
    content_dir, style_dir = data / "domains" / source / "test", data / "domains" / target / "test"
    out = Path(outputs_dir)
    latent = translate_folder(translator, content_dir, out / "latent", num_styles=4, seed=0, progress=progress)
    exemplar = translate_folder(translator, content_dir, out / "exemplar", style=style_dir,
                                style_pairing="random", seed=0, progress=progress)

    banner("5/5 evaluation")
    results = evaluate(translator, [str(content_dir)], [str(style_dir)], num_outputs=num_outputs,
                       synthetic_root=str(data), target_domain=target, progress=progress)
    save_results(results, out / "eval.json", run_dir=run_dir)
    minutes = (time.perf_counter() - start) / 60

    banner("report")
    print(format_report(results))
    print(f"\nimages:      {out / 'latent'} ({latent['translated'] + latent['skipped_existing']} files), "
          f"{out / 'exemplar'} ({exemplar['translated'] + exemplar['skipped_existing']} files); "
          f"*__grid.png are overview grids")
    print(f"training:    {Path(out_dir) / cfg1.name}/images, {run_dir}/images (PNG grids)")
    print(f"tensorboard: tensorboard --logdir {out_dir}")
    print(f"figures:     {out / 'eval.json'}")
    print(f"translator:  {checkpoint}")
    print(f"wall time:   {minutes:.1f} min")
    return {"results": results, "minutes": minutes, "translator": checkpoint}
