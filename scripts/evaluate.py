#!/usr/bin/env python
"""Evaluate a translator, or a folder of any method's outputs, under one of two protocols.

--protocol standard (default): FID, KID (pytorch-fid's Inception), LPIPS diversity, mFID/mKID, and content
consistency and domain accuracy on the built-in synthetic data.

    python scripts/evaluate.py --checkpoint runs/stage2_synthetic/translator.pt \\
        --content data/synthetic/domains/ellipse/test --real data/synthetic/domains/star/test \\
        --synthetic-root data/synthetic --output runs/stage2_synthetic/eval.json

--protocol paper: FID and LPIPS diversity exactly as GP-UNIT's Table 1 (StarGAN v2's metric code); the real
set is the target domain's TRAINING folder. Score existing outputs (10 per input, <input>_<k>.png):

    python scripts/evaluate.py --protocol paper --real TRAIN_DIR --fake OUTPUT_DIR --output eval.json

or translate the test images into --fake first (--resize published by default):

    python scripts/evaluate.py --protocol paper --checkpoint dog2cat.pt --content-encoder content_encoder.pt \\
        --content data/afhq/images512x512/test/dog --real data/afhq/images512x512/train/cat \\
        --fake outputs/dog2cat --output dog2cat.json

On a DeepI2I checkpoint, the many-class protocol (DeepI2I Sec. 4): every test input into every class (or
--target-classes) with --num-outputs noise vectors; per-class FID/KID and their means mFID/mKID, RC and FC
(ResNet-50 + linear classifier), LPIPS diversity. --real: one folder per class, named as the class or inside
one (<root>/<class>/test):

    python scripts/evaluate.py --checkpoint runs/deepi2i_synthetic/deepi2i.pt \\
        --content data/synthetic/domains/*/test --real data/synthetic/domains/*/test --output eval.json

Weights are read from $TORCH_HOME/hub/checkpoints or --inception-weights / --lpips-weights: standard,
pt_inception-2015-12-05-6726825d.pth and alexnet-owt-7be5be79.pth (a metric is skipped without its file);
paper, inception_v3_google-0cc3c7bd.pth and alexnet-owt-7be5be79.pth (both required); DeepI2I's classifier
also resnet50-11ad3fa6.pth or resnet50-0676ba61.pth (--resnet-weights; without it, trained from scratch).
"""
import argparse
from pathlib import Path

from gpunit.data.images import RESIZE_POLICIES, scan_images
from gpunit.deepi2i.evaluate import evaluate_deepi2i, format_deepi2i_report, score_on_synthetic_data
from gpunit.deepi2i.translator import is_deepi2i_path
from gpunit.engine.cli import run_main
from gpunit.engine.device import resolve_device
from gpunit.gp_unit.evaluate import evaluate, format_report
from gpunit.gp_unit.evaluate_paper import evaluate_paper
from gpunit.metrics.class_accuracy import ClassifierSettings
from gpunit.metrics.common import save_results
from gpunit.metrics.paper_protocol import format_paper_report
from gpunit.translators import load_translator

