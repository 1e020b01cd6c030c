"""GP-UNIT's network weights: our files and the authors' published checkpoints, loaded and exported.

Published files (GP-UNIT repository) and how they are recognised:
- content encoder (``content_encoder.pt``): a bare state dict with ``layer1.0.conv.weight_orig``...
- Stage II translator (``cat2dog.pt`` ...): ``{"g_ema": generator state, "sampler": sampler state}``
- Stage I prior distillation (``prior_distillation-*.pt``): ``{"ae_ema": auto-encoder state, ...}``

They use the old ``torch.nn.utils.spectral_norm`` keys (``weight_orig``, ``weight_u``,
``weight_v``); our networks use ``torch.nn.utils.parametrizations.spectral_norm``. Channel widths
and depths are read off the tensor shapes, so narrower or wider files in the published format load
too. Everything is loaded with ``torch.load(weights_only=True)`` and written atomically.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from gpunit.engine.checkpoints import CheckpointError, atomic_save, key_summary, load_into, read_checkpoint
from gpunit.gp_unit.models import ContentEncoder, Discriminator, Generator, PriorAutoEncoder, StyleSampler

_OLD_TO_NEW = {".weight_orig": ".parametrizations.weight.original",
               ".weight_u": ".parametrizations.weight.0._u",
               ".weight_v": ".parametrizations.weight.0._v"}


def _rename_suffixes(state: dict, renames: dict[str, str]) -> dict:
    out = {}
    for key, value in state.items():
        suffix = next((old for old in renames if key.endswith(old)), None)
        out[key if suffix is None else key[: -len(suffix)] + renames[suffix]] = value
    return out


def published_to_ours(state: dict) -> dict:
    """Rename old spectral-norm keys to the parametrization keys of our modules."""
    return _rename_suffixes(state, _OLD_TO_NEW)


def ours_to_published(state: dict) -> dict:
    """Inverse of :func:`published_to_ours`: our state dict (on the CPU) with the published key names."""
    state = {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in state.items()}
    return _rename_suffixes(state, {new: old for old, new in _OLD_TO_NEW.items()})


def _weight(state: dict, prefix: str) -> torch.Tensor:
    for suffix in (".parametrizations.weight.original", ".weight"):
        if prefix + suffix in state:
            return state[prefix + suffix]
    raise KeyError(prefix)


def _indices(state: dict, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m})


# ---------------------------------------------------------------- width inference from shapes
def content_encoder_args(state: dict, prefix: str = "", content_size: int = 8) -> dict:
    layers = _indices(state, re.escape(prefix) + r"layer(\d+)\.")
    outs = [_weight(state, f"{prefix}layer{k}.1.conv").shape[0] for k in layers[:-1]]
    return dict(image_size=content_size * 2 ** (len(layers) - 1), content_size=content_size,
                base_channels=outs[0], max_channels=max(outs))


def generator_args(state: dict, content_size: int = 8) -> dict:
    layers = _indices(state, r"model\.(\d+)\.")
    outs = [_weight(state, f"model.{i}.reslayer.conv_1").shape[0] for i in layers]
    skips = [i for i in layers if f"model.{i}.skiplayer.trans.weight" in state]
    style_convs = _indices(state, r"style_encoder\.model\.(\d+)\.weight")
    mlp = _indices(state, r"style_encoder\.mlp\.(\d+)\.weight")
    return dict(image_size=content_size * 2 ** (len(layers) - 1), content_size=content_size,
                base_channels=outs[-1], max_channels=max(outs),
                style_dim=state[f"style_encoder.mlp.{mlp[-1]}.weight"].shape[0],
                style_base_channels=state[f"style_encoder.model.{style_convs[0]}.weight"].shape[0],
                style_hidden=state[f"style_encoder.mlp.{mlp[0]}.weight"].shape[0],
                skip_resolutions=[content_size * 2 ** i for i in skips])


def discriminator_args(state: dict) -> dict:
    blocks = _indices(state, r"model\.(\d+)\.conv_0\.")
    outs = [_weight(state, f"model.{i}.conv_1").shape[0] for i in blocks]
    return dict(image_size=2 ** (len(blocks) + 2), base_channels=_weight(state, "model.0").shape[0],
                max_channels=max(outs), spectral_norm="model.0.parametrizations.weight.original" in state)


def sampler_args(state: dict) -> dict:
    return dict(noise_dim=state["lin1.weight"].shape[1], hidden_dim=state["lin1.weight"].shape[0],
                style_dim=state["lin_out.weight"].shape[0])


def autoencoder_args(state: dict, content_size: int = 8) -> dict:
    args = content_encoder_args(state, "contentE.", content_size)
    args.update(num_domains=state["embed.weight"].shape[0], label_dim=state["embed.weight"].shape[1])
    return args


# ---------------------------------------------------------------- building + strict loading
def build_from_state(kind: str, state: dict, source: str = "<state dict>", content_size: int = 8) -> nn.Module:
    """Build the network ``kind`` with widths read from ``state`` (published or our key names) and load it."""
    state = published_to_ours(state)
    factories = {
        "content_encoder": (ContentEncoder, lambda s: content_encoder_args(s, "", content_size)),
        "generator": (Generator, lambda s: generator_args(s, content_size)),
        "discriminator": (Discriminator, discriminator_args),
        "sampler": (StyleSampler, sampler_args),
        "autoencoder": (PriorAutoEncoder, lambda s: autoencoder_args(s, content_size)),
    }
    cls, infer = factories[kind]
    try:
        args = infer(state)
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointError(f"{source}: does not look like a {kind.replace('_', ' ')} "
                              f"(could not read its layer sizes: {err!r}); first keys: {key_summary(state)}") from None
    return load_into(cls(**args), state, kind.replace("_", " "), source)


def detect_kind(obj) -> str:
    """What a loaded checkpoint object is: 'gpunit-translator', 'published-stage2',
    'published-stage1', 'content_encoder', 'gpunit-train' or 'unknown'."""
    if not isinstance(obj, dict):
        return "unknown"
    fmt = obj.get("format")
    if isinstance(fmt, str):
        return fmt.rsplit("-v", 1)[0]
    if "g_ema" in obj:
        return "published-stage2"
    if "ae_ema" in obj:
        return "published-stage1"
    if any(k.startswith("layer1.0.conv.") for k in obj):
        return "content_encoder"
    return "unknown"


def load_content_encoder(path: str | os.PathLike, content_size: int = 8) -> ContentEncoder:
    """A content encoder from a published ``content_encoder.pt``, our Stage I export, or a
    published Stage I file (its ``ae_ema.contentE``)."""
    obj = read_checkpoint(path)
    kind = detect_kind(obj)
    if kind == "gpunit-content-encoder":
        return build_from_state("content_encoder", obj["state"], str(path), obj["content_size"])
    if kind == "gpunit-translator":
        return build_from_state("content_encoder", obj["content_encoder"], f"{path} [content_encoder]",
                                obj["content_size"])
    if kind == "published-stage1":
        state = {k[len("contentE."):]: v for k, v in obj["ae_ema"].items() if k.startswith("contentE.")}
        return build_from_state("content_encoder", state, str(path), content_size)
    if kind == "content_encoder":
        return build_from_state("content_encoder", obj, str(path), content_size)
    raise CheckpointError(f"{path}: expected a content encoder (a state dict with layer1.0.conv.* keys, "
                          f"or a gpunit content-encoder file); this looks like: {kind}, "
                          f"top-level keys: {key_summary(obj) if isinstance(obj, dict) else type(obj).__name__}")


def load_published_stage2(path: str | os.PathLike, content_size: int = 8) -> tuple[Generator, StyleSampler | None]:
    """The EMA generator and style sampler of a published Stage II file (``{"g_ema", "sampler"}``)."""
    obj = read_checkpoint(path)
    if detect_kind(obj) != "published-stage2":
        raise CheckpointError(f"{path}: expected a published Stage II file with keys 'g_ema' and 'sampler'; "
                              f"this looks like: {detect_kind(obj)}")
    generator = build_from_state("generator", obj["g_ema"], f"{path} [g_ema]", content_size)
    sampler = build_from_state("sampler", obj["sampler"], f"{path} [sampler]") if "sampler" in obj else None
    return generator, sampler


def load_published_stage1(path: str | os.PathLike, content_size: int = 8) -> PriorAutoEncoder:
    obj = read_checkpoint(path)
    if detect_kind(obj) != "published-stage1":
        raise CheckpointError(f"{path}: expected a published Stage I file with key 'ae_ema'; "
                              f"this looks like: {detect_kind(obj)}")
    return build_from_state("autoencoder", obj["ae_ema"], f"{path} [ae_ema]", content_size)


def export_published_content_encoder(encoder: ContentEncoder, path) -> Path:
    """The published ``content_encoder.pt`` format (a bare state dict with old spectral-norm keys); no checksum:
    the authors' code loads it with a strict ``load_state_dict``, which an extra key would break."""
    return atomic_save(ours_to_published(encoder.state_dict()), path, checksum=False)


