"""Typed configuration for both training stages.

A config file is YAML that sets only what differs from the defaults below; ``base:`` names
another YAML file (relative to the including file) whose values are applied first.
Command-line overrides (``--set train.lr=2e-4 model.image_size=64``) come last. Unknown
keys and values of the wrong type raise :class:`ConfigError` with the key, the file and a
did-you-mean hint. The resolved config is written next to every run.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

C = TypeVar("C")


# ----------------------------------------------------------------------------- Stage I
@dataclass
class Stage1ModelConfig:
    image_size: int = 256          # training resolution; 64 and 128 drop stride-2 stages
    content_size: int = 8          # spatial size of the 1-channel content feature
    base_channels: int = 64        # width of the first encoder stage
    max_channels: int = 512        # channel cap of every stage
    num_domains: int = 0           # domain labels; 0 = number of paired + unpaired class folders
    label_dim: int = 128           # domain-label embedding size
    content_noise: float = 0.2     # std of the Gaussian noise added to Ec(x) (Sec. 3.2)


@dataclass
class Stage1DataConfig:
    paired_root: str = "data/synthetic/pairs"           # <root>/<label>_<name>/<k>.png, same k = same latent
    paired_mask_root: str = "data/synthetic/pairs_mask"  # same layout; the instance masks
    unpaired_root: str | None = "data/synthetic/unpaired"  # real images for the unary losses (None: paired only)
    unpaired_mask_root: str | None = "data/synthetic/unpaired_mask"
    test_root: str | None = "data/synthetic/pairs_test"  # held-out pairs: content-feature check at the end
    images_per_domain: int = 600   # first n images of each class folder of both roots; 0 = all
    # Class folders (by name, in either root) that take another count, e.g. {1001_face: 29000}; 0 = all.
    domain_counts: dict[str, int] = field(default_factory=dict)
    load_size: int = 286           # resize to this, then random-crop image_size (0 = no resize/crop jitter)
    flip: bool = True              # random horizontal flip of the whole sample
    num_workers: int = 2


@dataclass
class Stage1LossConfig:
    lambda_arec: float = 1.0       # L_arec: L2 + perceptual appearance reconstruction
    lambda_srec: float = 5.0       # lambda_s in L_srec (Eq. 2)
    lambda_fdist: float = 1.0      # content-feature distance term of L_dis
    lambda_sdist: float = 5.0      # lambda_s in the swapped-shape term of L_dis
    lambda_cls: float = 1.0        # domain classification through gradient reversal (L_reg)
    lambda_reg: float = 0.001      # lambda_r: L2 norm of the content feature (L_reg)
    perceptual: str = "vgg19"      # "vgg19" or "none"
    vgg_weights: str | None = None  # path to vgg19-dcbb9e9d.pth (default: torch hub cache)
    style_flip_prob: float = 0.5   # probability of flipping the style-encoder input


@dataclass
class TrainConfig:
    iterations: int = 45000
    batch_size: int = 16           # images per update (over all processes of a torchrun job)
    accumulate: int = 1            # micro-batches per update: batch_size / accumulate images per forward pass
                                   # (less memory, same update; gpunit/train/accumulate.py)
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    log_every: int = 50            # scalars to TensorBoard / JSONL
    image_every: int = 500         # image grids
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "auto"           # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"
    precision: str = "fp32"        # "fp32", "bf16", "fp16" (autocast; fp16 adds loss scaling) or "auto" (bf16
                                   # where the device runs it fast: CUDA with bf16 tensor cores, CPUs with AMX)
    channels_last: bool = False    # NHWC memory format (faster convolutions on recent GPUs)
    compile: bool = False          # torch.compile the networks (slow start, faster steps)


@dataclass
class Stage1Config:
    name: str = "stage1"
    out_dir: str = "runs"          # the run folder is <out_dir>/<name>
    model: Stage1ModelConfig = field(default_factory=Stage1ModelConfig)
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    loss: Stage1LossConfig = field(default_factory=Stage1LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------- Stage II
@dataclass
class Stage2ModelConfig:
    image_size: int = 256
    content_size: int = 8
    base_channels: int = 64        # content encoder and generator width
    max_channels: int = 512
    style_base_channels: int = 64  # Stage II style encoder
    style_dim: int = 256
    style_hidden: int = 64         # the style MLP's bottleneck (256-64-256-256)
    disc_base_channels: int = 64
    disc_max_channels: int = 512
    disc_spectral_norm: bool = True  # false: R1 alone regularises D (the built-in demo: README, "Shape")
    skip_resolutions: list[int] = field(default_factory=lambda: [16, 32])  # dynamic skip layers
    noise_dim: int = 128           # style sampler input
    sampler_hidden: int = 128


@dataclass
class Stage2DataConfig:
    source: list[str] = field(default_factory=list)   # folders of the source domain
    target: list[str] = field(default_factory=list)   # folders of the target domain
    source_counts: list[int] = field(default_factory=list)  # images per folder (empty or 0 = all)
    target_counts: list[int] = field(default_factory=list)
    load_size: int = 286           # resize, then random-crop image_size (0 = resize to image_size only)
    flip: bool = True
    same_crop: bool = False        # x and y share one crop and flip, as published (default: independent draws)
    num_workers: int = 2


@dataclass
class Stage2LossConfig:
    lambda_adv: float = 1.0
    lambda_con: float = 1.0        # lambda_1, L_con (Eq. 5)
    lambda_sty: float = 50.0       # lambda_2, L_sty (Eq. 4)
    lambda_msk: float = 1.0        # lambda_3, L_msk (Eq. 6)
    lambda_rec: float = 1.0        # lambda_4, L_rec
    lambda_r1: float = 1.0         # R1 penalty on real images
    lambda_id: float = 0.0         # identity loss (faces); needs identity_weights
    style_layer: int = 4           # discriminator layer whose channel means are f_D
    use_allskip: bool = False      # dynamic skip connections also for the reconstruction
    flip_style: bool = True        # random horizontal flip of the style image (not_flip_style = False)
    perceptual: str = "vgg19"
    vgg_weights: str | None = None
    identity_weights: str | None = None  # model_ir_se50.pth


@dataclass
class SamplerConfig:
    epochs: int = 0                # 0 = the published schedule: 2,000,000 / number of style codes
    max_epochs: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    mitigate_style_bias: bool = False  # oversample styles far from the mean
    augment: bool = True           # codes of target images with the training crop and flip, fresh at each fit
                                   # (published); false: plain resize to image_size
    warm_start: bool = False       # refit the previous sampler instead of a new one at each checkpoint


@dataclass
class Stage2TrainConfig(TrainConfig):
    iterations: int = 75000
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    image_every: int = 1000
    reuse_translation_for_d: bool = False  # D step reuses the G step's y_hat (faster; the paper re-translates)


@dataclass
class Stage2Config:
    name: str = "stage2"
    out_dir: str = "runs"
    content_encoder: str = "checkpoints/content_encoder.pt"  # Stage I output (ours or published)
    train_content_encoder: bool = False  # ablation: no prior, Ec trained from scratch with G
    model: Stage2ModelConfig = field(default_factory=Stage2ModelConfig)
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    loss: Stage2LossConfig = field(default_factory=Stage2LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: Stage2TrainConfig = field(default_factory=Stage2TrainConfig)


# ----------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A config file, ``base:`` chain or ``--set`` override the user must fix; the message is one line."""


