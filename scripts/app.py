#!/usr/bin/env python
"""A local web page that translates uploaded images with a GP-UNIT or DeepI2I translator (Gradio).

    python scripts/app.py                                   # the GP-UNIT demo's translator (scripts/demo.py)
    python scripts/app.py --method deepi2i                  # the DeepI2I demo's translator
    python scripts/app.py --checkpoint cat2dog.pt --content-encoder content_encoder.pt   # the authors' files
    python scripts/app.py --checkpoint weights/DeepI2I_animals/ --class-names animals.txt

Then open http://127.0.0.1:7860 in a browser. The page listens on 127.0.0.1 only, unless --host says
otherwise (--host 0.0.0.0: every network interface); --share asks Gradio for a public link.
Needs the app extra: pip install -e '.[app]'. docs/app.md shows the page.
"""
import argparse

from gpunit.engine.cli import run_main
from gpunit.engine.device import resolve_device
from gpunit.translators import load_translator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="translator.pt, a published Stage II file, deepi2i.pt or a published "
                        "DeepI2I folder (default: the translator scripts/demo.py trained for --method)")
    parser.add_argument("--content-encoder", help="the published content_encoder.pt (with a published --checkpoint)")
    parser.add_argument("--class-names", help="DeepI2I: a text file with one class name per line (for a published "
                        "weights folder, which carries none)")
    parser.add_argument("--method", choices=["gp_unit", "deepi2i"], default="gp_unit",
                        help="without --checkpoint: which demo's translator to open")
    parser.add_argument("--device", default="auto", help='"auto" (CUDA when present), "cpu", "cuda", "cuda:N"')
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="bf16/fp16: autocast on GPUs, faster (default fp32)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    args = parser.parse_args()
    try:
        from gpunit import app as web  # lazy: gradio takes seconds to import, and is an optional dependency
    except ImportError as err:
        raise SystemExit(f"the app needs Gradio ({err}): pip install -e '.[app]'") from None

    checkpoint = args.checkpoint or web.demo_checkpoint(args.method)
    translator = load_translator(checkpoint, args.content_encoder, device=resolve_device(args.device),
                                 precision=args.precision, class_names=args.class_names)
    print(f"{translator.method} translator from {checkpoint} on {translator.device}")
    web.launch(web.build_app(translator, str(checkpoint)), args.host, args.port, args.share)
    return 0


if __name__ == "__main__":
    run_main(main)
