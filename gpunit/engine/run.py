"""A run folder and a whole training run: device, seeds, ``config.yaml`` + ``meta.json``, the loop, reuse.

``run_training`` is what every method's ``run_*`` function calls; ``train_once`` is what the demos call:
it reuses a finished run, resumes an interrupted one, and never reuses or overwrites a folder trained
with other settings.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import torch
import yaml

import gpunit
from gpunit.engine import distributed
from gpunit.engine.checkpoints import CheckpointManager
from gpunit.engine.config import config_to_dict, flat_config
from gpunit.engine.device import resolve_device
from gpunit.engine.lock import RunLockedError, lock_run_dir
from gpunit.engine.loop import StopSignal, StoppedBySignal, train_loop
from gpunit.engine.rng import per_process_seed, seed_everything


class RunExistsError(RuntimeError):
    """The run folder already holds checkpoints and the caller did not ask to resume."""


# ----------------------------------------------------------------------------- run folder
def prepare_run_dir(out_dir: str | Path, name: str, config_dict: dict, resume: bool) -> Path:
    """Create ``<out_dir>/<name>/`` with ``config.yaml`` and ``meta.json``; refuse to clobber a run.

    Both files describe the current invocation, so a resumed run records the config it resumed with. The
    folder's lock is taken first: a second process on it refuses before writing anything (:mod:`.lock`).
    """
    run_dir = Path(out_dir) / name
    lock_run_dir(run_dir)
    if not resume and CheckpointManager(run_dir, keep=1).latest() is not None:
        raise RunExistsError(f"run folder {run_dir} already holds checkpoints; pass --resume auto to continue "
                             "that run, or choose another run name")
    if dataclasses.is_dataclass(config_dict):
        config_dict = dataclasses.asdict(config_dict)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))
    (run_dir / "meta.json").write_text(json.dumps(_run_metadata(resume), indent=2) + "\n")
    return run_dir


def _run_metadata(resume: bool) -> dict:
    return {
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "gpunit": gpunit.__version__,
        "command": shlex.join(sys.argv),
        "hostname": socket.gethostname(),
        "start_time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "resumed": resume,
    }


def _git_commit() -> str | None:
    """Commit of the checkout gpunit runs from; None for installed copies or when git is missing."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- a whole run
def start_run(out_dir, name: str, config_dict: dict, seed: int, device_spec: str, resume: bool):
    """Device, seeds and run folder for a stage script, in one or many (torchrun) processes.

    Every process seeds alike before the networks are built (identical initial weights); in a
    distributed run each then gets its own seed for the noise it draws. Returns (device, run_dir).
    """
    device = distributed.init_from_env(device_spec) or resolve_device(device_spec)
    seed_everything(seed)
    run_dir, refused = Path(out_dir) / name, None
    if distributed.is_main():  # rank 0 takes the folder's lock for every rank of this launch
        try:
            run_dir = prepare_run_dir(out_dir, name, config_dict, resume=resume)
        except (RunLockedError, RunExistsError) as err:
            refused = err
    if distributed.any_process(refused is not None):  # the other ranks stop too instead of waiting for rank 0
        raise refused or RunExistsError(f"rank 0 cannot use the run folder {run_dir} (its message says why)")
    return device, run_dir


def run_training(cfg, make_trainer, resume: str | None, progress: bool = True):
    """Set up the run (device, seeds, run folder), build the trainer and train it to the end.

    ``cfg`` is a method's config (``name``, ``out_dir``, ``train``: a TrainConfig); returns (trainer,
    run_dir) when the run finished on the process that exports (rank 0), None on another rank. A run
    stopped by a signal raises :class:`StoppedBySignal` after saving its checkpoint.
    """
    t = cfg.train
    device, run_dir = start_run(cfg.out_dir, cfg.name, config_to_dict(cfg), t.seed, t.device,
                                resume=resume is not None)
    trainer = make_trainer(cfg, device)
    trainer.progress = progress
    per_process_seed(t.seed)
    stop = StopSignal()
    step = train_loop(trainer, run_dir=run_dir, total_steps=t.iterations, log_every=t.log_every,
                      image_every=t.image_every, checkpoint_every=t.checkpoint_every,
                      keep_checkpoints=t.keep_checkpoints, resume=resume, progress=progress, stop=stop)
    if step < t.iterations and stop.signum is not None:
        raise StoppedBySignal(stop.signum, step)
    if step < t.iterations or not distributed.is_main():
        return None
    return trainer, run_dir


# ----------------------------------------------------------------------------- reuse (the demos)
# where and how verbosely a run trains, not what it trains
RUN_ONLY_SETTINGS = {"out_dir", "train.device", "data.num_workers", "train.log_every", "train.image_every",
                     "train.keep_checkpoints"}


def _changed_settings(run_dir: Path, cfg) -> dict[str, tuple]:
    """{dotted key: (saved, current)} where the config saved in ``run_dir`` differs from ``cfg``."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return {}
    saved, current = flat_config(yaml.safe_load(saved_file.read_text()) or {}), flat_config(config_to_dict(cfg))
    return {k: (saved.get(k), current.get(k)) for k in sorted(saved.keys() | current.keys())
            if saved.get(k) != current.get(k) and k not in RUN_ONLY_SETTINGS}


def train_once(run, cfg, run_dir: Path, product: str, progress: bool) -> Path:
    """Run ``run(cfg, resume, progress)`` (a method's ``run_*``) unless ``run_dir/product`` exists; resume a
    run that has checkpoints.

    A folder trained with other settings is never reused or overwritten; a longer
    ``train.iterations`` than it was trained for continues it from its last checkpoint.
    """
    trained = CheckpointManager(run_dir, 1).latest_step()
    changed = _changed_settings(run_dir, cfg) if trained is not None else {}
    if changed and set(changed) != {"train.iterations"}:
        lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise SystemExit(f"{run_dir} holds a run with other settings:\n{lines}\nDelete that folder to retrain "
                         "it, or pass another --out-dir (and --outputs) to keep both.")
    if (run_dir / product).is_file() and (trained is None or trained >= cfg.train.iterations):
        print(f"reusing {run_dir / product}" + (f" ({trained} steps)" if trained else ""))
        return run_dir / product
    resume = "auto" if trained is not None else None
    if (run_dir / product).is_file():
        print(f"continuing {run_dir} from step {trained} to {cfg.train.iterations}")
    elif resume:
        print(f"resuming the interrupted run in {run_dir} at step {trained}")
    outputs = run(cfg, resume=resume, progress=progress)
    if not outputs:
        raise SystemExit("interrupted; run the demo again to continue where it stopped")
    return run_dir / product
