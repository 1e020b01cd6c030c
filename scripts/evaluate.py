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

Weights are read from $TORCH_HOME/hub/checkpoints or --inception-weights / --lpips-weights: standard,
pt_inception-2015-12-05-6726825d.pth and alexnet-owt-7be5be79.pth (a metric is skipped without its file);
paper, inception_v3_google-0cc3c7bd.pth and alexnet-owt-7be5be79.pth (both required).
"""
import argparse

from gpunit.cli import run_main
from gpunit.data.images import RESIZE_POLICIES
from gpunit.evaluate import evaluate, format_report, save_results
from gpunit.train.common import resolve_device


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=["standard", "paper"], default="standard",
                   help="standard: pytorch-fid FID/KID and more; paper: GP-UNIT Table 1 (StarGAN v2's FID and LPIPS)")
    p.add_argument("--checkpoint", help="translator.pt, or a published Stage II file")
    p.add_argument("--content-encoder", help="the published content_encoder.pt (published Stage II files only)")
    p.add_argument("--content", nargs="+", help="folder(s) of source-domain test images")
    p.add_argument("--real", nargs="+", required=True, help="folder(s) of real target-domain images (standard: one "
                                                            "per class; paper: the target TRAINING images)")
    p.add_argument("--fake", help="paper: a folder of outputs to score (10 per input, named <input>_<k>.png), or "
                                  "where --checkpoint's translations are written (new or empty)")
    p.add_argument("--mode", choices=["latent", "reference"], default="latent",
                   help="styles from the sampler (latent) or from random reference images (reference)")
    p.add_argument("--reference", nargs="+", help="reference image folder(s) (default: --real)")
    p.add_argument("--num-outputs", type=int, default=10, help="translations per test image (paper: 10)")
    p.add_argument("--max-content", type=int, default=0, help="evaluate the first N test images only (0 = all)")
    p.add_argument("--resize", choices=RESIZE_POLICIES, help="how test and reference images become model inputs "
                   "(default: stretch for standard, published for paper: the authors' float bilinear resize)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--inception-weights", help="standard: pt_inception-2015-12-05-6726825d.pth; paper: "
                                               "inception_v3_google-0cc3c7bd.pth (file or folder)")
    p.add_argument("--lpips-weights", help="alexnet-owt-7be5be79.pth (file or folder)")
    p.add_argument("--synthetic-root", help="standard: the built-in synthetic data root: adds content consistency "
                                            "and domain accuracy")
    p.add_argument("--target-domain", help="synthetic target domain name (default: from --real)")
    p.add_argument("--output", default="eval.json", help="where to write the results as JSON")
    p.add_argument("--run-dir", help="also log the figures to this run's TensorBoard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    args = p.parse_args()
    device = resolve_device(args.device)

    if args.protocol == "paper":
        if args.synthetic_root or args.target_domain:
            p.error("--synthetic-root/--target-domain are for --protocol standard")
        if not args.fake:
            p.error("--protocol paper needs --fake: the outputs to score, or where --checkpoint's go")
        if bool(args.checkpoint) != bool(args.content):
            p.error("give --checkpoint and --content together (or neither, to score the --fake folder as it is)")
        from gpunit.evaluate_paper import evaluate_paper
        translator = _translator(args, device) if args.checkpoint else None
        results = evaluate_paper(args.real, args.fake, translator, args.content, args.mode,
                                 args.reference or args.real, args.num_outputs, args.seed, args.batch_size,
                                 args.resize or "published", args.max_content, args.inception_weights,
                                 args.lpips_weights, device, progress=not args.no_progress)
    else:
        if not (args.checkpoint and args.content):
            p.error("--protocol standard needs --checkpoint and --content")
        if args.fake:
            p.error("--fake is for --protocol paper")
        results = evaluate(_translator(args, device), args.content, args.real, args.mode, args.reference,
                           args.num_outputs, args.seed, args.batch_size, args.inception_weights, args.lpips_weights,
                           args.synthetic_root, args.target_domain, args.max_content, not args.no_progress,
                           resize=args.resize or "stretch")
    save_results(results, args.output, args.run_dir)
    print(format_report(results))
    print(f"results: {args.output}")
    return 0


def _translator(args, device):
    from gpunit.translate import load_translator
    return load_translator(args.checkpoint, args.content_encoder, device=device)


if __name__ == "__main__":
    run_main(main)
