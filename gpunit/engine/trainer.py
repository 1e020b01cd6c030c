"""The base class of every method's trainer: it owns the plumbing of a training step.

A method's trainer declares what is its own:
- its networks: ``self.network(name, module)`` moves a module to the device (channels_last, compiled
  when asked) and puts it in the checkpoint; ``self.ema(name, module, decay, start)`` keeps a moving
  average of one, updated after every iteration;
- its optimisers: ``self.optimizer(name, params, lr, ...)``;
- its data: ``self.loader(name, dataset)``, then ``self.next_batch(name)`` gives the next batch on the
  device; the position is checkpointed, so a resumed run reads the same batches;
- the losses of its steps: ``d_step`` / ``g_step`` give :meth:`Trainer.update` a function that
  computes one micro-batch's weighted total and logged terms (the paper's equations, line by line);
- ``iteration(step)``: which steps run, in which order, on which batch.

The base does the rest, the same way for every trainer: precision (autocast) and the grad scaler,
gradient accumulation over micro-batches (``train.accumulate``; one spectral-norm power iteration per
update), gradient averaging across torchrun processes, device moves, EMA updates, and the state that
checkpoints hold (networks, optimisers, data position, the method's own extra state). The loop
(:func:`gpunit.engine.loop.train_loop`) drives it and adds logging, the NaN watch, checkpoints,
image grids and signals.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from gpunit.data.datasets import make_loader
from gpunit.engine import accumulate, distributed, precision_probe, speed
from gpunit.engine.checkpoints import CheckpointError
from gpunit.engine.optim import adam


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers (BN statistics) are copied."""
    # one kernel for all tensors on CUDA; lists of different lengths raise
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


class _Loader:
    """An endless loader over a dataset that starts after ``consumed`` samples (opened on first use)."""

    def __init__(self, dataset, batch: int, seed: int, num_workers: int, device: torch.device):
        self.dataset, self.batch, self.seed, self.num_workers, self.device = dataset, batch, seed, num_workers, device
        self.consumed, self.iterator = 0, None

    def next(self) -> dict:
        if self.iterator is None:
            self.iterator = iter(make_loader(self.dataset, self.batch, self.seed, start=self.consumed,
                                             num_workers=self.num_workers, device_type=self.device.type,
                                             rank=distributed.rank(), world=distributed.world_size()))
        batch = next(self.iterator)
        self.consumed += self.batch
        return batch

    def restart_at(self, consumed: int) -> None:
        self.consumed, self.iterator = int(consumed), None  # a loader over the old position is dropped

    def close(self) -> None:
        """Stop the worker processes now (a later ``next`` opens a new loader at the same position)."""
        iterator, self.iterator = self.iterator, None
        if hasattr(iterator, "_shutdown_workers"):  # what DataLoader's own __del__ calls; a traceback may keep
            iterator._shutdown_workers()            # the iterator alive, and the workers with it, long after


