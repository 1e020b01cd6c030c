"""Checkpoint files of every method: atomic writes, safe reads, strict loading, and a run's checkpoints.

Every file holds only tensors and plain Python values and is read with ``torch.load(weights_only=True)``;
writes go to a temp file in the same folder, are fsynced and renamed, so a crash never leaves half a file.
A method's own formats (what it exports, the published files it loads) live in its ``weights`` module.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

CHECKPOINT_FORMAT = "gpunit-train-v1"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says what it looks like and what is off."""


def key_summary(keys, limit: int = 6) -> str:
    """The first ``limit`` keys, sorted, and how many more there are (for error messages)."""
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_into(module: nn.Module, state: dict, what: str, source: str) -> nn.Module:
    """``module.load_state_dict(state)`` with one clear error for missing/unexpected/misshaped keys."""
    own = module.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    misshaped = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {key_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {key_summary(unexpected)}")
        if misshaped:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(misshaped)[:4]))
        raise CheckpointError(f"{source}: does not fit a {what}; " + "; ".join(parts))
    module.load_state_dict(state)
    return module


def read_checkpoint(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` with clear errors for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/unsafe files
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode any new file would
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def peek_format(path: str | os.PathLike) -> str | None:
    """The ``format`` of a gpunit file without reading its tensors (memory-mapped); None if it has none
    or cannot be read this way (the full loaders then report what is wrong)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file, unsafe or corrupt: let the real loader explain
        return None
    return obj.get("format") if isinstance(obj, dict) and isinstance(obj.get("format"), str) else None


# ----------------------------------------------------------------------------- a run's checkpoints
class CheckpointManager:
    """``<run_dir>/checkpoints/step-<step:07d>.pt``: atomic writes, only the newest ``keep`` kept."""

    def __init__(self, run_dir: str | Path, keep: int):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {keep}")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def save(self, state: dict, step: int) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = atomic_save(state, self.dir / f"step-{step:07d}.pt")  # never a truncated checkpoint
        for old in self._all()[: -self.keep]:
            old.unlink()
        return path

    def _all(self) -> list[Path]:
        """Checkpoints sorted by step (temp files are skipped by the name pattern)."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self._all()
        return found[-1] if found else None

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint (from its name), None without one."""
        latest = self.latest()
        return None if latest is None else int(_CHECKPOINT_NAME.match(latest.name).group(1))

    @staticmethod
    def load(path: str | Path) -> dict:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
            raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt, truncated or not a "
                                  f"torch checkpoint of tensors and plain values ({err}); delete it to "
                                  "resume from the previous one") from err
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
        return state
