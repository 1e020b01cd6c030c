"""Checkpoint files of every method: atomic writes, safe reads, strict loading, and a run's checkpoints.

Every file holds only tensors and plain Python values and is read with ``torch.load(weights_only=True)``;
writes go to a temp file in the same folder, are fsynced and renamed, so a crash never leaves half a file.
A file whose top level is a dict also records a checksum of its content (``"checksum"``), verified on every
read, so flipped bits or zeroed blocks are caught instead of trained on or exported. A write that fails (full
disk, read-only folder, quota) removes its temp file and raises :class:`SaveError`.
A method's own formats (what it exports, the published files it loads) live in its ``weights`` module.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

CHECKPOINT_FORMAT = "gpunit-train-v1"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")
_TEMP_NAME = re.compile(r"^\.step-\d+\.pt\..*\.tmp$")  # what a killed save leaves behind
CHECKSUM_KEY = "checksum"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says what it looks like and what is off."""


class SaveError(OSError):
    """A file could not be written (full disk, read-only folder, quota): its temp file is gone and the file
    it was to replace, if any, is unchanged. The message says what, where, and the last good checkpoint."""


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
    """``torch.load(path, weights_only=True)``, its checksum verified, with one clear error for a missing,
    unreadable, unsafe or corrupt file (:class:`CheckpointError`). The checksum key is removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/unsafe files
        raise CheckpointError(_unreadable(path, err)) from None
    return _verified(obj, path)


def _unreadable(path: Path, err: Exception) -> str:
    """Why torch could not load ``path``, in one line that never suggests ``weights_only=False``."""
    with open(path, "rb") as f:
        head = f.read(64)
    # torch files are zip archives ("PK") or, before torch 1.6, pickles (protocol byte 0x80)
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        looks = "a text file" if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "not a torch file"
        return (f"{path}: cannot be read, it is not a PyTorch checkpoint ({looks}, starting {head[:24]!r}); "
                "check the path: it should be a .pt file written by gpunit or the authors' code")
    unsafe = re.search(r"unsupported GLOBAL (\S+)", str(err))
    if unsafe:
        return (f"{path} holds a Python object ({unsafe.group(1)}), not only tensors and plain values; gpunit "
                "refuses to unpickle it because loading such a file can run arbitrary code. Use a file of weights "
                "(a state dict) from a source you trust, or re-export it as one")
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return (f"{path}: cannot be read as a PyTorch checkpoint: the file is corrupt or truncated "
            f"({type(err).__name__}: {first})")


def content_checksum(obj) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes and every plain value, in order."""
    h = hashlib.sha256()
    _feed(h, obj)
    return "sha256:" + h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    else:  # int, float (repr is exact), str, bool, None, torch.dtype...
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def _verified(obj, path: Path):
    """``obj`` without its checksum key, after checking it; a file without one (written before gpunit 0.2,
    or by other code) loads with a note."""
    if not (isinstance(obj, dict) and isinstance(obj.get(CHECKSUM_KEY), str)):
        log.info("note: %s has no checksum (written before gpunit 0.2 or by other code); it cannot be verified", path)
        return obj
    obj = dict(obj)
    recorded = obj.pop(CHECKSUM_KEY)
    if content_checksum(obj) != recorded:
        raise CheckpointError(f"{path} is corrupt: its content does not match the checksum recorded when it was "
                              "written (damaged on disk or in a copy); use another copy, or an earlier checkpoint")
    return obj


def atomic_save(obj, path: str | os.PathLike, checksum: bool = True) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A dict gets its content checksum (``checksum=False`` for a format whose readers reject extra keys). Raises
    :class:`SaveError` when the file system refuses the write; the temp file is then removed.
    """
    path = Path(path)
    if checksum and isinstance(obj, dict):
        content = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}  # a re-saved file's old one is replaced
        obj = {**content, CHECKSUM_KEY: content_checksum(content)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode any new file would
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        cause = _os_error(err)
        if cause is None:
            raise
        raise SaveError(_save_failed(path, cause)) from cause
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: torch.save turns a failed write into a RuntimeError raised from it."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def _save_failed(path: Path, err: OSError) -> str:
    reason = err.strerror or str(err)
    code = f" [{errno.errorcode[err.errno]}]" if err.errno in errno.errorcode else ""
    message = f"cannot write {path.name} in {path.parent}: {reason}{code}; the partial file was removed and " \
              "nothing saved before was changed"
    # a checkpoint sits in <run>/checkpoints/, an export in <run>/
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    last = CheckpointManager(folder, keep=1).latest()
    if last is not None:
        message += f". The last good checkpoint is {last}: make room (or fix the folder) and rerun the same " \
                   "command with --resume auto"
    return message


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
    """``<run_dir>/checkpoints/step-<step:07d>.pt``: atomic writes, only the newest ``keep`` kept (at least 2
    is wise: a resume falls back to the previous one when the newest is damaged)."""

    def __init__(self, run_dir: str | Path, keep: int):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {keep}")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def save(self, state: dict, step: int) -> Path:
        path = atomic_save(state, self.dir / f"step-{step:07d}.pt")  # never a truncated checkpoint
        for old in self._all()[: -self.keep]:
            old.unlink()
        for leftover in self.dir.iterdir():  # temp files of a save killed with -9 (this process holds the run)
            if _TEMP_NAME.match(leftover.name):
                leftover.unlink(missing_ok=True)
        return path

    def _all(self) -> list[Path]:
        """Checkpoints sorted by step (temp files are skipped by the name pattern)."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def all(self) -> list[Path]:
        """Every checkpoint, the newest first."""
        return self._all()[::-1]

    def latest(self) -> Path | None:
        found = self._all()
        return found[-1] if found else None

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint (from its name), None without one."""
        latest = self.latest()
        return None if latest is None else int(_CHECKPOINT_NAME.match(latest.name).group(1))

    @staticmethod
    def load(path: str | Path) -> dict:
        """A training checkpoint, its checksum verified (:class:`CheckpointError` when it does not match)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        state = read_checkpoint(path)
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
        return state
