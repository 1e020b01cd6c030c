"""One process per run folder: ``<run>/run.lock`` names its holder (host and PID).

Two processes writing one run folder would overwrite each other's checkpoints and exports and interleave
``metrics.jsonl``; the second one refuses instead, naming the holder. A lock left by a process that died
(kill -9, a crash, a lost node) on this host is taken over with a warning. A process keeps the locks it took
until it exits, so its exports after training are covered too, and taking one again is free. In a torchrun job
rank 0 alone takes it, for every rank of that launch (``gpunit.engine.run.start_run``).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from pathlib import Path

LOCK_NAME = "run.lock"
log = logging.getLogger(__name__)
_held: set[Path] = set()  # run folders this process holds


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""


def lock_run_dir(run_dir: str | os.PathLike) -> Path:
    """Take ``run_dir``'s lock for this process (until it exits); :class:`RunLockedError` when another
    live process holds it. Returns the lock file."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / LOCK_NAME
    if run_dir in _held:
        return path
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock is removed, then created again; another process may win that race
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # atomic: one creator wins
        except FileExistsError:
            holder = _read(path)
            if holder == me:  # written by this very process (e.g. it released and retook it)
                break
            if holder is None or _alive(holder):
                raise RunLockedError(_refusal(run_dir, path, holder)) from None
            log.warning("taking over the lock of %s: its holder (host %s, PID %s) is no longer running (killed or "
                        "crashed); the run goes on from its last checkpoint", run_dir, holder["host"], holder["pid"])
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise RunLockedError(_refusal(run_dir, path, _read(path)))
    if not _held:
        atexit.register(_release_all)
    _held.add(run_dir)
    return path


def unlock_run_dir(run_dir: str | os.PathLike) -> None:
    """Give ``run_dir`` back (done at exit; for a long-lived process that trained in it)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held.discard(run_dir)
        if _read(run_dir / LOCK_NAME) == {"host": socket.gethostname(), "pid": os.getpid()}:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)


def _release_all() -> None:
    for run_dir in list(_held):
        unlock_run_dir(run_dir)


def _read(path: Path) -> dict | None:
    """The holder recorded in a lock file, None when it cannot be read (being written, or damaged)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(holder, dict) and isinstance(holder.get("host"), str) and isinstance(holder.get("pid"), int)
    return {"host": holder["host"], "pid": holder["pid"]} if ok else None


def _alive(holder: dict) -> bool:
    """Whether the holder runs: on another host that cannot be told, so it counts as running."""
    if holder["host"] != socket.gethostname():
        return True
    try:
        os.kill(holder["pid"], 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    try:  # a killed child whose parent has not reaped it yet still exists, as a zombie
        return Path(f"/proc/{holder['pid']}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _refusal(run_dir: Path, path: Path, holder: dict | None) -> str:
    who = f"process {holder['pid']} on host {holder['host']}" if holder else "another process (unreadable lock)"
    return (f"run folder {run_dir} is in use by {who}: two runs in one folder would overwrite each other's "
            f"checkpoints. Wait for it to end, or choose another run name; if that process is gone, delete {path}")
