#!/usr/bin/env python
"""Export a GP-UNIT or DeepI2I translator to ONNX or TorchScript, checked against eager PyTorch.

    python scripts/export.py --checkpoint runs/stage2_ellipse2star/translator.pt --format onnx \\
        --mode exemplar --output ellipse2star.onnx           # inputs: content, style
    python scripts/export.py --checkpoint cat2dog.pt --content-encoder content_encoder.pt \\
        --format onnx --mode latent --output cat2dog_latent.onnx   # inputs: content, z
    python scripts/export.py --checkpoint runs/deepi2i_synthetic/deepi2i.pt --format torchscript \\
        --output deepi2i.ts                                  # inputs: image, target_class, z
    python scripts/export.py ... --benchmark                 # also: exported vs eager images/s on this CPU

The graph's inputs and outputs are in docs/export.md. Every export is run at once in its runtime (ONNX
Runtime, or torch.jit.load) against eager PyTorch on seeded inputs (batch sizes 1 and 3, at the model's
size and a size it must resize); the largest difference is printed, and one above float32 rounding
fails the export. An existing --output is kept unless --overwrite, and replaced only by a graph that passed.
"""
import argparse
from pathlib import Path

from gpunit.engine.cli import run_main
from gpunit.export import FORMATS, MODES, benchmark_export, export_translator
from gpunit.translators import load_translator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="translator.pt, a published Stage II file, deepi2i.pt or a published DeepI2I folder")
    parser.add_argument("--content-encoder", help="the published content_encoder.pt (with a published --checkpoint)")
    parser.add_argument("--class-names", help="DeepI2I: a text file with one class name per line (for a published "
                        "weights folder)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--mode", choices=MODES, help="GP-UNIT: exemplar (content + style image) or latent "
                        "(content + noise through the style sampler); default exemplar. DeepI2I has one graph")
    parser.add_argument("--output", required=True, help="the file to write (.onnx, .pt); an existing one is kept "
                        "unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output (once the new graph "
                        "has passed its check)")
    parser.add_argument("--dynamo", action="store_true", help="ONNX through torch.export (torch's default exporter "
                        "since 2.9; the same graph, much slower to export) instead of the TorchScript-based one")
    parser.add_argument("--benchmark", action="store_true", help="then time the exported file against eager "
                        "PyTorch (images/s on the CPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of --benchmark")
    parser.add_argument("--seconds", type=float, default=5.0, help="--benchmark: seconds per measurement (the best "
                        "of 3 rounds, eager and exported in turn)")
    args = parser.parse_args()
    if Path(args.output).exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it (the new graph must pass its check first)")

    translator = load_translator(args.checkpoint, args.content_encoder, class_names=args.class_names)
    if translator.method == "deepi2i" and args.mode is not None:
        parser.error(f"{args.checkpoint} is a DeepI2I translator, which exports one graph: drop --mode")
    mode = args.mode or "exemplar"
    report = export_translator(translator, args.output, args.format, mode, dynamo=args.dynamo,
                               overwrite=args.overwrite)
    print(report.describe())
    if args.benchmark:
        speed = benchmark_export(translator, args.output, args.format, mode, args.batch_size, args.seconds)
        print(f"images/s at batch {speed['batch']} on {speed['threads']} CPU thread(s): eager PyTorch "
              f"{speed['eager']:.1f}, {args.format} {speed[args.format]:.1f} "
              f"({speed[args.format] / speed['eager']:.2f}x)")
    return 0


if __name__ == "__main__":
    run_main(main)