def load_config(path: str | Path | None, cls: type[C], overrides: Sequence[str] = ()) -> C:
    """Build a fresh ``cls`` instance: defaults, then ``path`` (with its ``base:`` chain), then ``overrides``.

    ``path=None`` means defaults plus overrides. Overrides look like ``"train.lr=2e-4"``; the value is
    parsed as YAML (``data.source=[a,b]`` gives a list).
    """
    cfg = cls()  # default_factory gives every instance its own lists and sections
    valid_keys = _dotted_keys(cls)
    if path is not None:
        for source, values in _read_with_bases(Path(path)):
            _apply(cfg, values, source, valid_keys)
    for override in overrides:
        _apply(cfg, _parse_override(override, cls), "--set", valid_keys)
    return cfg


def _read_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The values of ``path`` and of its ``base:`` files, the farthest base first."""
    if path.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"cycle in 'base:' chain: {names}")
    values = _read_yaml(path)
    base = values.pop("base", None)
    if base is None:
        return [(str(path), values)]
    if not isinstance(base, str):
        raise ConfigError(f"'base' in {path} must be a file name, got {base!r}")
    base_path = path.parent / base  # relative to the including file, not to the working directory
    if not base_path.is_file():
        raise ConfigError(f"base file '{base}' named in {path} not found (looked for {base_path})")
    return _read_with_bases(base_path, (*chain, path.resolve())) + [(str(path), values)]


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (check the --config path)")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        where = f" at line {err.problem_mark.line + 1}" if err.problem_mark else ""
        raise ConfigError(f"cannot parse {path}: {err.problem}{where}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse {path}: {err}".replace("\n", " ")) from err
    if values is None:  # an empty file sets nothing
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of keys, got {type(values).__name__}")
    return values


def _parse_override(text: str, cls: type) -> dict:
    """``"train.lr=2e-4"`` -> ``{"train": {"lr": "2e-4"}}`` (the string is converted by :func:`_coerce`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.lr=2e-4), got '{text}'")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse the value of --set {text}: {err}".replace("\n", " ")) from err
    # `--set name=2024` means the string "2024" when the field holds a string
    if _field_type(cls, key) in (str, str | None) and value is not None and not isinstance(value, str):
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _apply(cfg: Any, values: Any, source: str, valid_keys: list[str], prefix: str = "") -> None:
    """Check ``values`` against the fields of the dataclass ``cfg`` and set them on it (deep merge)."""
    if values is None:  # a section whose keys are all commented out
        return
    if not isinstance(values, dict):
        raise ConfigError(f"'{prefix[:-1]}' in {source} is a section and needs a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown key '{dotted}' in {source}; {_hint(dotted, valid_keys, prefix)}")
        expected = hints[key]
        if dataclasses.is_dataclass(expected):
            _apply(getattr(cfg, key), value, source, valid_keys, prefix=f"{dotted}.")
            continue
        try:
            setattr(cfg, key, _coerce(value, expected))
        except TypeError:
            raise ConfigError(f"'{dotted}' in {source} expects {_type_name(expected)}, got {value!r}") from None


