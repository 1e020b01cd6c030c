"""DeepI2I's whole pipeline on the built-in synthetic data (``python scripts/demo.py --method deepi2i``).

make the synthetic prior -> our class-conditional BigGAN on its 8 shape classes -> DeepI2I initialised
from that BigGAN (transfer learning, the paper's point) -> translate held-out inputs of every class into
every class (one grid) -> evaluate (texture, shape and content per target class) -> a short report.
Every stage that already finished is reused; an interrupted training run is resumed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from gpunit.biggan.config import BigGANConfig
from gpunit.biggan.trainer import prior_figures, run_biggan
from gpunit.biggan.weights import build_generator, read_biggan_file
from gpunit.data.images import load_rgb, write_png_atomic
from gpunit.data.synthetic import make_dataset
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.deepi2i.evaluate import score_on_synthetic_data
from gpunit.deepi2i.trainer import run_deepi2i
from gpunit.deepi2i.translator import load_deepi2i_translator
from gpunit.engine.cli import banner
from gpunit.engine.config import load_config
from gpunit.engine.device import resolve_device
from gpunit.engine.run import train_once
from gpunit.metrics.prior_samples import format_prior_quality
from gpunit.metrics.synthetic_classes import format_synthetic_scores, held_out_inputs
from gpunit.translate_folder import translate_folder_classes

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GRID_INPUTS_PER_CLASS = 1  # grid rows: one held-out input of each class
EVAL_INPUTS_PER_CLASS = 6  # evaluation: 6 inputs x 8 classes, each into the 7 other classes
FOLLOWS_CENTROID_RATIO = 0.4  # the object is where the input had it: centroid error <= 0.4 x a random pairing's


def biggan_config(data: Path, out_dir: str, device: str, overrides=()) -> BigGANConfig:
    return load_config(CONFIGS / "biggan" / "synthetic.yaml", BigGANConfig, [
        f"out_dir={out_dir}", f"train.device={device}", f"data.root={data}/domains", *overrides])


def deepi2i_config(data: Path, out_dir: str, device: str, biggan: Path | str, overrides=()) -> DeepI2IConfig:
    return load_config(CONFIGS / "deepi2i" / "synthetic.yaml", DeepI2IConfig, [
        f"out_dir={out_dir}", f"train.device={device}", f"data.root={data}/domains", f"init.path={biggan}",
        *overrides])


def read_biggan_generator(path: Path):
    """The (EMA) generator of our ``biggan.pt``."""
    states = read_biggan_file(path)
    return build_generator(states.generator, f"{path} [generator]").eval()


def follows_input_verdict(scores: dict) -> str:
    """One plain line: does the translator follow its input? (content against a random pairing, and the
    input sensitivity)."""
    ratio = scores["centroid_px"] / scores["random_centroid_px"]
    follows = ratio <= FOLLOWS_CENTROID_RATIO and not scores.get("ignores_input", False)
    return (f"verdict: the translations {'follow' if follows else 'do NOT follow'} their inputs (centroid error "
            f"{ratio:.2f} x a random pairing's; it follows at {FOLLOWS_CENTROID_RATIO} or less)")


def _grid_inputs(data: Path, classes: list[str], folder: Path) -> Path:
    """A folder with the first held-out image of each class, named by its class (so are its translations)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in held_out_inputs(data / "domains", classes, GRID_INPUTS_PER_CLASS):
        name = Path(path).parent.parent.name
        target = folder / f"{name}_{Path(path).stem}.png"
        if not target.exists():
            write_png_atomic(load_rgb(path), target)
    return folder


def run_deepi2i_demo(data_root="data/synthetic", out_dir="runs", outputs_dir="outputs/demo_deepi2i",
                     overrides_biggan=(), overrides_deepi2i=(), num_outputs=2, progress=True,
                     device="auto", dataset_options: dict | None = None) -> dict:
    """``dataset_options``: :func:`gpunit.data.synthetic.make_dataset`'s sizes (default: the full data)."""
    start = time.perf_counter()
    data = Path(data_root)
    banner(f"1/5 synthetic prior data -> {data}")
    make_dataset(data, **{"progress": progress, **(dataset_options or {})})

    banner("2/5 class-conditional BigGAN on the shape classes (the generative prior DeepI2I transfers from)")
    cfg_g = biggan_config(data, out_dir, device, overrides_biggan)
    biggan = train_once(run_biggan, cfg_g, Path(out_dir) / cfg_g.name, "biggan.pt", progress)

    banner("3/5 DeepI2I, initialised from that BigGAN (E and D from its discriminator, G from its generator)")
    cfg_t = deepi2i_config(data, out_dir, device, biggan, overrides_deepi2i)
    run_dir = Path(out_dir) / cfg_t.name
    checkpoint = train_once(run_deepi2i, cfg_t, run_dir, "deepi2i.pt", progress)

    banner("4/5 translating one held-out input of every class into every class")
    translator = load_deepi2i_translator(checkpoint, device=resolve_device(device))
    classes = [translator.class_label(c) for c in range(translator.num_classes)]
    out = Path(outputs_dir)
    inputs = _grid_inputs(data, classes, out / "inputs")
    summary = translate_folder_classes(translator, inputs, out / "translations", num_styles=num_outputs, seed=0,
                                       progress=progress, classes_per_page=len(classes))

    banner("5/5 evaluation")
    prior = prior_figures(read_biggan_generator(biggan), classes, data / "domains", translator.device)
    scores = score_on_synthetic_data(translator, data / "domains", EVAL_INPUTS_PER_CLASS, num_outputs, seed=0)
    scores["prior"] = prior
    (out / "eval.json").write_text(json.dumps(scores, indent=1))
    minutes = (time.perf_counter() - start) / 60

    banner("report")
    print(format_prior_quality(prior))
    print(format_synthetic_scores(scores))
    print(follows_input_verdict(scores))
    grids = [str(p) for p in summary["grids"]] or sorted(str(p) for p in (out / "translations" / "grids").glob("*.png"))
    print(f"\ngrid:        {', '.join(grids)} (rows: an input of each class and noise vector; columns: the input, "
          f"then each class)")
    print(f"training:    {Path(out_dir) / cfg_g.name}/images, {run_dir}/images (PNG grids)")
    print(f"tensorboard: tensorboard --logdir {out_dir}")
    print(f"figures:     {out / 'eval.json'}")
    print(f"translator:  {checkpoint}")
    print(f"wall time:   {minutes:.1f} min")
    return {"results": scores, "minutes": minutes, "translator": checkpoint}
