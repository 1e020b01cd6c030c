"""What every evaluation shares: metrics that skip themselves without their weights, PNG-exact images,
and the results written as JSON (and to a run's TensorBoard)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from gpunit.engine.logger import RunLogger
from gpunit.engine.pretrained import MissingWeightsError

log = logging.getLogger("gpunit.evaluate")


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) images in [-1, 1] -> (N, H, W, 3) uint8, as written to PNG (for the synthetic measures)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def optional_metric(name: str, build, skipped: dict):
    """``build()``, or None when its weights file is missing; ``skipped[name]`` then says which file enables it."""
    try:
        return build()
    except MissingWeightsError as err:
        skipped[name] = str(err)
        log.warning("%s skipped: %s", name, err)
        return None


def save_results(results: dict, path: str | Path, run_dir: str | Path | None = None, step: int = 0) -> None:
    """The results as JSON at ``path``; with ``run_dir``, their numbers also as ``metric/<key>`` in its TensorBoard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float))
    if run_dir is not None:
        logger = RunLogger(run_dir)
        logger.scalars(step, {f"metric/{k}": v for k, v in results.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)})
        logger.close()
