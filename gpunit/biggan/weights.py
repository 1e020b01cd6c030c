"""BigGAN weights: BigGAN-PyTorch's 128 px release, our own ``biggan.pt``, and what their shapes tell.

BigGAN-PyTorch release (``BigGAN_ch96_bs256x8_138k.zip``, folder ``138k/``): ``G.pth``, ``G_ema.pth``,
``D.pth`` and optionally ``G_optim.pth``, ``D_optim.pth``, ``state_dict.pth``. All are state dicts with the
published key names; widths, class count, ``dim_z``, ``shared_dim``, resolution and attention are read off
the tensor shapes. Our file (``format: gpunit-biggan-v1``, written by ``scripts/train_biggan.py``): G, its
EMA, D, their Adam states and the class names of the embedding rows; DeepI2I starts from either
(:mod:`gpunit.deepi2i.weights`). Everything is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from gpunit.biggan.models import (
    BOTTOM_WIDTH,
    RESOLUTIONS,
    BigGANDiscriminator,
    BigGANGenerator,
    discriminator_block_resolutions,
)
from gpunit.engine.checkpoints import CheckpointError, atomic_save, key_summary, load_into, read_checkpoint
from gpunit.engine.pretrained import MissingWeightsError, hub_checkpoint_dir

log = logging.getLogger(__name__)

RELEASE_NAME = "BigGAN_ch96_bs256x8_138k"
RELEASE_HINT = (f"BigGAN-PyTorch's pretrained 128 px ImageNet model ({RELEASE_NAME}.zip, linked from the "
                "BigGAN-PyTorch README; unzip it and give the folder that holds G.pth, G_ema.pth and D.pth)")


# ----------------------------------------------------------------------------- what shapes tell
def state_indices(state: Mapping, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state for m in [re.fullmatch(pattern, k)] if m})


def generator_args(state: Mapping) -> dict:
    """BigGANGenerator arguments from a published G state dict."""
    blocks = state_indices(state, r"blocks\.(\d+)\.0\.conv1\.weight")
    resolution = BOTTOM_WIDTH * 2 ** len(blocks)
    if blocks != list(range(len(blocks))) or resolution not in RESOLUTIONS:
        raise ValueError(f"{len(blocks)} generator blocks (BigGAN has 4, 5 or 6: 64, 128 or 256 px)")
    num_classes, shared_dim = state["shared.weight"].shape
    z_chunk = state["linear.weight"].shape[1]
    cond_dim = state["blocks.0.0.bn1.gain.weight"].shape[1]
    if cond_dim != shared_dim + z_chunk:
        raise ValueError(f"block conditioning has {cond_dim} inputs, expected shared_dim {shared_dim} + "
                         f"z chunk {z_chunk} (a hierarchical-z BigGAN with a shared embedding)")
    return dict(resolution=resolution, ch=state["blocks.0.0.conv1.weight"].shape[0] // 16, num_classes=num_classes,
                dim_z=z_chunk * (len(blocks) + 1), shared_dim=shared_dim,
                attention=[BOTTOM_WIDTH * 2 ** (i + 1) for i in blocks if f"blocks.{i}.1.gamma" in state])


def trunk_args(state: Mapping) -> dict:
    """Encoder (discriminator trunk) arguments from a published D or E1 state dict."""
    blocks = state_indices(state, r"blocks\.(\d+)\.0\.conv1\.weight")
    resolution = 2 ** (len(blocks) + 1)
    if blocks != list(range(len(blocks))) or resolution not in RESOLUTIONS:
        raise ValueError(f"{len(blocks)} discriminator blocks (BigGAN has 5, 6 or 7: 64, 128 or 256 px)")
    block_res = discriminator_block_resolutions(resolution)
    return dict(resolution=resolution, ch=state["blocks.0.0.conv1.weight"].shape[0],
                attention=sorted({block_res[i] for i in blocks if f"blocks.{i}.1.gamma" in state}))


def discriminator_args(state: Mapping) -> dict:
    return dict(trunk_args(state), num_classes=state["embed.weight"].shape[0])

# ----------------------------------------------------------------------------- building
def build_network(cls, infer, state: Mapping, what: str, source: str, drop: Sequence[str] = (),
                  **build_kwargs) -> nn.Module:
    """``cls(**infer(state), **build_kwargs)`` with ``state`` loaded strictly (keys starting with ``drop``
    removed first); one clear error when the shapes cannot be read or do not fit."""
    state = {k: v for k, v in state.items() if not k.startswith(tuple(drop))}
    try:
        args = infer(state)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: does not look like a {what} (could not read its layer sizes: {err}); "
                              f"first keys: {key_summary(state) if state else 'none'}") from None
    return load_into(cls(**args, **build_kwargs), state, what, source)


def build_generator(state: Mapping, source: str = "<state dict>") -> BigGANGenerator:
    # no orthogonal init: every weight is overwritten at once
    return build_network(BigGANGenerator, generator_args, state, "BigGAN generator", source, ortho_init=False)


def build_discriminator(state: Mapping, source: str = "<state dict>") -> BigGANDiscriminator:
    return build_network(BigGANDiscriminator, discriminator_args, state, "BigGAN discriminator", source,
                         ortho_init=False)


# ----------------------------------------------------------------------------- files
def need_file(folder: Path, name: str, what: str, hint: str) -> Path:
    path = folder / name
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []
        found = ", ".join(present) or "no .pth files"
        raise MissingWeightsError(f"{what}: '{name}' not found in {folder} (found: {found}); {hint}")
    return path


def plain_values(obj):
    """Tensors, numbers, strings, lists and dicts as they are; anything else (the ReLU modules that
    BigGAN-PyTorch pickles into its config) as its repr, so the value can go into a weights-only file."""
    if isinstance(obj, dict):
        return {k: plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_values(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return repr(obj)


def read_training_state(path: Path) -> dict | None:
    """``state_dict.pth`` (``itr``, ``epoch``, ``config``...) as plain values, or None with a warning when
    it cannot be read safely. Its ``config`` pickles ``torch.nn.ReLU`` objects: those (only) are allowed."""
    try:
        with torch.serialization.safe_globals([nn.ReLU]):
            return plain_values(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # torch raises many types for unsafe or corrupt pickles
        log.warning("ignoring %s: it cannot be read as plain values (%s: %s); it is only needed to resume "
                    "the published training schedule", path, type(err).__name__, str(err).splitlines()[0][:160])
        return None


def read_optional(folder: Path, name: str):
    path = folder / name
    return read_checkpoint(path) if path.is_file() else None


def check_same_classes(generator: BigGANGenerator, discriminator: BigGANDiscriminator | None,
                        g_file: str, d_file: str) -> None:
    if discriminator is not None and discriminator.num_classes != generator.num_classes:
        raise CheckpointError(f"{g_file} has {generator.num_classes} class embeddings but {d_file} has "
                              f"{discriminator.num_classes}: they are not from one model")


def check_class_names(class_names: Sequence[str] | None, rows: int, source: str) -> list[str] | None:
    if class_names is None:
        return None
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    if len(names) > rows:
        raise ValueError(f"{len(names)} class names, but {source} has {rows} class embeddings "
                         f"(class i uses row i)")
    return names


def biggan_release_folder(folder: str | os.PathLike | None = None) -> Path:
    """``folder``, else ``$TORCH_HOME/hub/checkpoints/BigGAN_ch96_bs256x8_138k`` (where we look by default)."""
    return Path(folder).expanduser() if folder else hub_checkpoint_dir() / RELEASE_NAME


def cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def looks_like_biggan_state(path: str | os.PathLike) -> bool:
    """A bare BigGAN/DeepI2I state dict (``G.pth``, ``E1.pth``...), which is one file of a folder."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # as above
        return False
    return isinstance(obj, dict) and any(str(k).startswith("blocks.0.0.conv1.") for k in obj)


