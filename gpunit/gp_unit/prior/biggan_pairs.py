"""Paired prior data from BigGAN (paper Sec. 3.1 and Appendix A.1, "SynImageNet-291").

Stage I learns content from images that share one latent code across many ImageNet
classes: BigGAN-deep-128 renders the same noise ``z`` for every class, so
``pairs/<index>_<group>/<k>.png`` for a fixed ``k`` show different animals/vehicles in
the same pose. Following the paper, half of the latents use truncation 0.5 and half 1.0.

We use the ``pytorch_pretrained_biggan`` port of the official TF Hub generator. Its
weights cannot be downloaded offline; :func:`load_biggan` takes a local folder holding
``pytorch_model.bin`` + ``config.json`` and says where to get them when they are missing.

Class groups (folder suffixes) follow the authors' released synImageNet291
(``7_bird``, ``158_dog``, ``271_otheranimal``, ``874_vehicle``); we assign them by
ImageNet index ranges, see :func:`imagenet_group`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_pretrained_biggan import (
    BigGAN,
    BigGANConfig,
    one_hot_from_int,
    truncated_noise_sample,
)
from pytorch_pretrained_biggan.model import (
    CONFIG_NAME,
    PRETRAINED_CONFIG_ARCHIVE_MAP,
    PRETRAINED_MODEL_ARCHIVE_MAP,
    WEIGHTS_NAME,
)
from torchvision.transforms.v2.functional import to_pil_image

from gpunit.data.images import write_png_atomic
from gpunit.engine.pretrained import MissingWeightsError, hub_checkpoint_dir, load_state_dict
from gpunit.engine.progress import progress_bar

log = logging.getLogger(__name__)


def _ranges(*spans: int | tuple[int, int]) -> list[int]:
    """Expand ``7, (10, 12)`` into ``[7, 10, 11, 12]`` (inclusive ranges, as in the paper)."""
    out = []
    for span in spans:
        lo, hi = span if isinstance(span, tuple) else (span, span)
        out.extend(range(lo, hi + 1))
    return out


# Appendix A.1: the 291 ImageNet classes of SynImageNet-291 / ImageNet-291.
PAPER_CLASSES: list[int] = _ranges(
    (7, 20), 22, 23, (80, 102), 104, 105, 106, 127, 128, 129, (131, 145), (151, 299),
    (330, 378), 380, (382, 388), 407, 436, 468, 511, 555, 586, 609, 627, 654, 656, 675, 717,
    734, 751, 757, 779, 803, 817, 829, 847, 856, 864, 866, 867, 874)
assert len(PAPER_CLASSES) == len(set(PAPER_CLASSES)) == 291

# Sec. 4 / Appendix A.1: the four-class domains of the Bird <-> Dog and Bird <-> Car tasks.
BIRD_DOG_CAR: dict[str, list[int]] = {"bird": [10, 11, 12, 13], "dog": [214, 218, 222, 232],
                                      "car": [436, 511, 627, 656]}

# ImageNet index ranges -> group. Birds: 7-24 (cock .. great grey owl), 80-100 (grouse ..
# black swan), 127-146 (storks .. albatross). Dogs: 151-268. Other animals: 101-106 (tusker,
# echidna, platypus, wallaby, koala, wombat), 269-299 (wolves, foxes, cats, bears, mongoose,
# meerkat) and 330-388 (rabbits, rodents, hoofed animals, weasels, primates, elephants,
# pandas). The paper's object classes (407-874) are all road vehicles.
_GROUPS = [((7, 24), "bird"), ((80, 100), "bird"), ((127, 146), "bird"), ((151, 268), "dog"),
           ((101, 106), "otheranimal"), ((269, 299), "otheranimal"), ((330, 388), "otheranimal")]


def imagenet_group(index: int) -> str:
    """The group name used in folder names; 'vehicle' for the paper's object classes, else 'class'."""
    for (lo, hi), group in _GROUPS:
        if lo <= index <= hi:
            return group
    return "vehicle" if index in PAPER_CLASSES else "class"


def class_folders(classes: list[int] | dict[str, list[int]]) -> dict[int, str]:
    """ImageNet index -> folder name ``<index>_<group>``; a dict names the groups itself."""
    if isinstance(classes, dict):
        pairs = [(int(i), group) for group, indexes in classes.items() for i in indexes]
    else:
        pairs = [(int(i), imagenet_group(int(i))) for i in classes]
    bad = [i for i, _ in pairs if not 0 <= i < 1000]
    if bad or not pairs:
        raise ValueError(f"classes must be a non-empty list of ImageNet indexes 0..999; got {bad or 'none'}")
    if len({i for i, _ in pairs}) != len(pairs):
        raise ValueError("classes lists an ImageNet index more than once")
    return {i: f"{i}_{group}" for i, group in pairs}


