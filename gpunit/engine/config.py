"""Typed configuration for every method: the YAML loader and the training settings all trainers share.

A config is a dataclass of sections (``model``, ``data``, ``loss``, ``train``...) with typed defaults;
a YAML file sets only what differs from them, and ``base:`` names another YAML file (relative to the
including file) whose values are applied first. Command-line overrides (``--set train.lr=2e-4
model.image_size=64``) come last. Unknown keys and values of the wrong type raise :class:`ConfigError`
with the key, the file and a did-you-mean hint. The resolved config is written next to every run.

A config folder may hold ``moved.yaml`` (``{old sub-folder: new sub-folder}``): a path under a moved
folder still loads, with a warning naming its new place, for one release.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

C = TypeVar("C")
log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    iterations: int = 45000
    batch_size: int = 16           # images per update (over all processes of a torchrun job)
    accumulate: int = 1            # micro-batches per update: batch_size / accumulate images per forward pass
                                   # (less memory, same update; gpunit/engine/accumulate.py)
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    log_every: int = 50            # scalars to TensorBoard / JSONL
    image_every: int = 500         # image grids
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "auto"           # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"
    precision: str = "fp32"        # "fp32", "bf16", "fp16" (autocast; fp16 adds loss scaling) or "auto" (the
                                   # fastest, timed on this run's step before it starts: engine/precision_probe.py)
    channels_last: bool | str = False  # NHWC memory format; "auto": timed like precision
    compile: bool = False          # torch.compile the networks (slow start, faster steps)

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
    _check_counts(cfg)
    return cfg


# counts of TrainConfig that must be at least 1: `train.iterations=0` would export untrained weights
_POSITIVE = ("iterations", "batch_size", "accumulate", "log_every", "image_every", "checkpoint_every",
             "keep_checkpoints")


def _check_counts(cfg: Any) -> None:
    for section in dataclasses.fields(cfg):
        train = getattr(cfg, section.name)
        if isinstance(train, TrainConfig):
            for key in _POSITIVE:
                if getattr(train, key) < 1:
                    raise ConfigError(f"'{section.name}.{key}' must be a positive number, got {getattr(train, key)}")


def moved_config(path: Path) -> Path | None:
    """Where a config file that is not at ``path`` went: the first folder above it with a ``moved.yaml``
    whose ``{old sub-folder: new sub-folder}`` covers it; None when nothing says it moved."""
    path = Path(path)
    for folder in path.parents:
        table = folder / "moved.yaml"
        if not table.is_file():
            continue
        rest = path.relative_to(folder) if not path.is_absolute() else path.resolve().relative_to(folder.resolve())
        for old, new in (yaml.safe_load(table.read_text()) or {}).items():
            if rest.parts[:len(Path(old).parts)] == Path(old).parts:
                return folder / new / Path(*rest.parts[len(Path(old).parts):])
    return None


def _existing(path: Path) -> Path:
    """``path``, or its new place with a warning when a ``moved.yaml`` says it moved (see module doc)."""
    if path.is_file():
        return path
    new = moved_config(path)
    if new is not None and new.is_file():
        log.warning("config %s moved to %s; use the new path (the old one goes in the next release)", path, new)
        return new
    return path


def _read_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The values of ``path`` and of its ``base:`` files, the farthest base first."""
    path = _existing(path)
    if path.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"cycle in 'base:' chain: {names}")
    values = _read_yaml(path)
    base = values.pop("base", None)
    if base is None:
        return [(str(path), values)]
    if not isinstance(base, str):
        raise ConfigError(f"'base' in {path} must be a file name, got {base!r}")
    base_path = _existing(path.parent / base)  # relative to the including file, not to the working directory
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
            # YAML 1.1 reads `{16:1}` as {961: None} (base 60): the usual cause of a dict of None values
            spaces = (" (write {16: 1, 8: 1} with a space after each colon: YAML reads 16:1 as one base-60 number)"
                      if isinstance(value, dict) and value and all(v is None for v in value.values()) else "")
            raise ConfigError(f"'{dotted}' in {source} expects {_type_name(expected)}, got {value!r}{spaces}") from None


def _coerce(value: Any, expected: Any) -> Any:
    """``value`` as type ``expected``; TypeError when it is not one."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (types.UnionType, typing.Union):  # `X | None`, or `bool | str` (true, false or "auto")
        if value is None and type(None) in args:
            return None
        for inner in [a for a in args if a is not type(None)]:
            try:
                return _coerce(value, inner)
            except TypeError:
                pass
        raise TypeError
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        # YAML reads a key such as 1001 as an int; folder names are strings (and widths ints)
        return {_coerce(str(k) if type(k) is int and args[0] is str else k, args[0]): _coerce(v, args[1])
                for k, v in value.items()}
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


def flat_config(values: dict, prefix: str = "") -> dict:
    """Nested config dicts as ``{"train.lr": 1e-4, ...}``."""
    out = {}
    for key, value in values.items():
        out.update(flat_config(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


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
