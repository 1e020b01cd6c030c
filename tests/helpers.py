"""Helpers shared by the test groups (``tests/`` is on ``sys.path``: ``from helpers import run_script``)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


class ScriptRun(NamedTuple):
    status: int
    out: str
    err: str


def run_script(script: str | Path, *args, env: dict | None = None) -> ScriptRun:
    """``python <script> <args>`` from the repository root, in this process: a new interpreter costs ~7 s of
    imports (torch, torchvision) before any work. Returns the exit status (the ``SystemExit`` of
    ``gpunit.engine.cli.run_main``; a script that returns without one fails the test), stdout and stderr.

    ``env`` sets environment variables for the run. stderr also gets the INFO log lines that the script's
    ``logging.basicConfig`` would print: under pytest the root logger has handlers already, so that call does
    nothing here, and a handler of our own stands in for it.
    """
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for key, value in (env or {}).items():
            mp.setenv(key, str(value))
        mp.chdir(REPO)
        mp.setattr(sys, "argv", [str(script), *map(str, args)])
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            runpy.run_path(str(REPO / script), run_name="__main__")
            status = None
        except SystemExit as done:
            status = done.code or 0
            if isinstance(status, str):  # sys.exit("message"): the interpreter prints it and exits with 1
                print(status, file=sys.stderr)
                status = 1
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    assert status is not None, f"{script} did not exit through run_main"
    return ScriptRun(status, out.getvalue(), err.getvalue())


def record_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[tuple]:
    """Record the calls of the method ``owner.name`` from now on (until ``monkeypatch`` undoes it), which still
    run: a list that fills with (its first argument after self, its result), both cloned. For checking a figure
    from the very features a costly network computed for it, instead of running the network again."""
    calls = []
    method = getattr(owner, name)

    def recorded(self, x, *args, **kwargs):
        out = method(self, x, *args, **kwargs)
        calls.append((x.clone(), out.clone()))
        return out

    monkeypatch.setattr(owner, name, recorded)
    return calls


def assert_same_state(a, b, where="state"):
    """Two checkpoint states (nested dicts / lists of tensors and plain values) are bitwise equal."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def save_tiny_deepi2i(path: Path, class_names, size: int = 64) -> Path:
    """A tiny random DeepI2I translator (ch=4, attention at 16 px, seed 0) saved in our format at ``path``."""
    from gpunit.biggan.models import BigGANGenerator
    from gpunit.deepi2i.models import DeepI2I, Encoder, build_adaptors
    from gpunit.deepi2i.weights import save_deepi2i_translator

    torch.manual_seed(0)
    g = BigGANGenerator(size, 4, len(class_names), dim_z=20, shared_dim=4, attention=(16,))
    e = Encoder(size, 4, attention=(16,))
    return save_deepi2i_translator(path, DeepI2I(e, build_adaptors(e, g), g), list(class_names))


def start_training(script: str, sets: list[str]) -> subprocess.Popen:
    """A training script as a real process (one thread: its bits match an in-process run at one thread)."""
    return subprocess.Popen([sys.executable, script, "--no-progress", "--set", *sets], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_file(proc: subprocess.Popen, path: Path, timeout_s: float = 120) -> None:
    """Wait until ``path`` exists (a checkpoint the process writes); the process must still run then."""
    deadline = time.monotonic() + timeout_s  # generous: a loaded 2-core machine
    while not path.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read()
    assert path.is_file(), f"{path} not written within {timeout_s} s"
