#!/usr/bin/env python
"""Evaluate a translator as in the paper: FID, KID, LPIPS diversity (+ mFID/mKID, and content
consistency and domain accuracy on the built-in synthetic data).

    python scripts/evaluate.py --checkpoint runs/stage2_synthetic/translator.pt \
        --content data/synthetic/domains/ellipse/test --real data/synthetic/domains/star/test \
        --synthetic-root data/synthetic --output runs/stage2_synthetic/eval.json

Inception (pt_inception-2015-12-05-6726825d.pth) and AlexNet (alexnet-owt-7be5be79.pth) weights are
read from $TORCH_HOME/hub/checkpoints or --inception-weights / --lpips-weights; without them FID/KID
or LPIPS are skipped and the report says which file enables them.
"""
import argparse

from gpunit.cli import run_main
from gpunit.evaluate import evaluate, format_report, save_results
from gpunit.train.common import resolve_device
from gpunit.translate import load_translator


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="translator.pt, or a published Stage II file")
    p.add_argument("--content-encoder", help="the published content_encoder.pt (published Stage II files only)")
    p.add_argument("--content", nargs="+", required=True, help="folder(s) of source-domain test images")
    p.add_argument("--real", nargs="+", required=True, help="folder(s) of real target-domain images (one per class)")
    p.add_argument("--mode", choices=["latent", "reference"], default="latent",
                   help="styles from the sampler (latent) or from random reference images (reference)")
    p.add_argument("--reference", nargs="+", help="reference image folder(s) (default: --real)")
    p.add_argument("--num-outputs", type=int, default=10, help="translations per test image (paper: 10)")
    p.add_argument("--max-content", type=int, default=0, help="evaluate the first N test images only (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (file or folder)")
    p.add_argument("--lpips-weights", help="alexnet-owt-7be5be79.pth (file or folder)")
    p.add_argument("--synthetic-root", help="the built-in synthetic data root: adds content consistency and "
                                            "domain accuracy")
    p.add_argument("--target-domain", help="synthetic target domain name (default: from --real)")
    p.add_argument("--output", default="eval.json", help="where to write the results as JSON")
    p.add_argument("--run-dir", help="also log the figures to this run's TensorBoard")
    args = p.parse_args()

    translator = load_translator(args.checkpoint, args.content_encoder, device=resolve_device(args.device))
    results = evaluate(translator, args.content, args.real, args.mode, args.reference, args.num_outputs,
                       args.seed, args.batch_size, args.inception_weights, args.lpips_weights,
                       args.synthetic_root, args.target_domain, args.max_content)
    save_results(results, args.output, args.run_dir)
    print(format_report(results))
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
