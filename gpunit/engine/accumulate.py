"""Gradient accumulation, shared by every trainer: ``train.accumulate = k`` makes each optimiser update
from k forward/backward passes over micro-batches of ``train.batch_size / k`` images, so a small GPU
reaches a large batch (the published DeepI2I run: 4 x 8 = 32; BigGAN's release: 256 x 8 = 2048).

``train.batch_size`` stays the batch of one update; ``k`` only trades memory for time. The update
equals the one-batch update up to float rounding because
- every loss term is a mean over samples: each micro-batch's loss is divided by k and the
  gradients add up in ``.grad``; a term over the whole batch (Stage I's ``||Ec(x)||_2``) is
  computed once, on the whole batch, and backpropagated with the last micro-batch;
- spectral norm power-iterates once per update, as it does for one batch, not once per
  micro-batch: every micro-batch uses the sigmas of the first (:func:`power_iteration_once`);
- the batch, its augmentation and the noise of a step are drawn for the whole batch and then split.
What stays per micro-batch: train-mode batch normalisation (BigGAN's generator) normalises each
micro-batch by its own statistics and moves its running statistics once per micro-batch, as the
published DeepI2I and BigGAN runs do with their accumulation. The tests state the tolerances:
``tests/engine/test_accumulation.py`` (Stage I, Stage II) and ``tests/deepi2i/test_deepi2i_train.py``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import _SpectralNorm

from gpunit.engine import distributed


def micro_batch_size(global_batch: int, accumulate: int) -> int:
    """This process's micro-batch: the global batch over the processes, then over ``accumulate``."""
    if accumulate < 1:
        raise ValueError(f"train.accumulate must be at least 1, got {accumulate}")
    local = distributed.local_batch(global_batch)
    if local % accumulate:
        world = distributed.world_size()
        where = f" per process ({global_batch} over {world} processes)" if world > 1 else ""
        raise ValueError(f"train.batch_size={global_batch} gives {local} images{where}, which do not split into "
                         f"train.accumulate={accumulate} equal micro-batches; use a batch size that is a multiple "
                         f"of {accumulate * world}")
    return local // accumulate


def split(batch: Any, k: int) -> list:
    """``k`` micro-batches of ``batch``: tensors are cut into k equal parts along dim 0; dicts, lists and
    tuples are split element-wise; anything else is shared by every part."""
    if k == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0 or batch.shape[0] % k:
            raise ValueError(f"cannot split a batch of shape {tuple(batch.shape)} into {k} equal micro-batches")
        return list(batch.chunk(k))
    if isinstance(batch, dict):
        parts = {key: split(value, k) for key, value in batch.items()}
        return [{key: parts[key][i] for key in batch} for i in range(k)]
    if isinstance(batch, (list, tuple)):
        parts = [split(value, k) for value in batch]
        return [type(batch)(p[i] for p in parts) for i in range(k)]
    return [batch] * k


def _unique_modules(networks: Iterable[nn.Module | None]) -> Iterator[nn.Module]:
    seen: set[int] = set()
    for net in networks:
        if net is None:
            continue
        for m in net.modules():
            if id(m) not in seen:
                seen.add(id(m))
                yield m


class _TorchSpectralNormReplay:
    """torch's ``parametrizations.spectral_norm`` in train mode power-iterates its vectors ``_u``, ``_v`` and
    takes sigma from the result. The first micro-batch does that and the vectors after each call are
    recorded; the later micro-batches run the parametrization in eval mode (sigma from the stored vectors,
    no iteration) with the vectors of the same call of the first micro-batch put back before each call."""

    def __init__(self, module: _SpectralNorm):
        self.module, self.log, self.final, self.call = module, [], None, 0
        self.hooks = [module.register_forward_hook(self._after), module.register_forward_pre_hook(self._before)]

    def _after(self, module, args, out) -> None:
        if self.final is None:
            self.log.append((module._u.clone(), module._v.clone()))

    def _before(self, module, args) -> None:
        if self.final is not None and self.log:
            u, v = self.log[min(self.call, len(self.log) - 1)]
            self.call += 1
            with torch.no_grad():
                module._u.copy_(u)
                module._v.copy_(v)

    def replay(self) -> None:
        if self.final is None:
            self.final = (self.module._u.clone(), self.module._v.clone())
            self.module.training = False
        self.call = 0

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        if self.final is not None:
            with torch.no_grad():
                self.module._u.copy_(self.final[0])
                self.module._v.copy_(self.final[1])
            self.module.training = True


@contextlib.contextmanager
def power_iteration_once(networks: Iterable[nn.Module | None]) -> Iterator[Callable[[], None]]:
    """Spectral norm power-iterates once per update, however many micro-batches it runs.

    Yields ``micro_batch_done``, to be called after each micro-batch. The first micro-batch iterates as
    one batch would; each later one repeats its calls, every call with the sigma of the same call of
    the first one (also for a layer called several times per micro-batch), without iterating; the
    vectors end as the first micro-batch left them. Covers torch's ``parametrizations.spectral_norm``
    and layers with their own spectral norm that offer ``hold_power_iteration()``,
    ``replay_power_iteration()`` and ``release_power_iteration()`` (BigGAN's). Modules in eval mode
    are left alone.
    """
    modules = list(_unique_modules(networks))
    torch_sn = [_TorchSpectralNormReplay(m) for m in modules
                if isinstance(m, _SpectralNorm) and m.training and hasattr(m, "_u")]  # 1-d weights have none
    own = [m for m in modules if hasattr(m, "hold_power_iteration")]
    for m in own:
        m.hold_power_iteration()

    def micro_batch_done() -> None:
        for r in torch_sn:
            r.replay()
        for m in own:
            m.replay_power_iteration()

    try:
        yield micro_batch_done
    finally:
        for r in torch_sn:
            r.close()
        for m in own:
            m.release_power_iteration()


def update(optimizers: Sequence[torch.optim.Optimizer], params: Sequence[torch.Tensor], scaler: torch.amp.GradScaler,
           micro_batches: int, loss_of: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
           networks: Iterable[nn.Module | None] = (), shared_graph: bool = False) -> dict[str, torch.Tensor]:
    """One update of ``optimizers`` from ``micro_batches`` passes; returns the mean of each logged term.

    ``loss_of(i)`` runs micro-batch i forward and returns (its total loss, {tag: term}); a tag may be
    missing from some micro-batches (a term computed once per batch), its mean is over those that
    have it. ``networks``: every network the passes run, for :func:`power_iteration_once`.
    ``shared_graph``: the passes backpropagate through a graph they share (features computed once
    for the whole batch with gradient), which is then kept until the last one.
    Gradients are averaged over the processes of a torchrun job before the step, as for one batch.
    """
    k = micro_batches
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    with power_iteration_once(networks) as micro_batch_done:
        for i in range(k):
            total, terms = loss_of(i)
            scaler.scale(total / k if k > 1 else total).backward(retain_graph=shared_graph and i < k - 1)
            micro_batch_done()
            for tag, value in terms.items():
                value = value.detach()
                sums[tag] = sums[tag] + value.float() if tag in sums else value
                counts[tag] = counts.get(tag, 0) + 1
            del total, terms  # frees this micro-batch's graph before the next forward
    distributed.average_gradients(params)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    return {tag: value if counts[tag] == 1 else value / counts[tag] for tag, value in sums.items()}