# ---------------------------------------------------------------------------------- loading
def default_biggan_folder(model_name: str) -> Path:
    """Where the BigGAN weights are looked for without ``--biggan``: ``$TORCH_HOME/hub/checkpoints/<model name>``."""
    return hub_checkpoint_dir() / model_name


def _missing_message(model_name: str, folder: Path, problem: str) -> str:
    return (f"BigGAN weights: {problem}. Put two files in {folder}: {WEIGHTS_NAME} (from "
            f"{PRETRAINED_MODEL_ARCHIVE_MAP[model_name]}) and {CONFIG_NAME} (from "
            f"{PRETRAINED_CONFIG_ARCHIVE_MAP[model_name]}), or pass another folder holding them with --biggan.")


def _weight_files(weights: str | os.PathLike | None, model_name: str) -> tuple[Path, Path]:
    folder = Path(weights).expanduser() if weights is not None else default_biggan_folder(model_name)
    if not folder.is_dir():
        raise MissingWeightsError(_missing_message(model_name, folder, f"folder '{folder}' not found"))
    missing = [name for name in (WEIGHTS_NAME, CONFIG_NAME) if not (folder / name).is_file()]
    if missing:
        raise MissingWeightsError(_missing_message(model_name, folder, f"{' and '.join(missing)} missing in '{folder}'"))
    return folder / WEIGHTS_NAME, folder / CONFIG_NAME


def load_biggan(weights: str | os.PathLike | None = None, model_name: str = "biggan-deep-128") -> BigGAN:
    """Load a BigGAN-deep generator in eval mode from a folder (``pytorch_model.bin`` + ``config.json``).

    ``weights=None`` looks in ``$TORCH_HOME/hub/checkpoints/<model_name>/``; nothing is downloaded. A missing
    file raises a MissingWeightsError that says which files to fetch and where to put them.
    """
    if model_name not in PRETRAINED_MODEL_ARCHIVE_MAP:
        raise ValueError(f"unknown BigGAN model '{model_name}'; choose one of {sorted(PRETRAINED_MODEL_ARCHIVE_MAP)}")
    weights_file, config_file = _weight_files(weights, model_name)
    try:
        config = BigGANConfig.from_json_file(config_file)
        model = BigGAN(config)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{config_file} is not a valid BigGAN config.json ({err})") from err
    # A corrupt file makes torch's weights-only unpickler raise almost any type (IndexError,
    # UnpicklingError, ...); shapes that do not match raise RuntimeError. All mean: wrong file.
    try:
        result = model.load_state_dict(load_state_dict(weights_file), strict=False)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{weights_file} does not hold BigGAN weights matching {config_file}: {err}") from err
    # strict=False only so that we can say what is wrong (torch's spectral-norm hook already
    # rebuilt the `_v` vectors of old-format files before this check).
    if result.missing_keys:
        raise ValueError(f"{weights_file} lacks {len(result.missing_keys)} BigGAN weights (e.g. "
                         f"{result.missing_keys[:3]}); is it the {WEIGHTS_NAME} that belongs with {config_file}?")
    if result.unexpected_keys:
        log.warning("%s: ignoring %d unknown keys, e.g. %s", weights_file, len(result.unexpected_keys),
                    result.unexpected_keys[:3])
    # Eval mode matters: in train mode spectral norm power-iterates on every forward, so
    # images would depend on what was generated before them.
    return model.eval()