def export_published_stage2(generator: Generator, sampler: StyleSampler, path) -> Path:
    """The published Stage II format: ``{"g_ema": ..., "sampler": ...}``."""
    return atomic_save({"g_ema": ours_to_published(generator.state_dict()),
                        "sampler": ours_to_published(sampler.state_dict())}, path)


def export_published_stage1(autoencoder: PriorAutoEncoder, path) -> Path:
    return atomic_save({"ae_ema": ours_to_published(autoencoder.state_dict())}, path)


# ---------------------------------------------------------------- our own formats
def save_content_encoder(encoder: ContentEncoder, path) -> Path:
    """Our content-encoder file (Stage I output): widths are read back from the tensor shapes."""
    return atomic_save({"format": "gpunit-content-encoder-v1", "content_size": encoder.content_size,
                        "state": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}, path)


def save_translator(path, content_encoder: ContentEncoder, generator: Generator,
                    sampler: StyleSampler | None = None, config: dict | None = None) -> Path:
    """Our exported translator: Ec + (EMA) G + style sampler, plus the run's resolved config."""
    cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
    return atomic_save({"format": "gpunit-translator-v1", "content_size": content_encoder.content_size,
                        "content_encoder": cpu(content_encoder), "generator": cpu(generator),
                        "sampler": cpu(sampler) if sampler is not None else None,
                        "config": config or {}}, path)


