"""DeepI2I weights: the published weights folder, BigGAN-PyTorch's 128 px release, and our own file.

Published DeepI2I folder (what the official ``utils.save_weights`` writes; ``_<suffix>`` such as
``_copy0`` or ``_best1`` when given): ``G.pth``, ``E1.pth``, ``A1.pth`` and optionally ``G_ema.pth``,
``D.pth``, ``state_dict.pth`` (``itr``, ``config``...) and ``{G,D,E1,A1}_optim.pth`` (Adam states; entry
i belongs to the i-th published parameter). BigGAN-PyTorch release (``BigGAN_ch96_bs256x8_138k.zip``,
folder ``138k/``): ``G.pth``, ``G_ema.pth``, ``D.pth`` and optionally ``G_optim.pth``,
``D_optim.pth``, ``state_dict.pth``. All are state dicts with the published key names; widths, class
count, ``dim_z``, ``shared_dim``, resolution and attention are read off the tensor shapes.

As the published loader (``utils.load_weights(..., resume_BigGAN=True)``) does when starting from
BigGAN: G <- ``G.pth`` (the DeepI2I README says to copy ``G_ema.pth`` over it first; we read
``G_ema.pth`` directly by default), D <- ``D.pth``, encoder <- ``D.pth``, adaptors freshly made
(PyTorch's default init). Nothing is resized: the class embeddings keep all their rows (1000 for
ImageNet) and a data set's N classes use rows 0..N-1. The discriminator's projection embedding is
spectrally normalised over all its rows, so dropping rows would change D; it is an option
(``truncate_class_embeddings``), not the default.

Our encoder and adaptors have no ``linear``/``embed`` heads: the published ``E1`` and ``A1`` own them
but never use them for a translation (E1 evaluates ``linear`` and ignores the result). They are
dropped on loading; the remaining parameters keep the published order.

Our file (``format: gpunit-deepi2i-translator-v1``): encoder, adaptors and (EMA) generator state
dicts, class names, the architecture that shapes cannot tell (fused widths, identity and channel-repeat
adaptors, fusion weights) and the run's config as plain values; ``torch.load(weights_only=True)`` reads it.
Our BigGAN file (``format: gpunit-biggan-v1``, written by ``scripts/train_biggan.py``): G, its EMA, D, their
Adam states and the class names of the embedding rows; DeepI2I training starts from it as from the release.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from gpunit.checkpoints import CheckpointError, _key_summary, atomic_save, load_into, read_checkpoint
from gpunit.models.biggan import (BOTTOM_WIDTH, RESOLUTIONS, BigGANDiscriminator, BigGANGenerator,
                                  discriminator_block_resolutions)
from gpunit.models.deepi2i import (PRETRAINED_FUSION_WEIGHTS, SCRATCH_FUSION_WEIGHTS, Adaptors, DeepI2I, Encoder,
                                   build_adaptors)
from gpunit.pretrained import MissingWeightsError, hub_checkpoint_dir

log = logging.getLogger(__name__)

FORMAT = "gpunit-deepi2i-translator-v1"
RELEASE_NAME = "BigGAN_ch96_bs256x8_138k"
RELEASE_HINT = (f"BigGAN-PyTorch's pretrained 128 px ImageNet model ({RELEASE_NAME}.zip, linked from the "
                "BigGAN-PyTorch README; unzip it and give the folder that holds G.pth, G_ema.pth and D.pth)")
UNUSED_HEADS = ("linear.", "embed.")  # the published E1/A1 heads that no translation uses
PUBLISHED_A1_RESOLUTIONS = (32, 16, 8, 4)  # the official A1 reads feature 32 / 2**i with block i


# ----------------------------------------------------------------------------- what shapes tell
def _indices(state: Mapping, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state for m in [re.fullmatch(pattern, k)] if m})


def generator_args(state: Mapping) -> dict:
    """BigGANGenerator arguments from a published G state dict."""
    blocks = _indices(state, r"blocks\.(\d+)\.0\.conv1\.weight")
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


def encoder_args(state: Mapping) -> dict:
    """Encoder (discriminator trunk) arguments from a published D or E1 state dict."""
    blocks = _indices(state, r"blocks\.(\d+)\.0\.conv1\.weight")
    resolution = 2 ** (len(blocks) + 1)
    if blocks != list(range(len(blocks))) or resolution not in RESOLUTIONS:
        raise ValueError(f"{len(blocks)} discriminator blocks (BigGAN has 5, 6 or 7: 64, 128 or 256 px)")
    block_res = discriminator_block_resolutions(resolution)
    return dict(resolution=resolution, ch=state["blocks.0.0.conv1.weight"].shape[0],
                attention=sorted({block_res[i] for i in blocks if f"blocks.{i}.1.gamma" in state}))


def discriminator_args(state: Mapping) -> dict:
    return dict(encoder_args(state), num_classes=state["embed.weight"].shape[0])


def published_adaptor_args(state: Mapping) -> dict:
    """Adaptors arguments from a published A1 state dict (blocks 0..3 at 32, 16, 8, 4)."""
    blocks = _indices(state, r"blocks\.(\d+)\.0\.conv1\.weight")
    if blocks != list(range(len(PUBLISHED_A1_RESOLUTIONS))):
        raise ValueError(f"{len(blocks)} adaptor blocks, the published A1 has {len(PUBLISHED_A1_RESOLUTIONS)}")
    return dict(resolutions=list(PUBLISHED_A1_RESOLUTIONS),
                in_channels=[state[f"blocks.{i}.0.conv1.weight"].shape[1] for i in blocks],
                out_channels=[state[f"blocks.{i}.0.conv2.weight"].shape[0] for i in blocks])


# ----------------------------------------------------------------------------- building
def _build(cls, infer, state: Mapping, what: str, source: str, drop: Sequence[str] = ()) -> nn.Module:
    state = {k: v for k, v in state.items() if not k.startswith(tuple(drop))}
    try:
        args = infer(state)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: does not look like a {what} (could not read its layer sizes: {err}); "
                              f"first keys: {_key_summary(state) if state else 'none'}") from None
    # no orthogonal init: every weight is overwritten at once
    return load_into(cls(**args) if cls is Adaptors else cls(**args, ortho_init=False), state, what, source)


def build_generator(state: Mapping, source: str = "<state dict>") -> BigGANGenerator:
    return _build(BigGANGenerator, generator_args, state, "BigGAN generator", source)


def build_discriminator(state: Mapping, source: str = "<state dict>") -> BigGANDiscriminator:
    return _build(BigGANDiscriminator, discriminator_args, state, "BigGAN discriminator", source)


def build_encoder(state: Mapping, source: str = "<state dict>") -> Encoder:
    """The encoder from an E1 or D state dict (their unused ``linear``/``embed`` heads are dropped)."""
    return _build(Encoder, encoder_args, state, "DeepI2I encoder (BigGAN discriminator trunk)", source, UNUSED_HEADS)


def build_published_adaptors(state: Mapping, source: str = "<state dict>") -> Adaptors:
    return _build(Adaptors, published_adaptor_args, state, "DeepI2I adaptor set (A1)", source, UNUSED_HEADS)


# ----------------------------------------------------------------------------- files
def _need(folder: Path, name: str, what: str, hint: str) -> Path:
    path = folder / name
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []
        found = ", ".join(present) or "no .pth files"
        raise MissingWeightsError(f"{what}: '{name}' not found in {folder} (found: {found}); {hint}")
    return path


def _plain(obj):
    """Tensors, numbers, strings, lists and dicts as they are; anything else (the ReLU modules that
    BigGAN-PyTorch pickles into its config) as its repr, so the value can go into a weights-only file."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return repr(obj)


