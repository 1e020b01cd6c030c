"""Does a translator follow its input? How much its output changes with the input against with the style.

A translator is meant to keep its input's structure and draw the target's appearance. One that returns the
same image for every input (a generator that ignores its encoder) can still score well on texture or FID.
For n inputs x_i and K styles (GP-UNIT: style codes; DeepI2I: noise vectors z) shared by every input, with the
outputs y_ik of one target:
- **input sensitivity** = mean over k and pairs i != j of |y_ik - y_jk|, over the same mean of |x_i - x_j|:
  how much the output moves when only the input changes, in units of how much the inputs differ. The
  identity scores 1; a translator that ignores its input scores 0.
- **style sensitivity** = mean over i and pairs k != l of |y_ik - y_il|, in the same units: how much it
  moves when only the style changes.
Mean absolute pixel differences of images in [-1, 1]. A translator whose input sensitivity is below
:data:`MIN_INPUT_SENSITIVITY` gets a warning in the report.
"""
from __future__ import annotations

import torch

MIN_INPUT_SENSITIVITY = 0.1  # the outputs move by less than a tenth of how much the inputs differ


def _mean_pairwise_difference(images: torch.Tensor) -> torch.Tensor:
    """Mean |a - b| over the pairs of the first axis of (n, ...) (for each index of the other axes: (n, m, ...)
    gives a mean over the m)."""
    n = images.shape[0]
    if n < 2:
        raise ValueError("need at least two images to compare")
    flat = images.reshape(n, -1).double()
    total = sum((flat[i] - flat[i + 1:]).abs().mean(1).sum() for i in range(n - 1))
    return total / (n * (n - 1) / 2)


def input_sensitivity(inputs: torch.Tensor, outputs: torch.Tensor) -> dict:
    """``inputs`` (n, 3, H, W) and ``outputs`` (n, K, 3, H', W'): output k of input i with style k (the same
    style k for every input), all in [-1, 1]. Returns the two sensitivities (module docstring), the raw
    mean differences and whether the input sensitivity is below :data:`MIN_INPUT_SENSITIVITY`."""
    if inputs.dim() != 4 or outputs.dim() != 5 or outputs.shape[0] != inputs.shape[0]:
        raise ValueError(f"expected inputs (n, 3, H, W) and outputs (n, K, 3, H, W) with the same n, got "
                         f"{tuple(inputs.shape)} and {tuple(outputs.shape)}")
    n, k = outputs.shape[:2]
    if n < 2:
        raise ValueError("need at least two inputs to see whether the output follows them")
    input_diff = float(_mean_pairwise_difference(inputs))
    if input_diff == 0:
        raise ValueError("the inputs are all the same image")
    across_inputs = float(torch.stack([_mean_pairwise_difference(outputs[:, j]) for j in range(k)]).mean())
    across_styles = (float(torch.stack([_mean_pairwise_difference(outputs[i]) for i in range(n)]).mean())
                     if k > 1 else float("nan"))
    sensitivity = across_inputs / input_diff
    return {"input_sensitivity": sensitivity, "style_sensitivity": across_styles / input_diff,
            "input_difference": input_diff, "output_difference_across_inputs": across_inputs,
            "output_difference_across_styles": across_styles, "inputs": n, "styles": k,
            "ignores_input": sensitivity < MIN_INPUT_SENSITIVITY}


def format_sensitivity(s: dict) -> str:
    line = (f"Input sensitivity      {s['input_sensitivity']:.3g}      style sensitivity {s['style_sensitivity']:.3g}"
            f"  ({s['inputs']} inputs x {s['styles']} styles; 1 = the output moves as much as the inputs differ)")
    if s["ignores_input"]:
        line += (f"\n  WARNING: the outputs barely depend on the input (below {MIN_INPUT_SENSITIVITY}): this translator "
                 "ignores its input image")
    return line
