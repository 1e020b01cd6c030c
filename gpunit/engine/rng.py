"""Every global random stream (python, numpy, torch CPU and CUDA) as checkpointable state.

Checkpoints keep these so a resumed run continues bitwise identically; side work (image grids, the style
sampler's fit) runs inside :func:`preserved_rng_state` so how often it happens never changes training.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

from gpunit.engine import distributed


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


def per_process_seed(seed: int) -> None:
    """After the networks are built: a different random stream per process of a distributed run."""
    if distributed.world_size() > 1:
        seed_everything(seed + 1000 * distributed.rank())