def read_training_state(path: Path) -> dict | None:
    """``state_dict.pth`` (``itr``, ``epoch``, ``config``...) as plain values, or None with a warning when
    it cannot be read safely. Its ``config`` pickles ``torch.nn.ReLU`` objects: those (only) are allowed."""
    try:
        with torch.serialization.safe_globals([nn.ReLU]):
            return _plain(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # torch raises many types for unsafe or corrupt pickles
        log.warning("ignoring %s: it cannot be read as plain values (%s: %s); it is only needed to resume "
                    "the published training schedule", path, type(err).__name__, str(err).splitlines()[0][:160])
        return None


def _read_optional(folder: Path, name: str):
    path = folder / name
    return read_checkpoint(path) if path.is_file() else None


def _stem(name: str, suffix: str | None) -> str:
    return f"{name}_{suffix}.pth" if suffix else f"{name}.pth"


@dataclass
class DeepI2IWeights:
    """What a weights folder holds: the translation network, and for training the discriminator,
    the training state (``state_dict.pth``) and the raw optimizer states (by network name)."""
    network: DeepI2I
    discriminator: BigGANDiscriminator | None = None
    class_names: list[str] | None = None
    training_state: dict | None = None
    optimizer_states: dict[str, dict] = field(default_factory=dict)


def _check_same_classes(generator: BigGANGenerator, discriminator: BigGANDiscriminator | None,
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


def fusion_weights_from_state(training_state: dict | None) -> dict[int, float]:
    """The published ``E1_fea_w`` in force for a run: the config's own when it holds one (runs from
    scratch save it), 1/1/1/0.1 for ``--training_scratch``, else 0.1 everywhere (runs from BigGAN,
    whose saved config is the release's)."""
    config = (training_state or {}).get("config") or {}
    if isinstance(config.get("E1_fea_w"), dict):
        return {int(k): float(v) for k, v in config["E1_fea_w"].items()}
    return dict(SCRATCH_FUSION_WEIGHTS if config.get("training_scratch") else PRETRAINED_FUSION_WEIGHTS)


def load_published_deepi2i(folder: str | os.PathLike, suffix: str | None = None, generator: str = "G",
                           discriminator: bool = False, optimizers: bool = False,
                           fusion_weights: Mapping[int, float] | None = None,
                           class_names: Sequence[str] | None = None) -> DeepI2IWeights:
    """A published DeepI2I weights folder (see the module docstring).

    ``generator``: "G" (what the published test script translates with) or "G_ema" (when the run kept
    an EMA copy). ``discriminator`` / ``optimizers``: also read ``D.pth`` / the ``*_optim.pth`` files
    (for fine-tuning). ``fusion_weights``: default from ``state_dict.pth`` (see
    :func:`fusion_weights_from_state`). ``class_names``: names of rows 0..N-1 of the class embedding.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DeepI2I weights folder not found: {folder}")
    if generator not in ("G", "G_ema"):
        raise ValueError(f"generator must be 'G' or 'G_ema', got {generator!r}")
    hint = ("a published DeepI2I folder holds G.pth, E1.pth and A1.pth (what the official save_weights writes); "
            "a GP-UNIT checkpoint is a file")
    if not (folder / _stem("E1", suffix)).is_file() and (folder / _stem("G_ema", suffix)).is_file():
        hint = ("this looks like a BigGAN release folder (no E1.pth): build a DeepI2I model from it with "
                "gpunit.checkpoints_deepi2i.build_deepi2i_from_biggan")
    files = {name: _need(folder, _stem(name, suffix), "DeepI2I weights", hint) for name in (generator, "E1", "A1")}
    g = build_generator(read_checkpoint(files[generator]), str(files[generator]))
    encoder = build_encoder(read_checkpoint(files["E1"]), str(files["E1"]))
    adaptors = build_published_adaptors(read_checkpoint(files["A1"]), str(files["A1"]))
    d = None
    if discriminator:
        d_file = _need(folder, _stem("D", suffix), "DeepI2I discriminator", "it is only needed for training")
        d = build_discriminator(read_checkpoint(d_file), str(d_file))
        _check_same_classes(g, d, files[generator].name, d_file.name)
    state_file = folder / _stem("state_dict", suffix)
    training_state = read_training_state(state_file) if state_file.is_file() else None
    weights = dict(fusion_weights) if fusion_weights is not None else fusion_weights_from_state(training_state)
    try:
        network = DeepI2I(encoder, adaptors, g, weights)
    except ValueError as err:
        names = ", ".join(p.name for p in files.values())
        raise CheckpointError(f"{folder}: {names} are not from one model: {err}") from None
    optim = {}
    if optimizers:
        for name in ("G", "D", "E1", "A1"):
            found = _read_optional(folder, _stem(f"{name}_optim", suffix))
            if found is not None:
                optim[name] = found
    return DeepI2IWeights(network.eval(), d, check_class_names(class_names, g.num_classes, str(files[generator])),
                          training_state, optim)


def biggan_release_folder(folder: str | os.PathLike | None = None) -> Path:
    """``folder``, else ``$TORCH_HOME/hub/checkpoints/BigGAN_ch96_bs256x8_138k`` (where we look by default)."""
    return Path(folder).expanduser() if folder else hub_checkpoint_dir() / RELEASE_NAME


def build_deepi2i_from_biggan(folder: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                              num_classes: int | None = None, generator: str = "G_ema",
                              resolutions: Sequence[int] | None = None, identity: Iterable[int] = (),
                              fusion_weights: Mapping[int, float] = PRETRAINED_FUSION_WEIGHTS,
                              truncate_class_embeddings: bool = False, optimizers: bool = False) -> DeepI2IWeights:
    """A DeepI2I model initialised from BigGAN-PyTorch's release (Sec. 3.2), as the published code does it.

    G from ``G_ema.pth`` (or ``G.pth`` with ``generator="G"``), D and the encoder from ``D.pth``, adaptors
    at ``resolutions`` (default all four widths; ``identity`` lists widths without an adaptor) with
    PyTorch's default init. ``class_names`` (or just ``num_classes``) name the data set's classes,
    which use embedding rows 0..N-1; all rows are kept unless ``truncate_class_embeddings``.
    ``optimizers``: also return the release's Adam states (G from ``G_optim.pth``; D and, as published,
    the encoder from ``D_optim.pth``). The release's ``state_dict.pth`` becomes ``training_state``.
    """
    folder = biggan_release_folder(folder)
    if generator not in ("G", "G_ema"):
        raise ValueError(f"generator must be 'G' or 'G_ema', got {generator!r}")
    files = {name: _need(folder, f"{name}.pth", "BigGAN release", f"get {RELEASE_HINT}") for name in (generator, "D")}
    g_state, d_state = read_checkpoint(files[generator]), read_checkpoint(files["D"])
    wanted = len(class_names) if class_names is not None else num_classes
    if class_names is not None and num_classes is not None and num_classes != len(class_names):
        raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names")
    if truncate_class_embeddings:
        if wanted is None:
            raise ValueError("truncate_class_embeddings needs class_names or num_classes")
        g_state, d_state = _truncated_classes(g_state, wanted), _truncated_classes(d_state, wanted)

    g = build_generator(g_state, str(files[generator]))
    d = build_discriminator(d_state, str(files["D"]))
    _check_same_classes(g, d, files[generator].name, files["D"].name)
    if wanted is not None and wanted > g.num_classes:
        raise ValueError(f"{wanted} classes requested, but the release in {folder} has {g.num_classes} class "
                         "embeddings (a data set's classes use its first rows)")
    encoder = build_encoder(d_state, f"{files['D']} (as the encoder)")
    if (encoder.resolution, encoder.ch) != (g.resolution, g.ch):
        raise CheckpointError(f"{files[generator].name} ({g.resolution} px, ch={g.ch}) and {files['D'].name} "
                              f"({encoder.resolution} px, ch={encoder.ch}) are not from one BigGAN")
    adaptors = build_adaptors(encoder, g, resolutions, identity)
    network = DeepI2I(encoder, adaptors, g, fusion_weights)
    state_file = folder / "state_dict.pth"
    optim = {}
    if optimizers:
        g_optim, d_optim = _read_optional(folder, "G_optim.pth"), _read_optional(folder, "D_optim.pth")
        optim = {k: v for k, v in {"G": g_optim, "D": d_optim, "E1": d_optim}.items() if v is not None}
    return DeepI2IWeights(network, d, check_class_names(class_names, g.num_classes, str(files[generator])),
                          read_training_state(state_file) if state_file.is_file() else None, optim)


def _truncated_classes(state: Mapping, n: int) -> dict:
    """Keep the first ``n`` rows of the class embeddings (G's ``shared``, D's ``embed`` and its SN vector)."""
    out = dict(state)
    for key in ("shared.weight", "embed.weight"):
        if key in out:
            out[key] = out[key][:n].clone()
    if "embed.u0" in out:
        out["embed.u0"] = out["embed.u0"][:, :n].clone()
    return out


# ----------------------------------------------------------------------------- our file
def _cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_deepi2i_translator(path: str | os.PathLike, network: DeepI2I, class_names: Sequence[str] | None = None,
                            config: dict | None = None) -> Path:
    """Our one-file DeepI2I translator (give the network with the EMA generator); written atomically."""
    names = check_class_names(class_names, network.generator.num_classes, "the generator")
    a = network.adaptors
    return atomic_save({
        "format": FORMAT,
        "encoder": _cpu_state(network.encoder), "adaptors": _cpu_state(a), "generator": _cpu_state(network.generator),
        "architecture": {"adaptor_resolutions": list(a.resolutions), "adaptor_in_channels": list(a.in_channels),
                         "adaptor_out_channels": list(a.out_channels), "adaptor_identity": list(a.identity),
                         "adaptor_repeat": list(a.repeat),
                         "fusion_weights": {int(k): float(v) for k, v in network.fusion_weights.items()}},
        "class_names": names, "config": _plain(config or {}),
    }, path)


def load_deepi2i_translator_file(path: str | os.PathLike) -> tuple[DeepI2I, list[str] | None, dict]:
    """(network, class names or None, config) from our file."""
    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format", "no format key") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a gpunit DeepI2I translator ({FORMAT}), found {found}")
    arch = obj["architecture"]
    g = build_generator(obj["generator"], f"{path} [generator]")
    encoder = build_encoder(obj["encoder"], f"{path} [encoder]")
    adaptors = Adaptors(arch["adaptor_resolutions"], arch["adaptor_in_channels"], arch["adaptor_out_channels"],
                        arch["adaptor_identity"], repeat=arch.get("adaptor_repeat", []))
    load_into(adaptors, obj["adaptors"], "DeepI2I adaptor set", f"{path} [adaptors]")
    try:
        network = DeepI2I(encoder, adaptors, g, {int(k): v for k, v in arch["fusion_weights"].items()})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    names = obj.get("class_names")
    return network.eval(), (list(names) if names is not None else None), obj.get("config") or {}


def peek_format(path: str | os.PathLike) -> str | None:
    """The ``format`` of a gpunit file without reading its tensors (memory-mapped); None if it has none
    or cannot be read this way (the full loaders then report what is wrong)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file, unsafe or corrupt: let the real loader explain
        return None
    return obj.get("format") if isinstance(obj, dict) and isinstance(obj.get("format"), str) else None


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
        "format": BIGGAN_FORMAT, "generator": _cpu_state(generator), "discriminator": _cpu_state(discriminator),
        "generator_ema": _cpu_state(generator_ema) if generator_ema is not None else None,
        "optimizers": dict(optimizers or {}), "class_names": names, "step": int(step), "config": _plain(config or {}),
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
    files = {name: _need(folder, name, "BigGAN release", f"get {RELEASE_HINT}") for name in (g_name, "D.pth")}
    optim = {}
    if optimizers:
        optim = {k: v for k, v in {"G": _read_optional(folder, "G_optim.pth"),
                                   "D": _read_optional(folder, "D_optim.pth")}.items() if v is not None}
    state_file = folder / "state_dict.pth"
    state = read_training_state(state_file) if state_file.is_file() else None
    return BigGANStates(read_checkpoint(files[g_name]), read_checkpoint(files["D.pth"]), None, optim,
                        int((state or {}).get("itr", 0) or 0), str(folder))
