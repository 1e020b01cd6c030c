"""DeepI2I weights: the published weights folder, a model built from a BigGAN, and our own file.

Published DeepI2I folder (what the official ``utils.save_weights`` writes; ``_<suffix>`` such as
``_copy0`` or ``_best1`` when given): ``G.pth``, ``E1.pth``, ``A1.pth`` and optionally ``G_ema.pth``,
``D.pth``, ``state_dict.pth`` (``itr``, ``config``...) and ``{G,D,E1,A1}_optim.pth`` (Adam states; entry
i belongs to the i-th published parameter). All are state dicts with the published key names, read
through :mod:`gpunit.biggan.weights` (which also reads BigGAN-PyTorch's release).

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
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpunit.biggan.models import BigGANDiscriminator
from gpunit.biggan.weights import (
    RELEASE_HINT,
    biggan_release_folder,
    build_discriminator,
    build_generator,
    build_network,
    check_class_names,
    check_same_classes,
    cpu_state,
    need_file,
    plain_values,
    read_optional,
    read_training_state,
    state_indices,
    trunk_args,
)
from gpunit.deepi2i.models import (
    PRETRAINED_FUSION_WEIGHTS,
    SCRATCH_FUSION_WEIGHTS,
    Adaptors,
    DeepI2I,
    Encoder,
    build_adaptors,
)
from gpunit.engine.checkpoints import CheckpointError, atomic_save, load_into, read_checkpoint

log = logging.getLogger(__name__)

FORMAT = "gpunit-deepi2i-translator-v1"
UNUSED_HEADS = ("linear.", "embed.")  # the published E1/A1 heads that no translation uses
PUBLISHED_A1_RESOLUTIONS = (32, 16, 8, 4)  # the official A1 reads feature 32 / 2**i with block i


def published_adaptor_args(state: Mapping) -> dict:
    """Adaptors arguments from a published A1 state dict (blocks 0..3 at 32, 16, 8, 4)."""
    blocks = state_indices(state, r"blocks\.(\d+)\.0\.conv1\.weight")
    if blocks != list(range(len(PUBLISHED_A1_RESOLUTIONS))):
        raise ValueError(f"{len(blocks)} adaptor blocks, the published A1 has {len(PUBLISHED_A1_RESOLUTIONS)}")
    return dict(resolutions=list(PUBLISHED_A1_RESOLUTIONS),
                in_channels=[state[f"blocks.{i}.0.conv1.weight"].shape[1] for i in blocks],
                out_channels=[state[f"blocks.{i}.0.conv2.weight"].shape[0] for i in blocks])


# ----------------------------------------------------------------------------- building
def build_encoder(state: Mapping, source: str = "<state dict>") -> Encoder:
    """The encoder from an E1 or D state dict (their unused ``linear``/``embed`` heads are dropped)."""
    return build_network(Encoder, trunk_args, state, "DeepI2I encoder (BigGAN discriminator trunk)", source,
                         UNUSED_HEADS, ortho_init=False)


def build_published_adaptors(state: Mapping, source: str = "<state dict>") -> Adaptors:
    return build_network(Adaptors, published_adaptor_args, state, "DeepI2I adaptor set (A1)", source, UNUSED_HEADS)


# ----------------------------------------------------------------------------- files
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
    files = {name: need_file(folder, _stem(name, suffix), "DeepI2I weights", hint) for name in (generator, "E1", "A1")}
    g = build_generator(read_checkpoint(files[generator]), str(files[generator]))
    encoder = build_encoder(read_checkpoint(files["E1"]), str(files["E1"]))
    adaptors = build_published_adaptors(read_checkpoint(files["A1"]), str(files["A1"]))
    d = None
    if discriminator:
        d_file = need_file(folder, _stem("D", suffix), "DeepI2I discriminator", "it is only needed for training")
        d = build_discriminator(read_checkpoint(d_file), str(d_file))
        check_same_classes(g, d, files[generator].name, d_file.name)
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
            found = read_optional(folder, _stem(f"{name}_optim", suffix))
            if found is not None:
                optim[name] = found
    return DeepI2IWeights(network.eval(), d, check_class_names(class_names, g.num_classes, str(files[generator])),
                          training_state, optim)


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
    files = {name: need_file(folder, f"{name}.pth", "BigGAN release", f"get {RELEASE_HINT}") for name in (generator, "D")}
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
    check_same_classes(g, d, files[generator].name, files["D"].name)
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
        g_optim, d_optim = read_optional(folder, "G_optim.pth"), read_optional(folder, "D_optim.pth")
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
def save_deepi2i_translator(path: str | os.PathLike, network: DeepI2I, class_names: Sequence[str] | None = None,
                            config: dict | None = None) -> Path:
    """Our one-file DeepI2I translator (give the network with the EMA generator); written atomically."""
    names = check_class_names(class_names, network.generator.num_classes, "the generator")
    a = network.adaptors
    return atomic_save({
        "format": FORMAT,
        "encoder": cpu_state(network.encoder), "adaptors": cpu_state(a), "generator": cpu_state(network.generator),
        "architecture": {"adaptor_resolutions": list(a.resolutions), "adaptor_in_channels": list(a.in_channels),
                         "adaptor_out_channels": list(a.out_channels), "adaptor_identity": list(a.identity),
                         "adaptor_repeat": list(a.repeat),
                         "fusion_weights": {int(k): float(v) for k, v in network.fusion_weights.items()}},
        "class_names": names, "config": plain_values(config or {}),
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