# ----------------------------------------------------------------------------- our BigGAN file
BIGGAN_FORMAT = "gpunit-biggan-v1"


def save_biggan(path: str | os.PathLike, generator: BigGANGenerator, discriminator: BigGANDiscriminator,
                generator_ema: BigGANGenerator | None = None, class_names: Sequence[str] | None = None,
                optimizers: Mapping[str, dict] | None = None, step: int = 0, config: dict | None = None) -> Path:
    """What ``scripts/train_biggan.py`` exports, our counterpart of BigGAN-PyTorch's release folder: G, its moving
    average, D (published key names), their Adam states (``{"G": ..., "D": ...}``; entry i belongs to the i-th
    parameter, as in ``G_optim.pth``), the names of the class-embedding rows, the step and the config.
    DeepI2I starts from it with ``init.source=gpunit_biggan``. Written atomically, read with weights_only."""
    names = check_class_names(class_names, generator.num_classes, "the generator")
    return atomic_save({
        "format": BIGGAN_FORMAT, "generator": cpu_state(generator), "discriminator": cpu_state(discriminator),
        "generator_ema": cpu_state(generator_ema) if generator_ema is not None else None,
        "optimizers": dict(optimizers or {}), "class_names": names, "step": int(step), "config": plain_values(config or {}),
    }, path)


