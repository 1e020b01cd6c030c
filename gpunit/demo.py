"""The whole pipeline on the built-in synthetic data, as one command (``python scripts/demo.py``).

make the synthetic prior -> Stage I (content encoder) -> Stage II (ellipse -> star translator) ->
translate the held-out test images (latent- and exemplar-guided) -> evaluate -> a short report.
Every stage that already finished is reused; an interrupted training run is resumed.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from gpunit.config import Stage1Config, Stage2Config, config_to_dict, load_config
from gpunit.data.synthetic import make_dataset
from gpunit.evaluate import evaluate, format_report, save_results
from gpunit.train.common import CheckpointManager, resolve_device
from gpunit.train.stage1 import run_stage1
from gpunit.train.stage2 import run_stage2
from gpunit.translate import load_translator
from gpunit.translate_folder import translate_folder

log = logging.getLogger("gpunit.demo")


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


# where and how verbosely a run trains, not what it trains
RUN_ONLY_SETTINGS = {"out_dir", "train.device", "data.num_workers", "train.log_every", "train.image_every",
                     "train.keep_checkpoints"}


def _changed_settings(run_dir: Path, cfg) -> dict[str, tuple]:
    """{dotted key: (saved, current)} where the config saved in ``run_dir`` differs from ``cfg``."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return {}

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    saved, current = flat(yaml.safe_load(saved_file.read_text()) or {}), flat(config_to_dict(cfg))
    return {k: (saved.get(k), current.get(k)) for k in sorted(saved.keys() | current.keys())
            if saved.get(k) != current.get(k) and k not in RUN_ONLY_SETTINGS}


def train_once(run, cfg, run_dir: Path, product: str, progress: bool) -> Path:
    """Run a stage unless its product exists; resume a run that has checkpoints.

    A folder trained with other settings is never reused or overwritten; a longer
    ``train.iterations`` than it was trained for continues it from its last checkpoint.
    """
    trained = CheckpointManager(run_dir, 1).latest_step()
    changed = _changed_settings(run_dir, cfg) if trained is not None else {}
    if changed and set(changed) != {"train.iterations"}:
        lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise SystemExit(f"{run_dir} holds a run with other settings:\n{lines}\nDelete that folder to retrain "
                         "it, or pass another --out-dir (and --outputs) to keep both.")
    if (run_dir / product).is_file() and (trained is None or trained >= cfg.train.iterations):
        print(f"reusing {run_dir / product}" + (f" ({trained} steps)" if trained else ""))
        return run_dir / product
    resume = "auto" if trained is not None else None
    if (run_dir / product).is_file():
        print(f"continuing {run_dir} from step {trained} to {cfg.train.iterations}")
    elif resume:
        print(f"resuming the interrupted run in {run_dir} at step {trained}")
    outputs = run(cfg, resume=resume, progress=progress)
    if not outputs:
        raise SystemExit("interrupted; run the demo again to continue where it stopped")
    return run_dir / product


def run_demo(data_root="data/synthetic", out_dir="runs", outputs_dir="outputs/demo", source="ellipse",
             target="star", overrides1=(), overrides2=(), num_outputs=10, progress=True, device="auto",
             dataset_options: dict | None = None) -> dict:
    """``dataset_options``: :func:`gpunit.data.synthetic.make_dataset`'s sizes (default: the full data)."""
    start = time.perf_counter()
    data = Path(data_root)
    banner(f"1/5 synthetic prior data -> {data}")
    make_dataset(data, **{"progress": progress, **(dataset_options or {})})

    banner("2/5 Stage I: prior distillation (content encoder)")
    cfg1 = load_config("configs/stage1/synthetic.yaml", Stage1Config, [
        f"out_dir={out_dir}", f"train.device={device}", f"data.paired_root={data}/pairs",
        f"data.paired_mask_root={data}/pairs_mask", f"data.unpaired_root={data}/unpaired",
        f"data.unpaired_mask_root={data}/unpaired_mask", f"data.test_root={data}/pairs_test", *overrides1])
    encoder = train_once(run_stage1, cfg1, Path(out_dir) / cfg1.name, "content_encoder.pt", progress)

    banner(f"3/5 Stage II: adversarial translation ({source} -> {target})")
    cfg2 = load_config("configs/stage2/synthetic_shape.yaml", Stage2Config, [
        f"out_dir={out_dir}", f"train.device={device}", f"content_encoder={encoder}",
        f"data.source=[{data}/domains/{source}/train]", f"data.target=[{data}/domains/{target}/train]",
        f"name=stage2_{source}2{target}", *overrides2])
    run_dir = Path(out_dir) / cfg2.name
    checkpoint = train_once(run_stage2, cfg2, run_dir, "translator.pt", progress)

    banner("4/5 translating the held-out test images")
    translator = load_translator(str(checkpoint), device=resolve_device(device))
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