# ------------------------------------------------------------------------------- generation
def latent_truncations(num_latents: int, truncations=(0.5, 1.0)) -> list[float]:
    """Truncation of each latent: equal consecutive blocks, i.e. half at 0.5, half at 1.0, as in the paper."""
    return [float(truncations[k * len(truncations) // num_latents]) for k in range(num_latents)]


def latent_noise(k: int, dim_z: int, truncation: float, seed: int = 0) -> torch.Tensor:
    """Truncated noise of latent ``k``: its own RNG seeded by (seed, k), so batching and resuming never change it."""
    return torch.from_numpy(truncated_noise_sample(1, dim_z, truncation, seed=[seed, k]))  # (1, dim_z)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 in [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def render(model: BigGAN, jobs: list[tuple[int, int]], truncation: float, seed: int, size: int,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """The uint8 images (B, 3, size, size) of ``jobs`` = [(latent k, ImageNet class c), ...] at one truncation."""
    noise_of = {k: latent_noise(k, model.config.z_dim, truncation, seed) for k in {k for k, _ in jobs}}
    noise = torch.cat([noise_of[k] for k, _ in jobs]).to(device)  # (B, dim_z)
    labels = torch.from_numpy(one_hot_from_int([c for _, c in jobs], len(jobs))).to(device)
    images = model(noise, labels, truncation)  # (B, 3, R, R) in [-1, 1]
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True)
    return to_uint8(images)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so an interrupted run never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write a (3, H, W) or (1, H, W) uint8 tensor as an RGB or 8-bit grayscale PNG, atomically."""
    write_png_atomic(to_pil_image(image.cpu()), path)


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to resume into a folder generated with other settings (the pairs would silently mix)."""
    record = out_dir / "biggan_pairs.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        changed = {k: (previous.get(k), settings.get(k)) for k in {**previous, **settings}
                   if previous.get(k) != settings.get(k)}
        if changed:
            raise ValueError(f"{out_dir} was generated with other settings {changed} (old, new); "
                             "use the same settings to resume or choose a new output folder.")
    else:
        atomic_write_bytes(record, json.dumps(settings, indent=2).encode())


@torch.no_grad()
def generate_pairs(model: BigGAN, out_dir: str | os.PathLike, classes: list[int] | dict[str, list[int]],
                   num_latents: int, truncations=(0.5, 1.0), batch_size: int = 8, seed: int = 0,
                   device: str | torch.device = "cpu", start_index: int = 0, stop_index: int | None = None,
                   size: int | None = None, progress: bool = True, latents: list[int] | None = None) -> dict:
    """Render latents ``start_index .. stop_index-1`` (default: all ``num_latents``) for every class.

    ``latents`` renders only these latent indexes instead (those kept by :mod:`gpunit.gp_unit.prior.pair_filter`);
    they are recorded with the settings, so a folder never mixes two selections.

    Writes ``<out_dir>/pairs/<index>_<group>/<k:05d>.png``; the same ``k`` is the same latent in
    every class folder. ``num_latents`` fixes the truncation split (see :func:`latent_truncations`),
    so shards of one run can use start/stop indexes. Existing images are skipped (resume).
    ``size`` resizes the square output (default: the model's native resolution).
    Returns ``{"written", "skipped", "latents", "classes", "out"}``.
    """
    if num_latents < 1 or batch_size < 1 or start_index < 0:
        raise ValueError("num_latents and batch_size must be >= 1 and start_index >= 0")
    if not truncations or not all(0 < t <= 1 for t in truncations):
        raise ValueError(f"truncations must be values in (0, 1], got {list(truncations)}")
    stop_index = num_latents if stop_index is None else min(stop_index, num_latents)
    if latents is not None:
        latents = sorted(set(int(k) for k in latents))
        if not latents or latents[0] < 0 or latents[-1] >= num_latents:
            raise ValueError(f"latents must be indexes in 0..{num_latents - 1}, got {latents[:5]}...")
    chosen = latents if latents is not None else range(start_index, stop_index)
    folders = class_folders(classes)
    out_dir = Path(out_dir)
    pairs_dir = out_dir / "pairs"
    size = size or model.config.output_dim
    settings = {"seed": seed, "num_latents": num_latents, "size": size, "truncations": [float(t) for t in truncations]}
    if latents is not None:
        settings["latents"] = latents
    _check_settings(out_dir, settings)

    trunc = latent_truncations(num_latents, truncations)
    todo = [(k, c) for k in chosen for c in folders if not (pairs_dir / folders[c] / f"{k:05d}.png").is_file()]
    skipped = len(chosen) * len(folders) - len(todo)
    model = model.to(device).eval()
    with progress_bar(total=len(todo), desc="BigGAN pairs", unit="img", disable=not progress) as bar:
        for t in sorted(set(trunc)):  # the model takes one truncation per call
            jobs = [(k, c) for k, c in todo if trunc[k] == t]
            for i in range(0, len(jobs), batch_size):
                batch = jobs[i:i + batch_size]
                for (k, c), image in zip(batch, render(model, batch, t, seed, size, device)):
                    write_png(pairs_dir / folders[c] / f"{k:05d}.png", image)
                bar.update(len(batch))
    log.info("BigGAN pairs: wrote %d images, skipped %d existing, in %s", len(todo), skipped, pairs_dir)
    return {"written": len(todo), "skipped": skipped, "latents": len(chosen),
            "classes": len(folders), "out": str(pairs_dir)}
