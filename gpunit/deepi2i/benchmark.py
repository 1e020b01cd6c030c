"""Does transfer learning help DeepI2I? (paper Sec. 4, Fig. 2, Table 1, Suppl. C) on the built-in synthetic prior.

One BigGAN (``scripts/demo.py --method deepi2i`` trains it) is the pretrained prior. DeepI2I is then
trained at the same steps in each variant and data size, over several seeds:
- ``transfer``: E and D from the BigGAN's discriminator, G from its generator (the paper's DeepI2I);
- ``scratch``: the same networks from random init ("DeepI2I (scratch)", configs/deepi2i/synthetic_scratch.yaml);
- ``no_adaptor``: transfer without adaptors (identity at every fused width; the paper's dagger ablation);
each on a **small** set (``small_per_class`` images per class) and on the **large** one (all 300).
Every run is scored on held-out inputs (:mod:`gpunit.metrics.synthetic_classes`) and the table gives the
mean and spread over seeds. Runs are independent processes (``jobs`` at a time, one thread each), and a
finished run is reused when the benchmark is started again.

:func:`step_benchmark` is the speed side (issue 26): ms per BigGAN and DeepI2I step, their FLOPs and the fraction
of the device's peak (``scripts/benchmark.py --biggan ... --deepi2i ...``).
"""
from __future__ import annotations

import copy
import json
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gpunit.biggan.models import fused_resolutions
from gpunit.biggan.trainer import BigGANTrainer
from gpunit.biggan.weights import save_biggan
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.deepi2i.evaluate import score_on_synthetic_data
from gpunit.deepi2i.trainer import DeepI2ITrainer, run_deepi2i
from gpunit.deepi2i.translator import load_deepi2i_translator
from gpunit.engine import flops
from gpunit.engine.config import load_config

VARIANTS = ("transfer", "scratch", "no_adaptor")
SIZES = ("small", "large")
# figure key, column title, format; "random_*" keys give the baseline a content-blind model would get
COLUMNS = (("texture_accuracy", "texture acc.", "{:.2f}"), ("shape_accuracy", "shape acc.", "{:.2f}"),
           ("silhouette_iou", "silhouette IoU", "{:.3f}"), ("centroid_px", "centroid px", "{:.2f}"),
           ("angle_deg", "angle deg", "{:.1f}"))
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "deepi2i"


@dataclass(frozen=True)
class Job:
    variant: str
    size: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}_{self.size}_seed{self.seed}"


def job_overrides(job: Job, data_root: Path, biggan: Path, out_dir: Path, iterations: int, small_per_class: int,
                  image_size: int = 64) -> tuple[Path, list[str]]:
    """The config file and ``--set`` overrides of one run."""
    config = CONFIGS / ("synthetic_scratch.yaml" if job.variant == "scratch" else "synthetic.yaml")
    sets = [f"name={job.name}", f"out_dir={out_dir}", f"data.root={data_root}/domains", f"init.path={biggan}",
            f"train.seed={job.seed}", f"train.iterations={iterations}", "train.checkpoint_every=100000",
            "train.image_every=100000", "data.num_workers=0", "train.device=cpu",
            f"data.per_class={small_per_class if job.size == 'small' else 0}"]
    if job.variant == "no_adaptor":
        sets.append(f"model.no_adaptor={fused_resolutions(image_size)}".replace(" ", ""))
    return config, sets


def _run_job(job: Job, data_root: Path, biggan: Path, out_dir: Path, iterations: int, small_per_class: int,
             eval_inputs_per_class: int, num_outputs: int) -> dict:
    """Train (unless finished) and score one run in this process; returns its scores."""
    torch.set_num_threads(1)
    run_dir = out_dir / job.name
    scores_path = run_dir / "scores.json"
    if scores_path.is_file():
        return json.loads(scores_path.read_text())
    config, sets = job_overrides(job, data_root, biggan, out_dir, iterations, small_per_class)
    start = time.perf_counter()
    if not (run_dir / "deepi2i.pt").is_file():
        resume = "auto" if (run_dir / "checkpoints").is_dir() else None
        if not run_deepi2i(load_config(config, DeepI2IConfig, sets), resume=resume, progress=False):
            raise RuntimeError(f"{job.name} was interrupted; run the benchmark again to continue")
    minutes = (time.perf_counter() - start) / 60
    translator = load_deepi2i_translator(run_dir / "deepi2i.pt")
    scores = score_on_synthetic_data(translator, data_root / "domains", eval_inputs_per_class, num_outputs,
                                     seed=1000 + job.seed)
    scores.update(variant=job.variant, size=job.size, seed=job.seed, train_minutes=minutes)
    scores_path.write_text(json.dumps(scores, indent=1))
    return scores