@dataclass
class BigGANStates:
    """The state dicts of a BigGAN source (published key names) and what comes with them."""
    generator: dict
    discriminator: dict
    class_names: list[str] | None = None
    optimizer_states: dict[str, dict] = field(default_factory=dict)  # "G", "D" (Adam state dicts)
    step: int = 0
    source: str = ""


def read_biggan_file(path: str | os.PathLike, generator: str = "ema") -> BigGANStates:
    """Our ``biggan.pt``; ``generator``: "ema" (the moving average, when the run kept one) or "raw"."""
    if generator not in ("ema", "raw"):
        raise ValueError(f"generator must be 'ema' or 'raw', got {generator!r}")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; init.source=gpunit_biggan takes the biggan.pt file that "
                              "scripts/train_biggan.py writes (a BigGAN-PyTorch release folder is "
                              "init.source=biggan_release)")
    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != BIGGAN_FORMAT:
        found = obj.get("format", "no format key") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a gpunit BigGAN file ({BIGGAN_FORMAT}, written by "
                              f"scripts/train_biggan.py), found {found}")
    g = obj["generator_ema"] if generator == "ema" and obj.get("generator_ema") is not None else obj["generator"]
    if generator == "ema" and obj.get("generator_ema") is None:
        log.info("%s has no EMA generator (trained with train.ema=false): using its generator", path)
    return BigGANStates(g, obj["discriminator"], obj.get("class_names"), dict(obj.get("optimizers") or {}),
                        int(obj.get("step", 0)), str(path))


def read_biggan_release(folder: str | os.PathLike | None = None, generator: str = "ema",
                        optimizers: bool = True) -> BigGANStates:
    """BigGAN-PyTorch's release folder as state dicts: G from ``G_ema.pth`` ("ema") or ``G.pth`` ("raw"), D from
    ``D.pth``, the Adam states from ``G_optim.pth`` / ``D_optim.pth`` when present and asked for, and ``itr`` from
    ``state_dict.pth``."""
    if generator not in ("ema", "raw"):
        raise ValueError(f"generator must be 'ema' or 'raw', got {generator!r}")
    folder = biggan_release_folder(folder)
    g_name = "G_ema.pth" if generator == "ema" else "G.pth"
    files = {name: need_file(folder, name, "BigGAN release", f"get {RELEASE_HINT}") for name in (g_name, "D.pth")}
    optim = {}
    if optimizers:
        optim = {k: v for k, v in {"G": read_optional(folder, "G_optim.pth"),
                                   "D": read_optional(folder, "D_optim.pth")}.items() if v is not None}
    state_file = folder / "state_dict.pth"
    state = read_training_state(state_file) if state_file.is_file() else None
    return BigGANStates(read_checkpoint(files[g_name]), read_checkpoint(files["D.pth"]), None, optim,
                        int((state or {}).get("itr", 0) or 0), str(folder))
