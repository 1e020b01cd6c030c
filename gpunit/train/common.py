"""The training engine shared by Stage I (prior distillation) and Stage II (translation).

A stage trainer owns its networks, optimizers and data and implements :class:`Trainer`;
:func:`train_loop` drives it and owns everything around the steps: progress bar, TensorBoard +
``metrics.jsonl`` logging, image grids, NaN/inf checks, atomic checkpoints, exact resume
(networks, optimizers, data position and every RNG) and a clean stop on Ctrl+C / SIGTERM.

Typical use from a script::

    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    run_dir = prepare_run_dir("runs", cfg.name, config_to_dict(cfg), resume=args.resume is not None)
    trainer = Stage2Trainer(cfg, device)
    train_loop(trainer, run_dir=run_dir, total_steps=cfg.train.iterations, ..., resume=args.resume)
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import math
import pickle
import platform
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from gpunit.progress import logging_above, progress_bar
from gpunit.train import distributed
from gpunit.checkpoints import CheckpointError, atomic_save
from gpunit.data.images import save_image  # one error type for every unusable checkpoint file

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "gpunit-train-v1"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")


class RunExistsError(RuntimeError):
    """The run folder already holds checkpoints and the caller did not ask to resume."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; raised before anything of that step is saved."""


# ----------------------------------------------------------------------------- device, seeds, RNG
def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""
    accepted = '"auto", "cpu", "cuda", "cuda:N" (N = GPU index) or "mps"'
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {spec!r}; use {accepted}") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {spec!r} asked for CUDA but no CUDA GPU is available; use \"cpu\" or \"auto\"")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {spec!r}: only {count} CUDA GPU(s) are visible (indices 0..{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {spec!r}: MPS is not available on this machine; use \"cpu\" or \"auto\"")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r} cannot be used for training; use {accepted}")
    return device


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy only takes 32-bit seeds
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """Every global RNG as tensors and plain values, so it loads with ``weights_only=True``."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored for the GPUs present."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block without moving any global RNG, so side work never changes the training stream."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers (BN statistics) are copied."""
    # one kernel for all tensors on CUDA; lists of different lengths raise
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


# ----------------------------------------------------------------------------- run folder
def prepare_run_dir(out_dir: str | Path, name: str, config_dict: dict, resume: bool) -> Path:
    """Create ``<out_dir>/<name>/`` with ``config.yaml`` and ``meta.json``; refuse to clobber a run.

    Both files describe the current invocation, so a resumed run records the config it resumed with.
    """
    run_dir = Path(out_dir) / name
    if not resume and CheckpointManager(run_dir, keep=1).latest() is not None:
        raise RunExistsError(f"run folder {run_dir} already holds checkpoints; pass --resume auto to continue "
                             "that run, or choose another run name")
    run_dir.mkdir(parents=True, exist_ok=True)
    if dataclasses.is_dataclass(config_dict):
        config_dict = dataclasses.asdict(config_dict)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))
    (run_dir / "meta.json").write_text(json.dumps(_run_metadata(resume), indent=2) + "\n")
    return run_dir


def _run_metadata(resume: bool) -> dict:
    import gpunit

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


# ----------------------------------------------------------------------------- checkpoints
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