def run_benchmark(data_root: str | os.PathLike, biggan: str | os.PathLike, out_dir: str | os.PathLike,
                  seeds=(0, 1, 2), variants=VARIANTS, sizes=SIZES, iterations: int = 400, small_per_class: int = 30,
                  eval_inputs_per_class: int = 4, num_outputs: int = 2, jobs: int = 2) -> dict:
    """Every (variant, size, seed) run; returns ``{"runs": [...], "table": str, "minutes": float}``."""
    data_root, biggan, out_dir = Path(data_root), Path(biggan), Path(out_dir)
    if not biggan.is_file():
        raise FileNotFoundError(f"BigGAN checkpoint {biggan} not found: run python scripts/demo.py --method deepi2i "
                                "(or scripts/train_biggan.py --config configs/biggan/synthetic.yaml) first")
    unknown = sorted(set(variants) - set(VARIANTS)) + sorted(set(sizes) - set(SIZES))
    if unknown:
        raise ValueError(f"unknown variants or sizes {unknown}; variants: {VARIANTS}, sizes: {SIZES}")
    start = time.perf_counter()
    todo = [Job(v, s, seed) for v in variants for s in sizes for seed in seeds]
    args = (data_root, biggan, out_dir, iterations, small_per_class, eval_inputs_per_class, num_outputs)
    if jobs <= 1:
        runs = [_run_job(job, *args) for job in todo]
    else:  # fresh processes: each run's threads, seeds and memory stay its own
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            runs = list(pool.map(_run_job, todo, *([a] * len(todo) for a in args)))
    minutes = (time.perf_counter() - start) / 60
    table = format_table(runs)
    (out_dir / "benchmark.json").write_text(json.dumps({"runs": runs, "minutes": minutes, "iterations": iterations,
                                                        "small_per_class": small_per_class}, indent=1))
    (out_dir / "benchmark.md").write_text(table + "\n")
    return {"runs": runs, "table": table, "minutes": minutes}


def summarise(runs: list[dict]) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(variant, size) -> key -> (mean, std) over seeds, for the table's keys and their random baselines."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["variant"], r["size"]), []).append(r)
    keys = [k for k, _, _ in COLUMNS] + ["random_centroid_px", "random_angle_deg"]
    return {g: {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))) for k in keys}
            for g, rs in groups.items()}


def format_table(runs: list[dict]) -> str:
    """A markdown table: one row per (variant, size), mean +- std over seeds."""
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"| variant | data | {' | '.join(title for _, title, _ in COLUMNS)} |",
             "|" + " --- |" * (2 + len(COLUMNS))]
    for (variant, size), figures in sorted(summarise(runs).items(), key=lambda kv: (SIZES.index(kv[0][1]),
                                                                                      VARIANTS.index(kv[0][0]))):
        cells = [f"{fmt.format(figures[k][0])} ± {fmt.format(figures[k][1])}" for k, _, fmt in COLUMNS]
        lines.append(f"| {variant} | {size} | {' | '.join(cells)} |")
    random = {k: np.mean([r[f"random_{k}"] for r in runs]) for k in ("centroid_px", "angle_deg")}
    lines.append(f"\nseeds {seeds}; random pairing: centroid {random['centroid_px']:.2f} px, "
                 f"angle {random['angle_deg']:.1f} deg; chance accuracy {runs[0]['chance']:.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- step speed and FLOPs (issue 26)
def step_benchmark(biggan_cfg, deepi2i_cfg=None, device: torch.device = torch.device("cpu"), steps: int = 5,
                   warmup: int = 2) -> list[dict]:
    """Median ms per step, FLOPs per step, achieved FLOP/s and the fraction of the device's peak of the BigGAN
    step (``biggan_cfg``) and of the DeepI2I step (``deepi2i_cfg``, transferring from that BigGAN with its initial
    weights: the time does not depend on them), on random images of the configs' classes and size."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        biggan_cfg = copy.deepcopy(biggan_cfg)
        size = biggan_cfg.model.image_size
        for c, name in enumerate(["ellipse", "star", "ring"]):
            _random_images(tmp / "domains" / name / "train", max(biggan_cfg.train.batch_size, 4), size, c)
        d = biggan_cfg.data
        d.root, d.class_subfolder, d.num_workers = str(tmp / "domains"), "train", 0
        torch.manual_seed(biggan_cfg.train.seed)
        trainers = {"biggan step (G+D+EMA, data)": BigGANTrainer(biggan_cfg, device)}
        g = trainers["biggan step (G+D+EMA, data)"]
        if deepi2i_cfg is not None:
            deepi2i_cfg = copy.deepcopy(deepi2i_cfg)
            path = save_biggan(tmp / "biggan.pt", g.generator, g.discriminator, copy.deepcopy(g.generator),
                               g.class_names)
            deepi2i_cfg.init.path, deepi2i_cfg.data.root = str(path), str(tmp / "domains")
            deepi2i_cfg.data.class_subfolder, deepi2i_cfg.data.num_workers = "train", 0
            torch.manual_seed(deepi2i_cfg.train.seed)
            trainers["deepi2i step (phase 2, data)"] = DeepI2ITrainer(deepi2i_cfg, device)
        for name, trainer in trainers.items():
            # phase 2 of DeepI2I (G trains too) is most of its schedule
            first = getattr(trainer, "phase1_steps", 0) + 1
            trainer.resolve_auto_settings(first)
            counted = flops.count_step(trainer, first)
            counter = iter(range(first, 1_000_000))
            row = _timed_row(name, lambda: trainer.train_step(next(counter)), steps, warmup, trainer.images_per_step,
                             device)
            row.update(precision=trainer.precision, channels_last=trainer.channels_last, flops_method=counted["method"],
                       flops_by_network=counted["by_network"])
            rows.append(flops.annotate(row, counted["total"], flops.peak(device, trainer.precision)["flops"]))
    return rows


def _random_images(folder: Path, count: int, size: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def _timed_row(name: str, fn, steps: int, warmup: int, images: int, device: torch.device) -> dict:
    """The row of gpunit.gp_unit.benchmark's table: median ms per call after ``warmup``, images/s, peak memory."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"measure": name, "ms_per_step": ms, "images_per_s": images / (ms / 1000), "peak_memory_mb": memory}