def _coerce(value: Any, expected: Any) -> Any:
    """``value`` as type ``expected``; TypeError when it is not one."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (types.UnionType, typing.Union):  # only `X | None` occurs
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        # YAML reads a key such as 1001 as an int; folder names are strings
        return {_coerce(str(k) if type(k) is int else k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        return [_coerce(item, args[0]) for item in value]  # a new list: never shared with the source
    if expected is float:
        if isinstance(value, str):  # PyYAML reads 2e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if expected is int and isinstance(value, bool):  # bool is a subclass of int
        raise TypeError
    if expected in (int, bool, str) and isinstance(value, expected):
        return value
    raise TypeError


def _type_name(expected: Any) -> str:
    return str(expected) if typing.get_origin(expected) else expected.__name__


def _field_type(cls: type, dotted: str) -> Any:
    """The annotated type of ``a.b.c`` in ``cls``, or None when there is no such key."""
    for part in dotted.split("."):
        if not (dataclasses.is_dataclass(cls) and part in {f.name for f in dataclasses.fields(cls)}):
            return None
        cls = typing.get_type_hints(cls)[part]
    return cls


def _dotted_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, expected in typing.get_type_hints(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(expected):
            keys += _dotted_keys(expected, f"{prefix}{name}.")
    return keys


def _hint(dotted: str, valid_keys: list[str], prefix: str) -> str:
    leaf = dotted.rpartition(".")[2]
    siblings = [k[len(prefix):] for k in valid_keys if k.startswith(prefix) and "." not in k[len(prefix):]]
    match = [prefix + k for k in difflib.get_close_matches(leaf, siblings, n=1)]
    if not match:  # a key in the wrong section, e.g. 'model.lr' for 'train.lr'
        match = [k for k in valid_keys if k.rpartition(".")[2] == leaf]
    if match:
        return "did you mean " + " or ".join(f"'{k}'" for k in match) + "?"
    return f"valid keys{f' in {prefix[:-1]}' if prefix else ''}: {', '.join(siblings)}"


# ----------------------------------------------------------------------------- saving
def config_to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts, lists and scalars (a deep copy)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML that :func:`load_config` reads back to an equal object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# resolved {type(cfg).__name__}; reuse it with --config {path.name}\n"
    text += yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a crash never leaves half a config next to a run


# ----------------------------------------------------------------------------- command line
def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    """Add ``--config PATH``, ``--set KEY=VALUE ...`` and ``--resume [PATH]`` to ``parser``.

    ``--resume`` alone gives ``args.resume == "auto"`` (the latest checkpoint of the run folder;
    the trainer resolves it); ``--resume PATH`` names a checkpoint; absent it is None. Use with::

        try:
            cfg = config_from_args(args, Stage2Config)
        except ConfigError as err:
            parser.error(str(err))  # one line + usage, exit status 2
    """
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="PATH", default=default_config,
                       help="YAML file with the values that differ from the defaults"
                       + (f" (default: {default_config})" if default_config else ""))
    group.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                       help="override config values, e.g. --set train.lr=2e-4 data.source=[a,b]")
    group.add_argument("--resume", metavar="PATH", nargs="?", const="auto", default=None,
                       help="resume from a checkpoint; without PATH, the latest one of the run folder")


def config_from_args(args: argparse.Namespace, cls: type[C]) -> C:
    """The config named by ``args.config`` with ``args.set`` applied; raises :class:`ConfigError`."""
    return load_config(args.config, cls, args.set or ())
