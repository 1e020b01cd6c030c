"""Optimizers of every trainer: Adam with the fastest kernel on each device, and continuing another run's
Adam state (a pretrained release's moments, as the published DeepI2I code does when it starts from BigGAN)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from gpunit.engine.checkpoints import CheckpointError


def adam(params, lr: float, betas: Sequence[float], device: torch.device, weight_decay: float = 0.0,
         eps: float = 1e-8) -> torch.optim.Adam:
    """Adam with the fused kernel on CUDA (one launch for all parameters), foreach elsewhere."""
    fused = device.type == "cuda"
    return torch.optim.Adam(list(params), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                            fused=fused or None, foreach=None if fused else True)


def load_adam_state(opt: torch.optim.Optimizer, state: Mapping, source: str,
                    rows: Mapping[int, Sequence[int]] | None = None) -> int:
    """Continue another run's Adam moments and step counts in ``opt``, keeping our hyper-parameters.

    Entry i of ``state`` belongs to our i-th parameter (the published parameter order; the source may
    have more entries, for heads we do not have). ``rows``: {parameter index: source rows} for class
    embeddings whose rows were reordered or dropped. Returns the number of entries loaded.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    found = state.get("state", {}) if isinstance(state, Mapping) else {}
    loaded = {}
    for i, p in enumerate(params):
        entry = found.get(i)
        if entry is None:
            continue
        entry = dict(entry)
        for key in ("exp_avg", "exp_avg_sq"):
            moment = entry[key]
            if rows and i in rows:
                moment = moment[list(rows[i])]
            if tuple(moment.shape) != tuple(p.shape):
                raise CheckpointError(f"{source}: Adam state {i} ({key}) has shape {tuple(moment.shape)}, but our "
                                      f"parameter {i} has {tuple(p.shape)}; the optimizer file is not from these "
                                      "weights (set init.optimizer_states=false to start Adam afresh)")
            entry[key] = moment
        loaded[i] = entry
    opt.load_state_dict({"state": loaded, "param_groups": opt.state_dict()["param_groups"]})
    return len(loaded)

