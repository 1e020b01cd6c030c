#!/usr/bin/env python
"""Transfer vs scratch for DeepI2I on the built-in synthetic prior (paper Sec. 4, Fig. 2, Suppl. C).

    python scripts/demo.py --method deepi2i         # trains the BigGAN this transfers from (once)
    python scripts/benchmark_deepi2i.py             # 3 variants x 2 data sizes x 3 seeds, 2 runs at a time

Prints a markdown table (mean +- std over seeds) of texture accuracy, shape accuracy, silhouette IoU and the
centroid and angle errors on held-out inputs translated into every other class; writes it with every run's
figures to <out-dir>/benchmark.{md,json}. Finished runs are reused when started again.
"""
import argparse

from gpunit.deepi2i.benchmark import SIZES, VARIANTS, run_benchmark
from gpunit.engine.cli import run_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic", help="the synthetic data (scripts/make_synthetic.py)")
    p.add_argument("--biggan", default="runs/biggan_synthetic/biggan.pt", help="the BigGAN to transfer from")
    p.add_argument("--out-dir", default="runs/benchmark_deepi2i")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    p.add_argument("--iterations", type=int, default=400, help="DeepI2I steps of every run")
    p.add_argument("--small-per-class", type=int, default=30, help="training images per class of the small set")
    p.add_argument("--eval-inputs-per-class", type=int, default=4, help="held-out inputs per class scored")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    args = p.parse_args()
    result = run_benchmark(args.data, args.biggan, args.out_dir, args.seeds, args.variants, args.sizes,
                           args.iterations, args.small_per_class, args.eval_inputs_per_class, jobs=args.jobs)
    print(result["table"])
    print(f"\n{len(result['runs'])} runs in {result['minutes']:.1f} min; {args.out_dir}/benchmark.md and .json")
    return 0


if __name__ == "__main__":
    run_main(main)
