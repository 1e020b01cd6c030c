"""``train.precision: auto`` and ``train.channels_last: auto``: chosen by timing the run's own step (issue 26).

Which setting is fastest depends on the CPU or GPU and on the networks' sizes: bf16 paid on a Xeon with AMX
and on a Zen 4 with AVX512-BF16 at 256 px, not on a Xeon with AVX512-BF16 alone nor on AVX2 CPUs, where it is
emulated. A rule from CPU flags got this wrong, so ``auto`` measures instead. Before the first step
(:meth:`gpunit.engine.trainer.Trainer.resolve_auto_settings`), each candidate setting

- fp32, fp32 + channels_last, bf16 + channels_last (and fp16 + channels_last on CUDA; fewer when one of the
  two options is given explicitly)

trains a deep copy of the trainer (networks, optimisers, moving averages) for ``warmup`` steps and then
``steps`` timed steps (the copies taking turns, one step each per round), on the batch the run is about to
read (read again through a fresh loader at the same position, so the run's loader is not moved), with every global RNG (python, numpy, torch CPU and CUDA) saved
before and restored after. The fastest median step wins. The run itself then only switches its autocast,
grad scaler and memory format, which is what the explicit setting does before any step: a run with
``auto`` gives bitwise the weights of a run with the chosen setting given explicitly.

The choice and the timings are logged and kept in ``$GPUNIT_CACHE/precision_probe.json`` (default
``~/.cache/gpunit/``), keyed by the machine (CPU model and the flags that matter, or GPU name; torch version;
threads) and by the configuration (a hash of the trainer's class, its config's model, loss and size keys and
its networks' shapes), so a second run of the same configuration on the same machine does not probe again.
Delete the file to measure again. ``GPUNIT_PROBE=off`` skips the probe: ``auto`` then means the flag rule
(:func:`gpunit.engine.speed.fast_bf16`) and channels_last off (the test suite uses this, so that its
comparisons do not depend on a shared machine's timings).

Not measured: ``train.compile`` (the copies run eager; compiling each would take minutes), and the data
loader (every candidate reads the same batch again).
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from gpunit.data.datasets import make_loader
from gpunit.engine import distributed, speed
from gpunit.engine.config import config_to_dict
from gpunit.engine.rng import preserved_rng_state

log = logging.getLogger("gpunit.speed")

CACHE_FORMAT = 1
WARMUP_STEPS, TIMED_STEPS = 3, 5
# the CPU flags that decide how fast bf16/fp16 and wide convolutions run (/proc/cpuinfo names)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16",
             "amx_fp16", "asimd", "sve", "bf16")


@dataclass(frozen=True)
class Setting:
    precision: str
    channels_last: bool

    @property
    def name(self) -> str:
        return self.precision + (" + channels_last" if self.channels_last else "")


def candidates(device: torch.device, precision: str, channels_last: bool | str) -> tuple[list[Setting], dict]:
    """The settings worth timing for the requested values (``"auto"`` in one or both), and {name: why} for those
    left out without timing them (a precision the device cannot compute)."""
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else []) if precision == "auto" else [precision]
    layouts = [False, True] if channels_last == "auto" else [bool(channels_last)]
    skipped, kept = {}, []
    for p in precisions:
        for cl in layouts:
            s = Setting(p, cl)
            if precision == "auto" and channels_last == "auto" and p != "fp32" and not cl:
                continue  # low precision pays through the convolutions, which want channels_last
            reason = _unsupported(device, p)
            if reason:
                skipped[s.name] = reason
            else:
                kept.append(s)
    return kept, skipped


def _unsupported(device: torch.device, precision: str) -> str | None:
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return "this GPU has no bf16 tensor cores"
        return None
    if not speed.cpu_has_native(precision):
        # emulated: several times slower (about 5x on AVX2), so not worth the probe's time
        return f"this CPU has no {precision} instructions (emulated, several times slower)"
    return None


# ----------------------------------------------------------------------------- keys and cache
def cache_path() -> Path:
    root = os.environ.get("GPUNIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpunit"
    return Path(root) / "precision_probe.json"


def cpu_model() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (from /proc/cpuinfo; empty elsewhere)."""
    name, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), [f for f in CPU_FLAGS if f in flags]


def machine_key(device: torch.device) -> dict:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        hardware = {"gpu": torch.cuda.get_device_name(index),
                    "capability": ".".join(map(str, torch.cuda.get_device_capability(index)))}
    else:
        name, flags = cpu_model()
        hardware = {"cpu": name, "flags": flags, "threads": torch.get_num_threads()}
    return {"device": device.type, **hardware, "torch": torch.__version__, "processes": distributed.world_size()}