def load_translator_parts(path, content_encoder_path=None):
    """(content encoder, generator, sampler or None) from our translator file or a published
    Stage II file (which needs ``content_encoder_path``: the published files keep Ec apart)."""
    obj = read_checkpoint(path)
    kind = detect_kind(obj)
    if kind == "gpunit-translator":
        size = obj["content_size"]
        generator = build_from_state("generator", obj["generator"], f"{path} [generator]", size)
        sampler = (build_from_state("sampler", obj["sampler"], f"{path} [sampler]")
                   if obj.get("sampler") is not None else None)
        encoder = (load_content_encoder(content_encoder_path, size) if content_encoder_path else
                   build_from_state("content_encoder", obj["content_encoder"], f"{path} [content_encoder]", size))
    elif kind == "published-stage2":
        if content_encoder_path is None:
            raise CheckpointError(f"{path} is a published Stage II file, which does not hold the content encoder; "
                                  "also give the published content_encoder.pt (content_encoder=... / --content-encoder)")
        generator, sampler = load_published_stage2(path)
        encoder = load_content_encoder(content_encoder_path)
    else:
        raise CheckpointError(f"{path}: expected a gpunit translator (exported by train_stage2.py) or a published "
                              f"Stage II file (keys 'g_ema', 'sampler'); this looks like: {kind}")
    check_compatible(encoder, generator)
    return encoder, generator, sampler


def check_compatible(encoder: ContentEncoder, generator: Generator) -> None:
    """The generator's skip layers read Ec's maps at their resolution: sizes and channels must agree."""
    enc_channels = encoder.feature_channels
    ok = encoder.image_size == generator.image_size and all(
        enc_channels[i + 1] == generator.model[i].reslayer.conv_1.out_channels for i in generator.skip_layers)
    if not ok:
        raise CheckpointError(
            f"the content encoder ({encoder.image_size}px, feature channels {enc_channels}) does not fit the "
            f"generator ({generator.image_size}px, skip layers at {[generator.resolutions[i] for i in generator.skip_layers]}); "
            "use the content encoder the generator was trained with")
