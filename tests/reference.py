"""Comparing our networks with the published implementation's fixtures, on any CPU.

The rule for every fixture test (docs/testing.md, "Tests that hold on any CPU"):

1. **float64 against float64.** The fixtures hold the published code's outputs computed in float64
   from the float32 weights and inputs (``*_float64.pt``). We run our network in float64 on the same
   weights and inputs and compare at ``rtol=1e-10, atol=1e-10 * max|ref|``. The fixtures README
   observed at most 4e-12 between AVX2 and AVX-512 kernels, so this holds on any CPU, while a real
   difference from the published network (a wrong padding, norm or layer order) is larger than 1e-6.
2. **float32 against float64, within a tolerance read off the data.** Our float32 run must lie as
   close to the float64 reference as float32 rounding allows for that output. How much that is
   depends on the output's conditioning (the raw spectral-norm cases pass through values ~1e20), and
   the stored float32 fixture measures it: its own distance from the float64 reference, times
   ``FLOAT32_MARGIN`` (another CPU or summation order rounds differently, by up to about 2x
   observed), and never tighter than the fixtures README's ``1e-5 * max|ref|`` with ``rtol=1e-4``.
   No tolerance here comes from one machine's run.
"""
from __future__ import annotations

import copy

import torch

FLOAT64_RTOL = 1e-10
FLOAT32_MARGIN = 8


def _cast(value, dtype):
    if isinstance(value, (list, tuple)):
        return [_cast(v, dtype) for v in value]
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


class Fixture:
    """One fixture file and its float64 references. ``view(dtype)`` gives the inputs as that precision
    sees them: float64 runs take chained inputs (the content features fed to the generator, say) from
    the float64 file, as the references were computed."""

    def __init__(self, float32: dict, float64: dict):
        self.float32, self.float64 = float32, float64

    def __getitem__(self, key):
        return self.float32[key]

    def view(self, dtype: torch.dtype):
        source = {**self.float32, **self.float64} if dtype == torch.float64 else self.float32
        return _View(source, dtype)


class _View:
    def __init__(self, source: dict, dtype: torch.dtype):
        self.source, self.dtype = source, dtype

    def __getitem__(self, key):
        return _cast(self.source[key], self.dtype)


def _pairs(ours, ref64, ref32, name):
    """Flatten nested lists of outputs into (ours, float64 ref, float32 ref, name) leaves."""
    if isinstance(ref64, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(ref64) == len(ref32), name
        for i, leaf in enumerate(zip(ours, ref64, ref32)):
            yield from _pairs(*leaf, f"{name}[{i}]")
    else:
        yield ours, ref64, ref32, name


def assert_reproduces(net: torch.nn.Module, run, fixture: Fixture, keys, pick=lambda ref: ref) -> None:
    """``run(net, inputs)`` reproduces the fixture outputs under ``keys`` (one key or a list, selected
    with ``pick``), in float64 and in float32, by the rule in the module docstring."""
    keys = [keys] if isinstance(keys, str) else list(keys)

    def refs(file):
        out = [pick(file[k]) for k in keys]
        return out[0] if len(keys) == 1 else out

    ref64, ref32 = refs(fixture.float64), refs(fixture.float32)
    with torch.no_grad():
        ours32 = run(net, fixture.view(torch.float32))
        ours64 = run(copy.deepcopy(net).double(), fixture.view(torch.float64))
    name = "+".join(keys)
    for ours, r64, _, leaf in _pairs(ours64, ref64, ref32, name):
        assert ours.dtype == torch.float64 and ours.shape == r64.shape, leaf
        torch.testing.assert_close(ours, r64, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * float(r64.abs().max()),
                                   msg=lambda m, leaf=leaf: f"{leaf} (float64): {m}")
    for ours, r64, r32, leaf in _pairs(ours32, ref64, ref32, name):
        assert ours.dtype == torch.float32 and ours.shape == r64.shape, leaf
        fixture_rounding = float((r32.double() - r64).abs().max())
        atol = max(1e-5 * float(r64.abs().max()), FLOAT32_MARGIN * fixture_rounding)
        torch.testing.assert_close(ours.double(), r64, rtol=1e-4, atol=atol,
                                   msg=lambda m, leaf=leaf: f"{leaf} (float32): {m}")