def config_key(trainer) -> dict:
    """What the step's cost depends on: the trainer's class, its config's model and loss sections and size keys
    (batch, accumulation, image sizes), and its networks' parameter shapes."""
    cfg = getattr(trainer, "cfg", None)
    values = config_to_dict(cfg) if cfg is not None else {}
    train, data = values.get("train", {}), values.get("data", {})
    picked = {"model": values.get("model"), "loss": values.get("loss"),
              "train": {k: train.get(k) for k in ("batch_size", "accumulate", "compile", "precision", "channels_last",
                                                  "reuse_translation_for_d", "reuse_fakes_for_d", "d_steps",
                                                  "phase1_steps")},
              "data": {k: v for k, v in data.items() if "size" in k}}
    shapes = {name: [list(p.shape) for p in net.parameters()] for name, net in sorted(trainer.networks.items())}
    digest = hashlib.sha256(json.dumps([picked, shapes], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"trainer": type(trainer).__name__, "hash": digest}


def _entry_key(machine: dict, config: dict) -> str:
    return json.dumps([machine, config], sort_keys=True)


def read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else {}


def write_cache(path: Path, key: str, entry: dict) -> None:
    """Add ``entry`` under ``key``; atomic (temp file + rename). An unwritable cache only costs a probe next time."""
    entries = read_cache(path)
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        log.warning("could not write the precision probe's cache %s (%s): the next run probes again", path, err)


# ----------------------------------------------------------------------------- the probe
class _ReplayLoader:
    """Stands in for a trainer's loader in a copy: the batches the run's loader is about to give, read through a
    fresh single-process loader at the same position (the run's loader and its workers are not touched)."""

    def __init__(self, loader):
        self.loader, self.batches, self.calls, self.iterator = loader, [], 0, None
        self.consumed = loader.consumed

    def next(self) -> dict:
        self.calls += 1
        if len(self.batches) < 2:  # two batches are enough: the timing does not depend on the pixels
            if self.iterator is None:
                self.iterator = iter(make_loader(self.loader.dataset, self.loader.batch, self.loader.seed,
                                                 start=self.loader.consumed, num_workers=0, device_type="cpu",
                                                 rank=distributed.rank(), world=distributed.world_size()))
            self.batches.append(next(self.iterator))
            return self.batches[-1]
        return self.batches[self.calls % 2]

    def restart_at(self, consumed: int) -> None:
        pass

    def close(self) -> None:
        self.iterator = None  # single-process: no workers to stop


def apply_setting(trainer, setting: Setting) -> None:
    """Switch ``trainer`` (before its first step) to ``setting``: what the explicit setting does in
    ``Trainer.__init__`` (autocast, grad scaler, memory format of every network and of each batch)."""
    trainer.precision = setting.precision
    trainer.autocast = speed.autocast(trainer.device, setting.precision)
    trainer.scaler = speed.grad_scaler(trainer.device, setting.precision)
    trainer.channels_last = setting.channels_last
    if setting.channels_last:  # the trainer was built contiguous (auto waits for the probe)
        for net in trainer.networks.values():
            # Parameters stay the same objects (their data changes layout), so the optimisers still hold them.
            speed.prepare_module(net, True)


def trainer_copy(trainer, setting: Setting):
    """A deep copy of ``trainer`` in ``setting``: its own networks, optimisers and moving averages; datasets and
    frozen helper networks (VGG, IR-SE50: not in ``trainer.networks``, eval mode, no trained parameter) shared;
    loaders replaced by :class:`_ReplayLoader`."""
    memo = {}
    for loader in trainer._loaders.values():
        memo[id(loader)] = _ReplayLoader(loader)
        memo[id(loader.dataset)] = loader.dataset
    networks = {id(m) for net in trainer.networks.values() for m in net.modules()}
    for value in vars(trainer).values():
        if isinstance(value, torch.utils.data.Dataset):
            memo[id(value)] = value
        elif (isinstance(value, nn.Module) and id(value) not in networks and not value.training
              and not any(p.requires_grad for p in value.parameters())):
            memo[id(value)] = value
    clone = copy.deepcopy(trainer, memo)
    clone._auto = {}  # the copy must not probe again
    clone._to_compile = []  # eager: compiling every candidate would take minutes
    clone.progress = False
    apply_setting(clone, setting)
    return clone


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_settings(trainer, step: int, settings: Sequence[Setting], steps: int = TIMED_STEPS,
                  warmup: int = WARMUP_STEPS, timer: Callable[[], float] = time.perf_counter
                  ) -> tuple[dict[str, float], dict[str, str]]:
    """{setting name: median seconds per step} of copies of ``trainer`` trained from ``step`` on, and
    {setting name: why it failed} for those whose step raised. No global RNG moves.

    The timed steps take turns (one step of each copy per round): a machine whose speed drifts (a process's
    first steps, a neighbour's load) then slows every candidate alike instead of the one timed last."""
    clones, failed = {}, {}

    def rule_out(name: str, err: Exception) -> None:
        # whatever breaks a candidate (an op without a bf16 kernel, out of memory) rules it out; the run then
        # uses another and says why
        failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        log.warning("precision probe: %s failed (%s); not using it", name, failed[name])
        clones.pop(name, None)

    with preserved_rng_state():  # the run draws what it would have drawn without the probe
        for setting in settings:
            try:
                clones[setting.name] = clone = trainer_copy(trainer, setting)
                for i in range(warmup):
                    clone.train_step(step + i)
                _sync(trainer.device)
            except Exception as err:  # noqa: BLE001
                rule_out(setting.name, err)
        times = {name: [] for name in clones}
        for i in range(steps):
            for name, clone in list(clones.items()):
                try:
                    start = timer()
                    clone.train_step(step + warmup + i)
                    _sync(trainer.device)
                    times[name].append(timer() - start)
                except Exception as err:  # noqa: BLE001
                    rule_out(name, err)
        timings = {name: statistics.median(times[name]) for name in clones}
        clones.clear()
    return timings, failed


def choose(trainer, step: int, precision: str, channels_last: bool | str, *, steps: int | None = None,
           warmup: int | None = None, timer: Callable[[], float] = time.perf_counter,
           cache: Path | None = None) -> Setting:
    """The setting ``auto`` resolves to for ``trainer`` about to run ``step``: from the cache, else measured
    (and cached). Logs the choice and the timings."""
    device = trainer.device
    steps = TIMED_STEPS if steps is None else steps
    warmup = WARMUP_STEPS if warmup is None else warmup
    settings, skipped = candidates(device, precision, channels_last)
    if os.environ.get("GPUNIT_PROBE", "").lower() in ("off", "0", "false", "no"):
        chosen = Setting(speed.resolve_precision(precision, device) if precision == "auto" else precision,
                         False if channels_last == "auto" else bool(channels_last))
        log.info("train.precision/channels_last=auto without a probe (GPUNIT_PROBE=off): %s", chosen.name)
        return chosen
    path = cache or cache_path()
    machine, config = machine_key(device), config_key(trainer)
    key = _entry_key(machine, config)
    entry = read_cache(path).get(key)
    hit = entry is not None and entry.get("choice", {}).get("name") in {s.name for s in settings}
    if distributed.world_size() > 1:  # every process must probe (the copies' updates all-reduce) or none
        hit = not distributed.any_process(not hit)
    if hit:
        chosen = Setting(entry["choice"]["precision"], entry["choice"]["channels_last"])
        log.info("train.precision/channels_last=auto: %s (measured before on this machine and configuration: %s; "
                 "cache %s)", chosen.name, _format(entry["timings_s"]), path)
    else:
        start = time.perf_counter()
        timings, failed = time_settings(trainer, step, settings, steps, warmup, timer)
        if not timings:
            raise RuntimeError(f"train.precision/channels_last=auto: every setting failed ({failed}); "
                               "set train.precision=fp32 train.channels_last=false")
        best = min(timings, key=timings.get)
        chosen = next(s for s in settings if s.name == best)
        entry = {"choice": {"name": chosen.name, "precision": chosen.precision, "channels_last": chosen.channels_last},
                 "timings_s": timings, "failed": failed, "skipped": skipped, "machine": machine, "config": config,
                 "steps": {"warmup": warmup, "timed": steps, "from_step": step},
                 "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        if distributed.is_main():
            write_cache(path, key, entry)
        log.info("train.precision/channels_last=auto: %s; median s/step over %d steps after %d warm-up on %s: %s%s%s "
                 "(probe %.1f s; cached in %s)", chosen.name, steps, warmup, _machine_name(machine), _format(timings),
                 "".join(f"; {n} failed: {r}" for n, r in failed.items()),
                 "".join(f"; {n} not tried: {r}" for n, r in skipped.items()), time.perf_counter() - start, path)
    if distributed.world_size() > 1:  # rank 0's choice everywhere (timings differ a little between processes)
        shared = [chosen]
        torch.distributed.broadcast_object_list(shared, src=0)
        chosen = shared[0]
    return chosen


def _format(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {1000 * s:.0f} ms" for name, s in timings.items())


def _machine_name(machine: dict) -> str:
    if machine["device"] == "cuda":
        return machine["gpu"]
    return f"{machine['cpu']} ({' '.join(machine['flags'])}; {machine['threads']} threads)"
