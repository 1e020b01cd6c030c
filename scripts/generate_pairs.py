"""Generate paired prior data from BigGAN (paper Sec. 3.1, Appendix A.1) and, optionally, instance masks.

    python scripts/generate_pairs.py --out data/biggan --biggan weights/biggan-deep-128 \
        --classes paper --num-latents 655 --size 256 --masks maskrcnn

Writes <out>/pairs/<index>_<group>/<k>.png (same k = same latent) and the masks in <out>/pairs_mask/,
the layout of scripts/make_synthetic.py. Rerunning the same command resumes where it stopped.
"""
import argparse

from gpunit.cli import run_main
from gpunit.data.biggan import BIRD_DOG_CAR, PAPER_CLASSES, generate_pairs, load_biggan
from gpunit.train.common import resolve_device


def parse_classes(text: str):
    if text == "paper":
        return PAPER_CLASSES
    if text == "bird_dog_car":
        return BIRD_DOG_CAR
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("use 'paper', 'bird_dog_car' or comma-separated ImageNet indexes") from None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/biggan", help="output folder")
    p.add_argument("--biggan", help="folder with pytorch_model.bin + config.json (default: try a download)")
    p.add_argument("--model-name", default="biggan-deep-128", help="BigGAN variant (for the download hint)")
    p.add_argument("--classes", type=parse_classes, default="paper", help="paper | bird_dog_car | 7,8,11")
    p.add_argument("--num-latents", type=int, default=655, help="latents (images per class); paper: 655")
    p.add_argument("--truncations", type=float, nargs="+", default=[0.5, 1.0],
                   help="split the latents into equal blocks, one per truncation")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--size", type=int, default=None, help="output size (default: the model's native size)")
    p.add_argument("--masks", choices=["none", "maskrcnn"], default="none")
    p.add_argument("--maskrcnn-weights", help="Mask R-CNN .pth file or its folder (default: torch hub cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    device = resolve_device(args.device)

    model = load_biggan(args.biggan, args.model_name)
    summary = generate_pairs(model, args.out, args.classes, args.num_latents, tuple(args.truncations),
                             args.batch_size, args.seed, device, size=args.size, progress=not args.quiet)
    print(f"{summary['written']} images written, {summary['skipped']} already there, in {summary['out']}")
    if args.masks == "maskrcnn":
        from gpunit.data.masks import MaskRCNNMasker, write_masks
        masker = MaskRCNNMasker(args.maskrcnn_weights, device)
        masks = write_masks(summary["out"], f"{args.out}/pairs_mask", masker, args.batch_size,
                            progress=not args.quiet)
        print(f"{masks['written']} masks written, {masks['skipped']} already there, {masks['failed']} unreadable")


if __name__ == "__main__":
    run_main(main)
