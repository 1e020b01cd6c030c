#!/usr/bin/env python
"""GP-UNIT and DeepI2I side by side on the built-in data: the same held-out inputs, the same target, the same
metrics (texture, shape, content, input sensitivity; FID and KID when pytorch-fid's Inception file is there).

    python scripts/demo.py && python scripts/demo.py --method deepi2i   # train both, each in its demo's budget
    python scripts/compare_methods.py                                    # the table (docs/comparison.md)

Each translator turns the first --inputs held-out images of --source into --target with --num-outputs sampled
styles (GP-UNIT: its style sampler; DeepI2I: noise vectors into the target class), scored by
gpunit/metrics/synthetic_classes.py and gpunit/metrics/sensitivity.py. Prints a markdown table and writes JSON.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gpunit.data.datasets import ImageFolderDataset
from gpunit.deepi2i.evaluate import sensitivity_outputs as deepi2i_sensitivity_outputs
from gpunit.engine.cli import run_main
from gpunit.engine.device import resolve_device
from gpunit.gp_unit.evaluate import sensitivity_outputs as gp_unit_sensitivity_outputs
from gpunit.metrics.common import optional_metric
from gpunit.metrics.kid import kernel_inception_distance
from gpunit.metrics.sensitivity import input_sensitivity
from gpunit.metrics.synthetic_classes import score_synthetic_classes
from gpunit.translators import load_translator

COLUMNS = (("texture_accuracy", "texture acc.", "{:.2f}"), ("shape_accuracy", "shape acc.", "{:.2f}"),
           ("silhouette_iou", "silhouette IoU", "{:.3f}"), ("centroid_px", "centroid px", "{:.2f}"),
           ("scale_rel", "scale err.", "{:.3f}"), ("angle_deg", "angle deg", "{:.1f}"),
           ("input_sensitivity", "input sens.", "{:.3f}"), ("style_sensitivity", "style sens.", "{:.3f}"),
           ("fid", "FID", "{:.1f}"), ("kid", "KID", "{:.4f}"), ("train_minutes", "last stage, train min", "{:.1f}"))


def translate(translator, x: torch.Tensor, target: str, num_outputs: int, seed: int) -> torch.Tensor:
    """``num_outputs`` translations of each image of ``x`` into ``target``, input-major."""
    if translator.method == "deepi2i":
        return translator.translate(x, target, num_styles=num_outputs, seed=seed)
    return translator.translate(x, num_styles=num_outputs, seed=seed)  # GP-UNIT: its one target domain


def sensitivity(translator, x: torch.Tensor, target: str, seed: int) -> dict:
    if translator.method == "deepi2i":
        return input_sensitivity(x, deepi2i_sensitivity_outputs(translator, x, translator.class_index(target), 4, seed))
    return input_sensitivity(x, gp_unit_sensitivity_outputs(translator, x, 4, seed))


def training_minutes(checkpoint: Path) -> float | None:
    """Minutes of training steps in the checkpoint's run folder (``metrics.jsonl``: time per step x steps): the
    translator's own stage (GP-UNIT's Stage II, DeepI2I), without the stages before it (Stage I, the BigGAN)."""
    log = Path(checkpoint).parent / "metrics.jsonl"
    if not log.is_file():
        return None
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [x for x in lines if "time/step" in x]
    seconds, last = 0.0, 0
    for x in steps:
        seconds += x["time/step"] * (x["step"] - last)
        last = x["step"]
    return seconds / 60


def score(translator, checkpoint: Path, data: Path, source: str, target: str, inputs: int, num_outputs: int,
          seed: int, inception) -> dict:
    contents = ImageFolderDataset([str(data / "domains" / source / "test")], translator.image_size)
    contents.paths = contents.paths[:inputs]
    batches = [contents.paths[i:i + 16] for i in range(0, len(contents.paths), 16)]
    outputs = []

    def translations():
        for k, paths in enumerate(batches):
            x = torch.stack([contents[contents.paths.index(p)]["x"] for p in paths]).to(translator.device)
            out = translate(translator, x, target, num_outputs, seed + k)
            outputs.append(out.cpu())
            yield [str(p) for p in paths], target, out

    names = translator.class_names if translator.method == "deepi2i" else None
    classes = names or sorted(p.name for p in (data / "domains").iterdir() if (p / "train").is_dir())
    result = score_synthetic_classes(translations(), data / "domains", classes, num_outputs, seed, translator.device)
    per_target = result["per_class"][target]
    row = {k: per_target[k] for k in per_target if k != "count"}
    x = torch.stack([contents[i]["x"] for i in range(min(16, len(contents)))]).to(translator.device)
    row.update(sensitivity(translator, x, target, seed))
    if inception is not None:
        real = ImageFolderDataset([str(data / "domains" / target / "train")], translator.image_size)
        real_feats = inception.features_of(torch.stack([real[i]["x"] for i in range(len(real))]))
        fake_feats = inception.features_of(torch.cat(outputs))
        from gpunit.metrics.fid import fid_from_features  # lazy: pytorch-fid is optional
        row["fid"] = fid_from_features(fake_feats, real_feats)
        row["kid"] = kernel_inception_distance(fake_feats, real_feats)[0]
    row["train_minutes"] = training_minutes(checkpoint)
    return {"method": translator.method, "checkpoint": str(checkpoint), **row}


def format_table(rows: list[dict]) -> str:
    shown = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = ["| method | " + " | ".join(title for _, title, _ in shown) + " |",
             "| --- | " + " | ".join("---" for _ in shown) + " |"]
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None and np.isfinite(r[k]) else "-" for k, _, fmt in shown]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    random = rows[0]
    lines.append(f"\nRandom pairing: centroid {random['random_centroid_px']:.2f} px, scale {random['random_scale_rel']:.3f}, "
                 f"angle {random['random_angle_deg']:.1f} deg; silhouette IoU {random['random_silhouette_iou']:.3f}.")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gp-unit", default="runs/stage2_ellipse2star/translator.pt", help="a GP-UNIT translator")
    p.add_argument("--deepi2i", default="runs/deepi2i_synthetic/deepi2i.pt", help="a DeepI2I translator")
    p.add_argument("--data", default="data/synthetic", help="the built-in synthetic data")
    p.add_argument("--source", default="ellipse")
    p.add_argument("--target", default="star")
    p.add_argument("--inputs", type=int, default=50, help="held-out source images")
    p.add_argument("--num-outputs", type=int, default=10, help="translations per input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (file or folder; FID/KID)")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="outputs/compare_methods.json")
    args = p.parse_args()
    device = resolve_device(args.device)
    from gpunit.metrics.fid import InceptionFeatures  # lazy: pytorch-fid is optional
    skipped = {}
    inception = optional_metric("fid_kid", lambda: InceptionFeatures(args.inception_weights, device), skipped)
    rows = []
    for path in (args.gp_unit, args.deepi2i):
        translator = load_translator(path, device=device)
        rows.append(score(translator, Path(path), Path(args.data), args.source, args.target, args.inputs,
                          args.num_outputs, args.seed, inception))
    table = format_table(rows)
    print(f"{args.inputs} held-out {args.source} images -> {args.target}, {args.num_outputs} outputs each\n")
    print(table)
    for metric, why in skipped.items():
        print(f"{metric}: skipped ({why})")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"rows": rows, "table": table, "skipped": skipped}, indent=1))
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
