"""Write the built-in synthetic prior data set (a download-free stand-in for BigGAN pairs).

    python scripts/make_synthetic.py --out data/synthetic            # the demo: 8 classes, 64x64
    python scripts/make_synthetic.py --out data/syn128 --size 128 --classes star ring heart

A re-run with the same parameters finds the folder complete and returns at once.
See gpunit/data/synthetic.py for the layout and the content statistics in each content.csv.
"""
from __future__ import annotations

import argparse
import logging

from gpunit.data.synthetic import CLASS_NAMES, make_dataset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/synthetic", help="output folder (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="square image side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every latent code (default: %(default)s)")
    p.add_argument("--classes", nargs="+", default=None, choices=CLASS_NAMES, metavar="NAME",
                   help=f"classes to render (default: all of {' '.join(CLASS_NAMES)})")
    p.add_argument("--pairs", type=int, default=300, help="paired latents, rendered in every class (pairs/)")
    p.add_argument("--pair-test", type=int, default=50, help="held-out paired latents (pairs_test/)")
    p.add_argument("--unpaired", type=int, default=150, help="independent images per class (unpaired/)")
    p.add_argument("--domain-train", type=int, default=300, help="Stage II training images per class")
    p.add_argument("--domain-test", type=int, default=50, help="Stage II test images per class")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs; 1 = no pool)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = make_dataset(args.out, size=args.size, classes=args.classes, pairs_per_class=args.pairs,
                           unpaired_per_class=args.unpaired, domain_train=args.domain_train,
                           domain_test=args.domain_test, pair_test=args.pair_test, seed=args.seed,
                           workers=args.workers, progress=not args.quiet)
    state = "already complete, skipped" if summary["skipped"] else f"written in {summary['seconds']:.1f} s"
    print(f"{summary['images']} images ({len(summary['classes'])} classes: {', '.join(summary['classes'])}) "
          f"in {summary['out']}: {state}")
    print("counts: " + ", ".join(f"{k}={v}" for k, v in summary["counts"].items()))


if __name__ == "__main__":
    main()
