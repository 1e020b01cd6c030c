#!/usr/bin/env python
"""Translate an image or a folder of images with a trained GP-UNIT or DeepI2I translator.

    # exemplar-guided: every content image with every style image (or one random style each)
    python scripts/translate.py --checkpoint runs/cat2dog/translator.pt --input cats/ --style dogs/ --output out/
    # latent-guided: 4 styles from the style sampler
    python scripts/translate.py --checkpoint runs/cat2dog/translator.pt --input cats/ --num-styles 4 --output out/
    # the authors' published files
    python scripts/translate.py --checkpoint cat2dog.pt --content-encoder content_encoder.pt --input cats/ ...

    # DeepI2I (our deepi2i.pt, or a published weights folder with G.pth, E1.pth, A1.pth): many classes
    python scripts/translate.py --checkpoint deepi2i.pt --input dogs/ --output out/ --target-class pug samoyed
    python scripts/translate.py --checkpoint weights/DeepI2I_animals/ --class-names animals.txt --input dogs/ \\
        --output out/ --all-classes --num-styles 2

Outputs: <content stem>__<style stem>.png or <content stem>__s<k>.png in sub-folders mirroring the
input, plus <content stem>__grid.png overviews; DeepI2I: <content stem>__<class>__s<k>.png plus
grids/grid_<i>_<j>.png pages (one row per input, one column per class). Existing outputs are kept
unless --overwrite.
"""
import argparse
from pathlib import Path

from gpunit.data.images import RESIZE_POLICIES
from gpunit.engine.cli import run_main
from gpunit.engine.device import resolve_device
from gpunit.translate_folder import STYLE_PAIRINGS, describe_summary, translate_folder, translate_folder_classes
from gpunit.translators import load_translator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="translator.pt, a published Stage II file, deepi2i.pt or a published DeepI2I folder")
    parser.add_argument("--content-encoder", help="the published content_encoder.pt (with a published --checkpoint)")
    parser.add_argument("--input", required=True, help="an image or a folder (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--style", help="style image or folder (exemplar-guided); without it styles are sampled")
    parser.add_argument("--style-pairing", choices=STYLE_PAIRINGS, default="all",
                        help="all: each content image with each style; random: one style per content image")
    parser.add_argument("--num-styles", type=int, help="sampled styles per content image (latent-guided; default 1); "
                        "DeepI2I: noise vectors per input and class")
    targets = parser.add_mutually_exclusive_group()
    targets.add_argument("--target-class", nargs="+", metavar="NAME",
                         help="DeepI2I: target classes (names, or indices when the checkpoint has no names)")
    targets.add_argument("--all-classes", action="store_true", help="DeepI2I: translate to every class")
    parser.add_argument("--class-names", help="DeepI2I: a text file with one class name per line (for a published "
                        "weights folder, which carries none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled styles and the random pairing")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="bf16/fp16: autocast on GPUs, faster (default fp32)")
    parser.add_argument("--device", default="auto", help='"auto" (CUDA when present), "cpu", "cuda", "cuda:N"')
    parser.add_argument("--resize", choices=RESIZE_POLICIES, default="shortside_crop",
                        help="shortside_crop: resize the short side and centre-crop; stretch; pad (black borders); "
                             "published: as the authors' inference.py (float bilinear, align_corners=True, stretched)")
    parser.add_argument("--no-grid", action="store_true", help="no overview grid per content image")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    args = parser.parse_args()
    if args.style is not None and args.num_styles is not None:
        parser.error("--num-styles is for latent-guided translation; with --style every style image is used")
    if args.style is None and args.style_pairing != "all":
        parser.error("--style-pairing needs style images (--style)")
    if (args.target_class or args.all_classes) and (args.style is not None or args.content_encoder is not None):
        parser.error("--target-class/--all-classes are for DeepI2I checkpoints, --style/--content-encoder for GP-UNIT")
    if Path(args.output).exists() and not Path(args.output).is_dir():  # found before the model runs, not after
        parser.error(f"--output {args.output} is a file, not a folder: give a folder (it is created if missing)")

    translator = load_translator(args.checkpoint, args.content_encoder, device=resolve_device(args.device),
                                 precision=args.precision, class_names=args.class_names)
    if translator.method == "deepi2i":
        if not (args.target_class or args.all_classes):
            parser.error(f"{args.checkpoint} is a DeepI2I translator: give --target-class NAME... or --all-classes")
        summary = translate_folder_classes(translator, args.input, args.output,
                                           target_classes=None if args.all_classes else args.target_class,
                                           num_styles=args.num_styles or 1, seed=args.seed,
                                           batch_size=args.batch_size, resize=args.resize, grid=not args.no_grid,
                                           overwrite=args.overwrite, progress=not args.no_progress)
        print(describe_summary(summary))
        return 0
    if args.target_class or args.all_classes:
        parser.error(f"{args.checkpoint} is a GP-UNIT translator: --target-class/--all-classes are for DeepI2I")
    summary = translate_folder(translator, args.input, args.output, style=args.style,
                               style_pairing=args.style_pairing, num_styles=args.num_styles or 1, seed=args.seed,
                               batch_size=args.batch_size, resize=args.resize, grid=not args.no_grid,
                               overwrite=args.overwrite, progress=not args.no_progress)
    print(describe_summary(summary))
    return 0


if __name__ == "__main__":
    run_main(main)