# ----------------------------------------------------------------------------- logging
class RunLogger:
    """TensorBoard events + ``metrics.jsonl`` + PNG grids in the run folder.

    ``purge_step`` (used on resume) drops logged values from that step on, which a crash after the
    last checkpoint left behind and the resumed run will log again.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        if not enabled:  # e.g. non-zero ranks of a distributed run
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import; only where logging happens

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        jsonl = self.run_dir / "metrics.jsonl"
        if purge_step is not None and jsonl.is_file():
            kept = [line for line in jsonl.read_text().splitlines() if json.loads(line)["step"] < purge_step]
            jsonl.write_text("".join(line + "\n" for line in kept))
        self.jsonl = jsonl.open("a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {tag: float(value) for tag, value in values.items()}
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def images(self, step: int, tag: str, grid: Tensor) -> None:
        if not self.enabled:
            return
        if grid.dim() != 3 or grid.shape[0] != 3:
            raise ValueError(f"image grid {tag!r} must have shape (3, H, W), got {tuple(grid.shape)}")
        image = (grid.detach().float().cpu().clamp(-1, 1) + 1) / 2  # [-1, 1] -> [0, 1]
        self.writer.add_image(tag, image, step)
        png = self.run_dir / "images" / f"{tag.replace('/', '_')}_{step:07d}.png"
        save_image(grid.detach().float().cpu(), png)  # parent folders made, [-1, 1] in

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()


class NonFiniteWatch:
    """Remembers, on the device, the first step at which a loss term was NaN/inf and the terms' values
    then: :meth:`add` never waits for the device (a few small kernels per step); :meth:`check` reads
    it with one sync and raises :class:`NonFiniteLossError` naming that step and its bad terms."""

    def __init__(self):
        # per set of logged tags (it may vary between steps): (first bad step or 0, values at that step)
        self.records: dict[tuple[str, ...], tuple[Tensor, Tensor]] = {}

    def add(self, step: int, losses: dict[str, Tensor | float]) -> None:
        if not losses:
            return
        device = next((v.device for v in losses.values() if isinstance(v, Tensor)), torch.device("cpu"))
        values = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(()) for v in losses.values()])
        tags = tuple(losses)
        first, kept = self.records.get(tags, (torch.zeros((), dtype=torch.long, device=device), values))
        first_time = (first == 0) & ~torch.isfinite(values).all()
        self.records[tags] = (torch.where(first_time, step, first), torch.where(first_time, values, kept))

    def check(self) -> None:
        if not self.records:
            return
        found = [(tags, first, values) for tags, (first, values) in self.records.items()]
        read = torch.cat([torch.cat([f.float().reshape(1), v]) for _, f, v in found]).tolist()  # the one sync
        bad, offset = [], 0
        for tags, _, _ in found:
            first, values = int(read[offset]), read[offset + 1:offset + 1 + len(tags)]
            offset += 1 + len(tags)
            if first:
                bad.append((first, [f"{t}={v}" for t, v in zip(tags, values) if not math.isfinite(v)]))
        if bad:
            step, terms = min(bad)
            raise NonFiniteLossError(
                f"non-finite loss at step {step}: {', '.join(terms)}. Nothing of this or any later step was saved, "
                "so the last good checkpoint is kept; rerun the same command with --resume auto (perhaps with a "
                "lower learning rate).")


# ----------------------------------------------------------------------------- stop signal
class StopSignal:
    """Turn SIGINT/SIGTERM into a flag so the loop can checkpoint and return; a second Ctrl+C aborts."""

    def __init__(self):
        self._requested = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self._requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._requested = True

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# ----------------------------------------------------------------------------- the loop
class Trainer(Protocol):
    """What :func:`train_loop` drives; a stage trainer implements these five members.

    - ``images_per_step``: images consumed per step (for ``time/images_per_s``).
    - ``train_step(step)``: one full iteration (fetch a batch, D and/or G update, EMA) returning
      0-dim tensors tagged like ``"loss/g/adv"``, ``"loss/d/r1"``; other scalars may be added. Do not
      call ``.item()`` here: the loop reads values only when it logs, to avoid a device sync per step.
    - ``state_dict()`` / ``load_state_dict(state)``: networks, EMA, optimizers and data position, as
      tensors and plain values only.
    - ``sample_images(step)``: ``{tag: grid (3, H, W) in [-1, 1]}``.
    - ``on_checkpoint(step)``: called before each checkpoint (Stage II fits its style sampler here);
      it must not change what later steps compute.

    ``sample_images`` and ``on_checkpoint`` run with all global RNGs preserved, so how often images
    or checkpoints are made never changes the training trajectory.
    """

    images_per_step: int

    def train_step(self, step: int) -> dict[str, Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def sample_images(self, step: int) -> dict[str, Tensor]: ...
    def on_checkpoint(self, step: int) -> None: ...


def train_loop(trainer: Trainer, *, run_dir: Path, total_steps: int, log_every: int, image_every: int,
               checkpoint_every: int, keep_checkpoints: int, resume: str | None, nan_check_every: int | None = None,
               logger: RunLogger | None = None, progress: bool = True) -> int:
    """Run steps ``start+1 .. total_steps`` and return the last finished step.

    Every step's losses are watched for NaN/inf on the device; the watch is read every
    ``nan_check_every`` steps (default: ``log_every``) and always before a checkpoint is written,
    so a normal step never waits for the device and no non-finite state is ever saved.

    ``resume``: None (fresh run), ``"auto"`` (latest checkpoint in ``run_dir``) or a checkpoint path.
    A checkpoint at step k means k steps are done; it holds the trainer state and every RNG, so a
    resumed run continues bitwise identically on the same hardware.
    """
    nan_check_every = log_every if nan_check_every is None else nan_check_every
    for name, value in [("log_every", log_every), ("image_every", image_every),
                        ("checkpoint_every", checkpoint_every), ("nan_check_every", nan_check_every)]:
        if value < 1:
            raise ValueError(f"{name} must be a positive number of steps, got {value}")
    run_dir = Path(run_dir)
    main = distributed.is_main()  # in a torchrun job only rank 0 logs, samples and saves
    checkpoints = CheckpointManager(run_dir, keep_checkpoints)
    start = _resume(trainer, checkpoints, resume) if resume is not None else 0
    own_logger = logger is None
    logger = RunLogger(run_dir, enabled=main, purge_step=start + 1 if start else None) if own_logger else logger

    def save(step: int) -> Path | None:
        # Every process's random streams (they differ: e.g. Stage I's content noise), so that each
        # goes on with its own after a resume.
        rng = distributed.gather_on_main(capture_rng_state())
        if not main:
            return None
        with preserved_rng_state():
            trainer.on_checkpoint(step)
        state = {"step": step, "trainer": trainer.state_dict(), "rng": rng[0], "rng_per_process": rng,
                 "format": CHECKPOINT_FORMAT}
        return checkpoints.save(state, step)

    step = start
    meter, watch = _IntervalMeter(), NonFiniteWatch()
    bar = progress_bar(total=total_steps, initial=start, disable=not (progress and main), desc=run_dir.name,
                       unit="step", dynamic_ncols=True)
    try:
        with StopSignal() as stop, logging_above(bar):
            for step in range(start + 1, total_steps + 1):
                losses = trainer.train_step(step)
                meter.add(losses)
                watch.add(step, losses)
                bar.update(1)
                stopping = distributed.any_process(stop.requested)  # every process stops at the same step
                checkpoint_due = step % checkpoint_every == 0 or step == total_steps or stopping
                if step % nan_check_every == 0 or checkpoint_due:
                    watch.check()
                if step % log_every == 0:
                    scalars = meter.read(trainer.images_per_step)  # the only device sync of a normal step
                    logger.scalars(step, scalars)
                    bar.set_postfix({tag.removeprefix("loss/"): f"{value:.3g}" for tag, value in scalars.items()
                                     if tag.startswith("loss/")}, refresh=False)
                if main and (step % image_every == 0 or step == 1):
                    with preserved_rng_state():
                        grids = trainer.sample_images(step)
                    for tag, grid in grids.items():
                        logger.images(step, tag, grid)
                    meter.restart_clock()  # time/step measures training only
                if checkpoint_due:
                    path = save(step)
                    if path is not None:
                        log.info("saved checkpoint %s", path)
                    meter.restart_clock()
                if stopping:
                    log.warning("stopped by signal after step %d; checkpoint %s. To continue, rerun the same "
                                "command with --resume auto (or --resume %s)", step, path, path)
                    return step
    finally:
        bar.close()
        if own_logger:
            logger.close()
    return step


class _IntervalMeter:
    """Mean of each logged value and seconds per step since the last read; sums stay on the device."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.restart_clock()

    def restart_clock(self) -> None:
        self.clock, self.steps = time.perf_counter(), 0

    def add(self, values: dict[str, Tensor | float]) -> None:
        self.steps += 1
        for tag, value in values.items():  # a tag may be missing on some steps (lazy R1)
            value = value.detach().float() if isinstance(value, Tensor) else value
            self.sums[tag] = self.sums.get(tag, 0.0) + value
            self.counts[tag] = self.counts.get(tag, 0) + 1

    def read(self, images_per_step: int) -> dict[str, float]:
        means = {tag: float(total) / self.counts[tag] for tag, total in self.sums.items()}
        seconds = (time.perf_counter() - self.clock) / max(self.steps, 1)
        self.reset()
        return {**means, "time/step": seconds, "time/images_per_s": images_per_step / seconds}