MODES = {"latent": "latent", "exemplar": "exemplar", "reference": "exemplar"}  # "reference": the 0.1 name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=["standard", "paper"], default="standard",
                   help="standard: pytorch-fid FID/KID and more; paper: GP-UNIT Table 1 (StarGAN v2's FID and LPIPS)")
    p.add_argument("--checkpoint", help="translator.pt, a published Stage II file, deepi2i.pt or a published "
                                        "DeepI2I folder")
    p.add_argument("--content-encoder", help="the published content_encoder.pt (published Stage II files only)")
    p.add_argument("--content", nargs="+", help="folder(s) of source-domain test images")
    p.add_argument("--real", nargs="+", required=True, help="folder(s) of real target-domain images (standard: one "
                   "per class; paper: the target TRAINING images; DeepI2I: one per class, named as the class)")
    p.add_argument("--fake", help="paper: a folder of outputs to score (10 per input, named <input>_<k>.png), or "
                                  "where --checkpoint's translations are written (new or empty)")
    p.add_argument("--mode", choices=sorted(MODES), default="latent",
                   help="styles from the sampler (latent) or from random exemplar images of the target domain "
                        "(exemplar; 'reference' is its old name)")
    p.add_argument("--reference", nargs="+", help="exemplar image folder(s) (default: --real)")
    p.add_argument("--num-outputs", type=int, default=10,
                   help="translations per test image (paper: 10); DeepI2I: per test image and class")
    p.add_argument("--max-content", type=int, default=0, help="evaluate the first N test images only (0 = all)")
    p.add_argument("--resize", choices=RESIZE_POLICIES, help="how test and reference images become model inputs "
                   "(default: stretch for standard, published for paper: the authors' float bilinear resize)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--inception-weights", help="standard: pt_inception-2015-12-05-6726825d.pth; paper: "
                                               "inception_v3_google-0cc3c7bd.pth (file or folder)")
    p.add_argument("--lpips-weights", help="alexnet-owt-7be5be79.pth (file or folder)")
    p.add_argument("--synthetic-root", help="standard and DeepI2I: the built-in synthetic data root: adds content "
                                            "consistency, domain (texture) and shape accuracy")
    p.add_argument("--target-domain", help="synthetic target domain name (default: from --real)")
    deepi2i = p.add_argument_group("DeepI2I checkpoints (many-class protocol)")
    deepi2i.add_argument("--target-classes", nargs="+", metavar="NAME", help="classes to translate into and score "
                         "(names, or indices; default: every class of the checkpoint)")
    deepi2i.add_argument("--class-names", help="a text file with one class name per line (for a published weights "
                         "folder, which carries none)")
    deepi2i.add_argument("--classifier-train", nargs="+", help="one folder of real images per class for RC's "
                         "classifier to learn from (default: --real; other folders add its held-out accuracy)")
    deepi2i.add_argument("--resnet-weights", help="resnet50-11ad3fa6.pth or resnet50-0676ba61.pth (file or folder; "
                         "default: the torch hub cache, else the classifier trains from scratch, with a note)")
    deepi2i.add_argument("--classifier-size", type=int, default=224, help="the classifier's input size")
    deepi2i.add_argument("--classifier-epochs", type=int, default=20, help="training epochs of each classifier")
    deepi2i.add_argument("--classifier-cache", help="RC classifier cache file (default: beside its training "
                         "folders)")
    p.add_argument("--output", default="eval.json", help="where to write the results as JSON")
    p.add_argument("--run-dir", help="also log the figures to this run's TensorBoard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    args = p.parse_args()
    args.mode = MODES[args.mode]
    device = resolve_device(args.device)
    deepi2i = bool(args.checkpoint) and is_deepi2i_path(args.checkpoint)
    check_options(p, args, deepi2i)  # before any model is loaded
    translator = (load_translator(args.checkpoint, args.content_encoder, device=device, class_names=args.class_names)
                  if args.checkpoint else None)
    if deepi2i:
        classifier = ClassifierSettings(image_size=args.classifier_size, epochs=args.classifier_epochs,
                                        seed=args.seed, weights=args.resnet_weights, cache=args.classifier_cache)
        results = evaluate_deepi2i(translator, args.content, args.real, args.target_classes, args.num_outputs,
                                   args.seed, args.batch_size, args.classifier_train, classifier,
                                   args.inception_weights, args.lpips_weights, args.max_content,
                                   args.resize or "stretch", not args.no_progress)
        if args.synthetic_root:  # the built-in data: texture, shape and content of every class's translations
            results["synthetic"] = score_on_synthetic_data(translator, Path(args.synthetic_root) / "domains",
                                                           num_outputs=args.num_outputs, seed=args.seed)
        results = {"checkpoint": str(args.checkpoint), **results}
    elif args.protocol == "paper":
        results = evaluate_paper(args.real, args.fake, translator, args.content, args.mode,
                                 args.reference or args.real, args.num_outputs, args.seed, args.batch_size,
                                 args.resize or "published", args.max_content, args.inception_weights,
                                 args.lpips_weights, device, progress=not args.no_progress)
    else:
        results = evaluate(translator, args.content, args.real, args.mode, args.reference,
                           args.num_outputs, args.seed, args.batch_size, args.inception_weights, args.lpips_weights,
                           args.synthetic_root, args.target_domain, args.max_content, not args.no_progress,
                           resize=args.resize or "stretch")
    save_results(results, args.output, args.run_dir)
    report = {"paper": format_paper_report, "deepi2i": format_deepi2i_report}.get(results["protocol"], format_report)
    print(report(results))
    print(f"results: {args.output}")
    return 0


def check_options(p: argparse.ArgumentParser, args, deepi2i: bool) -> None:
    """Every combination of options that cannot work stops here, with one line, before any work."""
    if deepi2i:
        if args.protocol == "paper" or args.fake or args.mode != "latent" or args.reference:
            p.error("a DeepI2I checkpoint is scored by the many-class protocol: drop --protocol paper, --fake, "
                    "--mode and --reference")
        if args.target_domain:
            p.error("--target-domain is for GP-UNIT translators: a DeepI2I checkpoint is scored into every class")
        if not args.content:
            p.error("give --content: the test images to translate into every class")
    elif args.class_names or args.target_classes or args.classifier_train or args.resnet_weights:
        p.error("--target-classes, --class-names, --classifier-train and --resnet-weights are for DeepI2I checkpoints")
    elif args.protocol == "paper":
        if args.synthetic_root or args.target_domain:
            p.error("--synthetic-root/--target-domain are for --protocol standard")
        if not args.fake:
            p.error("--protocol paper needs --fake: the outputs to score, or where --checkpoint's go")
        if bool(args.checkpoint) != bool(args.content):
            p.error("give --checkpoint and --content together (or neither, to score the --fake folder as it is)")
    else:
        if not (args.checkpoint and args.content):
            p.error("--protocol standard needs --checkpoint and --content")
        if args.fake:
            p.error("--fake is for --protocol paper")
    for folder in args.real:  # a missing or empty folder would be scored as nothing
        try:
            scan_images(folder)
        except (FileNotFoundError, NotADirectoryError, ValueError) as err:
            p.error(f"--real: {err}")


if __name__ == "__main__":
    run_main(main)
