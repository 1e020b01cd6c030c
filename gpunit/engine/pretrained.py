"""Locating pretrained weights files that cannot be downloaded at run time.

Every pretrained network (VGG19 for the perceptual loss, Inception for FID, AlexNet for
LPIPS, IR-SE50 for the identity loss, BigGAN, Mask R-CNN) is found the same way: an
explicit path from the config or command line, else the standard torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``). When neither holds the file we raise
:class:`MissingWeightsError`, whose message names the file, where to put it and where it
comes from, instead of trying a download that fails offline.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is not on disk; the message says what to put where."""


def hub_checkpoint_dir() -> Path:
    """The torch hub cache for weights files: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(filename: str, url: str, path: str | os.PathLike | None = None,
                 what: str = "pretrained weights", option: str | None = None) -> Path:
    """Return the path of a weights file, or raise a MissingWeightsError that says how to get it.

    ``path`` may be a file or a folder holding ``filename``; without it the hub cache is used.
    ``option`` names the config key or command-line flag that sets ``path``.
    """
    candidates = []
    if path:
        p = Path(path).expanduser()
        candidates.append(p / filename if p.is_dir() else p)
    candidates.append(hub_checkpoint_dir() / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    hint = f" or pass its path with {option}" if option else ""
    raise MissingWeightsError(
        f"{what}: file '{filename}' not found (looked in: {looked}). Download it from {url} "
        f"and put it in {hub_checkpoint_dir()}{hint}."
    )


def load_state_dict(path: Path) -> dict:
    """Load a weights file safely (tensors only), unwrapping a top-level 'state_dict' key."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state
