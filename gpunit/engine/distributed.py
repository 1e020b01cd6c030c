"""Multi-process training with PyTorch's own engine (``torchrun``).

    torchrun --nproc_per_node=4 scripts/train_stage2.py --config configs/gp_unit/stage2/cat2dog.yaml

Every process builds the same networks from the same seed, trains on its slice of each global
batch, and averages gradients with ``torch.distributed.all_reduce`` before each optimiser step,
so N processes with batch B/N follow the single-process run with batch B. Like StyleGAN2-ADA/3 we
average gradients ourselves instead of wrapping the networks in DistributedDataParallel: the
generator runs several forward passes per update and R1 needs a double backward, two things DDP's
reducer does not support. Rank 0 alone logs, samples images and writes checkpoints.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_spec: str = "auto") -> torch.device | None:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); returns this process's
    device (``cuda:LOCAL_RANK`` on GPUs), or None for a single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    use_cuda = torch.cuda.is_available() and device_spec != "cpu"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # NCCL for the gradients on GPUs; gloo for the small CPU-side agreements (any_process), which
        # NCCL cannot carry and which then need no GPU sync.
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return device


def local_batch(global_batch: int) -> int:
    """This process's share of the global batch; the global batch must divide evenly."""
    n = world_size()
    if global_batch % n:
        raise ValueError(f"train.batch_size={global_batch} (the global batch) does not divide by the {n} processes; "
                         f"use a multiple of {n} or another --nproc_per_node")
    return global_batch // n


def average_gradients(params) -> None:
    """All-reduce (mean) the gradients of ``params`` over the processes; no-op in a single process."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of one per tensor
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes, differentiably: for a loss term that is not a per-sample mean
    (a norm over the whole batch), so that the term and, after :func:`average_gradients`, its
    gradient are those of the global batch in one process. ``t`` itself in a single process."""
    if world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce  # its backward sums the gradients too

    return all_reduce(t)


def step_uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, step): every process of a distributed run draws
    the same one (e.g. one flip coin per global batch), and a resumed run draws it again."""
    return float(torch.rand((), generator=torch.Generator().manual_seed(seed * 1_000_003 + step)))


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (e.g. a stop signal reached one of them)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_on_main(obj) -> list | None:
    """``obj`` of every process as a list in rank order on rank 0, None on the others (``[obj]`` in a
    single process). Objects travel over the CPU backend (gloo), also in a GPU job."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