class Trainer:
    """What :func:`gpunit.engine.loop.train_loop` drives; see the module docstring for what a method adds.

    Subclasses implement ``iteration(step) -> {tag: 0-dim tensor}`` and may override ``sample_images``,
    ``on_checkpoint`` and ``extra_state`` / ``load_extra_state``; what a finished run writes (its
    ``export``) is the method's own, called by its ``run_*`` function. Logged values are tensors tagged like
    ``"loss/g/adv"``; do not call ``.item()`` on them (the loop reads them when it logs).
    """

    images_per_step: int = 0
    # Keys of checkpoints written before the engine owned the optimisers: {old key: optimiser name}.
    legacy_optimizer_keys: dict[str, str] = {}

    def __init__(self, train, device: torch.device, num_workers: int = 0):
        self.device, self.seed, self.num_workers = device, train.seed, num_workers
        speed.tune_backends(device)
        speed.check_precision(train.precision)
        speed.check_channels_last(train.channels_last)
        # "auto": fp32 and contiguous until a timed probe before the first step picks (precision_probe.py)
        self._auto = {k: getattr(train, k) for k in ("precision", "channels_last")} \
            if "auto" in (train.precision, train.channels_last) else {}
        self.channels_last = train.channels_last is True
        self.precision = "fp32" if train.precision == "auto" else train.precision
        self._auto_chosen: dict | None = None
        self.autocast = speed.autocast(device, self.precision)
        self.scaler = speed.grad_scaler(device, self.precision)
        self.batch = train.batch_size  # the global batch of one update; each process loads its share
        self.accumulate = train.accumulate
        # this process's share of the batch; fails early when it does not split into the micro-batches
        self.local_batch = accumulate.micro_batch_size(self.batch, self.accumulate) * self.accumulate
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._trained: dict[str, list[Tensor]] = {}
        self._emas: list[tuple[nn.Module, nn.Module, float, int]] = []
        self._loaders: dict[str, _Loader] = {}
        self._saved: set[str] = set()
        self._to_compile: list[nn.Module] = []
        self.progress = True

    # ------------------------------------------------------------------ declarations
    def network(self, name: str, module: nn.Module, save: bool = True, compile: bool = False) -> nn.Module:
        """``module`` on the device (channels_last when configured); ``save``: in the checkpoint (a frozen,
        loaded network need not be); ``compile``: torch.compile its forward before the first step (after
        any moving average was copied from it; state dict keys unchanged)."""
        module = speed.prepare_module(module.to(self.device), self.channels_last)
        if compile:
            self._to_compile.append(module)
        self.networks[name] = module
        if save:
            self._saved.add(name)
        return module

    def ema(self, name: str, module: nn.Module, decay: float, start: int = 0) -> nn.Module:
        """A frozen moving average of ``module``, updated after every iteration: a copy of it before step
        ``start``, then ``decay * ema + (1 - decay) * module``."""
        average = copy.deepcopy(module).requires_grad_(False).eval()
        self.networks[name] = average
        self._saved.add(name)
        self._emas.append((average, module, decay, start))
        return average

    def optimizer(self, name: str, params, lr: float, betas: Sequence[float], weight_decay: float = 0.0,
                  eps: float = 1e-8) -> torch.optim.Optimizer:
        """Adam over ``params`` (fused on CUDA), checkpointed under ``name``."""
        params = [p for p in params if p.requires_grad]
        self._trained[name] = params
        self.optimizers[name] = adam(params, lr, betas, self.device, weight_decay, eps)
        return self.optimizers[name]

    def loader(self, name: str, dataset) -> None:
        """An endless, resumable loader of ``dataset`` in global batches of ``train.batch_size``."""
        self._loaders[name] = _Loader(dataset, self.batch, self.seed, self.num_workers, self.device)

    # ------------------------------------------------------------------ per step
    def next_batch(self, name: str = "train") -> dict:
        """The next batch of loader ``name`` on the device (tensors of 4 dims channels_last when configured)."""
        return self.to_device(self._loaders[name].next())

    def to_device(self, batch):
        """Tensors (alone or in dicts, lists, tuples) on the device; images channels_last when configured."""
        if isinstance(batch, Tensor):
            batch = batch.to(self.device, non_blocking=True)
            return batch.contiguous(memory_format=torch.channels_last) if self.channels_last and batch.dim() == 4 \
                else batch
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def micro_batches(self, batch) -> list:
        """``batch`` (tensors, or dicts / lists of them) cut into ``train.accumulate`` equal micro-batches."""
        return accumulate.split(batch, self.accumulate)

    def update(self, names: Sequence[str], loss_of: Callable[[int], tuple[Tensor, dict[str, Tensor]]],
               shared_graph: bool = False) -> dict[str, Tensor]:
        """One update of the optimisers ``names`` from ``train.accumulate`` micro-batches.

        ``loss_of(i)`` runs micro-batch i forward (inside ``self.autocast()`` where it wants low precision)
        and returns (its total loss, {tag: term}). ``shared_graph``: the micro-batches backpropagate through
        a graph they share (features computed once for the whole batch). Returns the mean of each term.
        """
        return accumulate.update([self.optimizers[n] for n in names], [p for n in names for p in self._trained[n]],
                                 self.scaler, self.accumulate, loss_of, self.networks.values(), shared_graph)

    def parameters_of(self, optimizer: str) -> list[Tensor]:
        """The parameters the optimiser ``optimizer`` updates."""
        return self._trained[optimizer]

    def loss_scale(self) -> Tensor:
        """The grad scaler's loss scale as a tensor (1 without fp16), for penalties taken on scaled gradients."""
        return speed.loss_scale(self.scaler, self.device)

    def iteration(self, step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def resolve_auto_settings(self, step: int = 1) -> None:
        """Settle ``train.precision`` / ``train.channels_last`` = ``"auto"`` by timing copies of this trainer
        from ``step`` on (:mod:`gpunit.engine.precision_probe`; no RNG or loader moves). Done before the first
        step; call it earlier to read ``self.precision`` before training (the benchmarks do)."""
        if self._auto:
            chosen = precision_probe.choose(self, step, self._auto["precision"], self._auto["channels_last"])
            self._auto = {}
            precision_probe.apply_setting(self, chosen)
            self._auto_chosen = {"precision": chosen.precision, "channels_last": chosen.channels_last}

    def train_step(self, step: int) -> dict[str, Tensor]:
        """One iteration of the method, then the moving averages."""
        self.resolve_auto_settings(step)
        while self._to_compile:
            speed.maybe_compile(self._to_compile.pop(), True)
        out = self.iteration(step)
        for average, module, decay, start in self._emas:
            ema_update(average, module, 0.0 if step < start else decay)
        return out

    def close(self) -> None:
        """Shut down the loaders' worker processes (the loop calls it on the way out, errors included)."""
        for loader in self._loaders.values():
            loader.close()

    # ------------------------------------------------------------------ monitoring (optional)
    def sample_images(self, step: int) -> dict[str, Tensor | float]:
        """``{tag: grid (3, H, W) in [-1, 1]}`` plus figures measured on the samples (``{"metric/...": float}``,
        logged as scalars); runs with every RNG preserved."""
        return {}

    def on_checkpoint(self, step: int) -> None:
        """Called before each checkpoint with every RNG preserved; must not change later steps."""

    # ------------------------------------------------------------------ state
    def extra_state(self) -> dict:
        """The method's own state beyond networks, optimisers and data position (tensors, plain values)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {**{name: self.networks[name].state_dict() for name in sorted(self._saved)},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "consumed": {name: loader.consumed for name, loader in self._loaders.items()},
                # what "auto" chose: a resumed run keeps it even where the cache is gone or would measure otherwise
                **({"auto_settings": self._auto_chosen} if self._auto_chosen else {}),
                **self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        state = self._upgraded(dict(state))
        for name in sorted(self._saved):
            if name not in state:
                raise CheckpointError(f"the checkpoint has no '{name}' network: it was not written by this "
                                      "configuration (resume with the config of that run)")
            self.networks[name].load_state_dict(state[name])
        if set(state["optimizers"]) != set(self.optimizers):
            raise CheckpointError(f"the checkpoint has optimizers for {sorted(state['optimizers'])}, this run "
                                  f"trains {sorted(self.optimizers)}: resume with the config of that run")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, loader in self._loaders.items():
            loader.restart_at(state["consumed"].get(name, 0))
        self.load_extra_state(state)
        if self._auto and state.get("auto_settings"):
            self._auto = {}
            self._auto_chosen = dict(state["auto_settings"])
            precision_probe.apply_setting(self, precision_probe.Setting(**self._auto_chosen))

    def _upgraded(self, state: dict) -> dict:
        """A checkpoint of gpunit 0.1 (optimisers under their own keys, one loader's count) in today's layout."""
        if "optimizers" not in state:
            state["optimizers"] = {name: state.pop(key) for key, name in self.legacy_optimizer_keys.items()
                                   if key in state}
        if not isinstance(state.get("consumed"), dict):
            state["consumed"] = {name: int(state.get("consumed", 0)) for name in self._loaders}
        return state