def _restore_process_rng(state: dict) -> None:
    """This process's random streams from a checkpoint. A run resumed on more processes than it was
    saved from gives each new process a distinct stream drawn from rank 0's."""
    saved = state.get("rng_per_process") or [state["rng"]]
    rank = distributed.rank()
    if rank < len(saved):
        restore_rng_state(saved[rank])
    else:
        restore_rng_state(saved[0])
        seed_everything(int(torch.randint(2**62, ())) + rank)


def _resume(trainer: Trainer, checkpoints: CheckpointManager, resume: str) -> int:
    """Load trainer state and RNGs from ``resume`` ("auto" or a path); return the finished step."""
    path = checkpoints.latest() if resume == "auto" else Path(resume)
    if path is None:
        raise FileNotFoundError(f"--resume auto: no checkpoint in {checkpoints.dir}; start without --resume "
                                "or pass --resume PATH to a checkpoint")
    state = checkpoints.load(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gpunit training checkpoint (format {state.get('format')!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}); pass a file from <run>/checkpoints/")
    trainer.load_state_dict(state["trainer"])
    _restore_process_rng(state)  # last, in case loading the trainer consumed random numbers
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def start_run(out_dir, name: str, config_dict: dict, seed: int, device_spec: str, resume: bool):
    """Device, seeds and run folder for a stage script, in one or many (torchrun) processes.

    Every process seeds alike before the networks are built (identical initial weights); in a
    distributed run each then gets its own seed for the noise it draws. Returns (device, run_dir).
    """
    device = distributed.init_from_env(device_spec) or resolve_device(device_spec)
    seed_everything(seed)
    run_dir = Path(out_dir) / name
    if distributed.is_main():
        run_dir = prepare_run_dir(out_dir, name, config_dict, resume=resume)
    distributed.barrier()
    return device, run_dir


def run_training(cfg, make_trainer, resume: str | None, progress: bool = True):
    """Set up the run (device, seeds, run folder), build the trainer and train it to the end.

    ``cfg`` is a Stage1Config or Stage2Config; returns (trainer, run_dir) when the run finished on
    the process that exports (rank 0), None when it was interrupted or on another rank.
    """
    from gpunit.config import config_to_dict

    t = cfg.train
    device, run_dir = start_run(cfg.out_dir, cfg.name, config_to_dict(cfg), t.seed, t.device,
                                resume=resume is not None)
    trainer = make_trainer(cfg, device)
    trainer.progress = progress
    per_process_seed(t.seed)
    step = train_loop(trainer, run_dir=run_dir, total_steps=t.iterations, log_every=t.log_every,
                      image_every=t.image_every, checkpoint_every=t.checkpoint_every,
                      keep_checkpoints=t.keep_checkpoints, resume=resume, progress=progress)
    if step < t.iterations or not distributed.is_main():
        return None
    return trainer, run_dir


def per_process_seed(seed: int) -> None:
    """After the networks are built: a different random stream per process of a distributed run."""
    if distributed.world_size() > 1:
        seed_everything(seed + 1000 * distributed.rank())
