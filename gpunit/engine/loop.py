"""The training loop every method's trainer runs in (:func:`train_loop`).

A trainer (:class:`gpunit.engine.trainer.Trainer`) owns its networks, optimizers and data and computes
its steps' losses; the loop drives it and owns everything around the steps: progress bar, TensorBoard +
``metrics.jsonl`` logging, image grids, NaN/inf checks, atomic checkpoints, exact resume (networks,
optimizers, data position and every RNG) and a clean stop on Ctrl+C / SIGTERM.
:func:`gpunit.engine.run.run_training` sets up the run folder, device and seeds around it.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from gpunit.engine import distributed
from gpunit.engine.checkpoints import CHECKPOINT_FORMAT, CheckpointError, CheckpointManager
from gpunit.engine.lock import lock_run_dir
from gpunit.engine.logger import RunLogger
from gpunit.engine.progress import logging_above, progress_bar
from gpunit.engine.rng import capture_rng_state, preserved_rng_state, restore_rng_state, seed_everything

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; raised before anything of that step is saved."""


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
    """Turn SIGINT/SIGTERM into a flag so the loop can checkpoint and return; a second Ctrl+C aborts.
    ``signum`` is the first signal received (None without one)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class StoppedBySignal(Exception):
    """A run stopped by SIGTERM/SIGINT after saving its checkpoint; the program exits with ``exit_status``
    (the shell's 128 + signal number: 143 for SIGTERM, 130 for SIGINT), so ``train && translate`` stops too."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step, self.exit_status = signum, step, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after saving step {step} (exit status "
                         f"{self.exit_status}); rerun the same command with --resume auto to continue")


# ----------------------------------------------------------------------------- the loop
class TrainerProtocol(Protocol):
    """What :func:`train_loop` drives: these five members (:class:`gpunit.engine.trainer.Trainer`, the base
    of every method's trainer, has them all).

    - ``images_per_step``: images consumed per step (for ``time/images_per_s``).
    - ``train_step(step)``: one full iteration (fetch a batch, D and/or G update, EMA) returning
      0-dim tensors tagged like ``"loss/g/adv"``, ``"loss/d/r1"``; other scalars may be added. Do not
      call ``.item()`` here: the loop reads values only when it logs, to avoid a device sync per step.
    - ``state_dict()`` / ``load_state_dict(state)``: networks, EMA, optimizers and data position, as
      tensors and plain values only.
    - ``sample_images(step)``: ``{tag: grid (3, H, W) in [-1, 1]}``, and numbers measured on the samples
      (``{"metric/...": float}``), logged as scalars at that step.
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


def train_loop(trainer: TrainerProtocol, *, run_dir: Path, total_steps: int, log_every: int, image_every: int,
               checkpoint_every: int, keep_checkpoints: int, resume: str | None, nan_check_every: int | None = None,
               logger: RunLogger | None = None, progress: bool = True, stop: StopSignal | None = None) -> int:
    """Run steps ``start+1 .. total_steps`` and return the last finished step.

    Every step's losses are watched for NaN/inf on the device; the watch is read every
    ``nan_check_every`` steps (default: ``log_every``) and always before a checkpoint is written,
    so a normal step never waits for the device and no non-finite state is ever saved.

    ``resume``: None (fresh run), ``"auto"`` (the newest checkpoint in ``run_dir`` that verifies) or a
    checkpoint path. A checkpoint at step k means k steps are done; it holds the trainer state and every
    RNG, so a resumed run continues bitwise identically on the same hardware.

    ``stop``: the :class:`StopSignal` to use (its ``signum`` then tells the caller why the run returned early).
    The trainer's ``close()``, when it has one, runs on the way out, also on an error: loader workers must
    not keep a failed run alive.
    """
    nan_check_every = log_every if nan_check_every is None else nan_check_every
    for name, value in [("total_steps (train.iterations)", total_steps), ("log_every", log_every),
                        ("image_every", image_every),
                        ("checkpoint_every", checkpoint_every), ("nan_check_every", nan_check_every)]:
        if value < 1:
            raise ValueError(f"{name} must be a positive number of steps, got {value}")
    run_dir = Path(run_dir)
    main = distributed.is_main()  # in a torchrun job only rank 0 logs, samples and saves
    if main:
        lock_run_dir(run_dir)  # one process per run folder (already held when run_training prepared it)
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
        with stop or StopSignal() as stop, logging_above(bar):
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
                        samples = trainer.sample_images(step)
                    for tag, value in samples.items():  # image grids, and figures measured on the samples
                        if isinstance(value, Tensor) and value.dim() == 3:
                            logger.images(step, tag, value)
                    figures = {tag: float(v) for tag, v in samples.items() if not (isinstance(v, Tensor) and v.dim() == 3)}
                    if figures:
                        logger.scalars(step, figures)
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
        if hasattr(trainer, "close"):  # first: closing the logger may fail too on a full disk
            trainer.close()
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


def _resume(trainer: TrainerProtocol, checkpoints: CheckpointManager, resume: str) -> int:
    """Load trainer state and RNGs from ``resume`` ("auto" or a path); return the finished step."""
    path, state = _auto_checkpoint(checkpoints) if resume == "auto" else (Path(resume), checkpoints.load(resume))
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gpunit training checkpoint (format {state.get('format')!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}); pass a file from <run>/checkpoints/")
    trainer.load_state_dict(state["trainer"])
    _restore_process_rng(state)  # last, in case loading the trainer consumed random numbers
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def _auto_checkpoint(checkpoints: CheckpointManager) -> tuple[Path, dict]:
    """The newest checkpoint that reads and verifies, and its state; damaged newer ones are skipped with a
    warning (and left as they are: the run overwrites them when it saves those steps again)."""
    found = checkpoints.all()
    if not found:
        raise FileNotFoundError(f"--resume auto: no checkpoint in {checkpoints.dir}; start without --resume "
                                "or pass --resume PATH to a checkpoint")
    for path in found:
        try:
            return path, checkpoints.load(path)
        except CheckpointError as err:
            log.warning("%s. Skipping it: resuming from an earlier checkpoint", err)
    raise CheckpointError(f"--resume auto: none of the {len(found)} checkpoints in {checkpoints.dir} can be used "
                          "(see the warnings above); start the run again without --resume")
