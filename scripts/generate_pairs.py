"""Generate paired prior data from BigGAN (paper Sec. 3.1, Appendix A.1) and, optionally, instance masks.

    python scripts/generate_pairs.py --out data/biggan --biggan weights/biggan-deep-128 \\
        --classes paper --num-latents 6000 --keep 655 --size 256 --masks maskrcnn

As in the paper, --num-latents candidates are scored in every class and the --keep best latents are
written (gpunit/gp_unit/prior/pair_filter.py: VGG conv5_2 style typicality, optionally the object's mask area);
--keep 0 writes every latent. Writes <out>/pairs/<index>_<group>/<k>.png (same k = same latent), the masks
in <out>/pairs_mask/ (the layout of scripts/make_synthetic.py) and the scores in <out>/filter/.
Rerunning the same command resumes where it stopped.
"""
import argparse

from gpunit.engine.cli import run_main
from gpunit.engine.device import resolve_device
from gpunit.gp_unit.prior.biggan_pairs import BIRD_DOG_CAR, PAPER_CLASSES, generate_pairs, load_biggan
from gpunit.gp_unit.prior.masks import MaskRCNNMasker, write_masks
from gpunit.gp_unit.prior.pair_filter import filter_latents


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
    p.add_argument("--biggan", help="folder with pytorch_model.bin + config.json "
                   "(default: $TORCH_HOME/hub/checkpoints/<model name>; nothing is downloaded)")
    p.add_argument("--model-name", default="biggan-deep-128", help="BigGAN variant (names the default folder and the download hint)")
    p.add_argument("--classes", type=parse_classes, default="paper", help="paper | bird_dog_car | 7,8,11")
    p.add_argument("--num-latents", type=int, default=6000, help="candidate latents per class; paper: 6000")
    p.add_argument("--keep", type=int, default=655, help="latents kept after filtering; paper: 655 (0 = keep all)")
    p.add_argument("--vgg-weights", help="vgg19-dcbb9e9d.pth or its folder, for filtering (default: torch hub cache)")
    p.add_argument("--min-object-area", type=float, default=0.0,
                   help="filter: the object's mask must cover this fraction of the image (needs --masks; 0 = off)")
    p.add_argument("--min-object-classes", type=float, default=0.9,
                   help="filter: ... in at least this fraction of the classes (default: %(default)s)")
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

    if args.min_object_area > 0 and args.masks == "none":
        p.error("--min-object-area needs a mask model: add --masks maskrcnn")

    model = load_biggan(args.biggan, args.model_name)
    masker = None
    if args.masks == "maskrcnn":
        masker = MaskRCNNMasker(args.maskrcnn_weights, device)
    kept = None
    if 0 < args.keep < args.num_latents:  # over-generate, score, keep the best (Appendix A.1)
        kept, path = filter_latents(model, args.out, args.classes, args.num_latents, args.keep, tuple(args.truncations),
                                    args.seed, args.size, args.vgg_weights, masker, args.min_object_area,
                                    args.min_object_classes, args.batch_size, device, progress=not args.quiet)
        print(f"kept {len(kept)} of {args.num_latents} latents ({path})")
    summary = generate_pairs(model, args.out, args.classes, args.num_latents, tuple(args.truncations),
                             args.batch_size, args.seed, device, size=args.size, progress=not args.quiet,
                             latents=kept)
    print(f"{summary['written']} images written, {summary['skipped']} already there, in {summary['out']}")
    if masker is not None:
        masks = write_masks(summary["out"], f"{args.out}/pairs_mask", masker, args.batch_size,
                            progress=not args.quiet)
        print(f"{masks['written']} masks written, {masks['skipped']} already there, {masks['failed']} unreadable")


if __name__ == "__main__":
    run_main(main)
