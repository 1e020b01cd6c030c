"""How far a training step is from the machine's limit: FLOPs per step, FLOP/s, and the device's peak (issue 26).

- :func:`count_step` counts one ``train_step`` of a copy of a trainer with
  :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, matrix products, attention: the multiply-adds
  that a peak figure is about; element-wise work, normalisation and data movement count 0), split by network and
  into forward and backward. The total covers every op that ran, R1's double backward included; the split leans
  on torch's module tracker, which marks the second backward (the gradient of R1's gradient) as backward of the
  network it passes through, so D's "backward" holds both of its backward passes.
- :func:`peak` is the device's peak FLOP/s in a precision, with its derivation: on a CPU cores x clock x FLOPs
  per cycle of its vector unit (read from /proc/cpuinfo and lscpu), on a GPU a table of tensor-core peaks.

The benchmarks divide achieved FLOP/s (FLOPs per step / median seconds per step) by it.
"""
from __future__ import annotations

import os
import subprocess
from collections import defaultdict

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from gpunit.engine import precision_probe
from gpunit.engine.rng import preserved_rng_state


class _StepCounter(FlopCounterMode):
    """FlopCounterMode that also sums each op's FLOPs per top-level network and phase (forward / backward)."""

    def __init__(self, networks: dict[str, nn.Module]):
        super().__init__(display=False)
        self.split: dict[str, dict[str, int]] = defaultdict(lambda: {"forward": 0, "backward": 0})
        # our names, not class names (G and its EMA share a class); a network inside another (DeepI2I's wrapper
        # holds E, A and G) names its own submodules, and an op counts for the innermost network it ran in
        for name, net in _outer_first(networks).items():
            for sub, module in net.named_modules():
                self.mod_tracker._known_modules[module] = f"{name}.{sub}" if sub else name
                self.mod_tracker._seen_modules.add(module)  # else the tracker renames its children on first call
        self.depth = _depths(networks)

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            roots = {p.split(".")[0] for p in self.mod_tracker.parents} & set(self.depth)
            phase = "backward" if self.mod_tracker.is_bw else "forward"
            root = max(roots, key=self.depth.get) if roots else "(outside the networks)"
            self.split[root][phase] += flops
        return super()._count_flops(func_packet, out, args, kwargs)


def _depths(networks: dict[str, nn.Module]) -> dict[str, int]:
    """{name: how many of the other networks contain it}."""
    inside = {name: {id(m) for m in net.modules()} for name, net in networks.items()}
    return {name: sum(id(net) in inside[other] for other in networks if other != name)
            for name, net in networks.items()}


def _outer_first(networks: dict[str, nn.Module]) -> dict[str, nn.Module]:
    depth = _depths(networks)
    return dict(sorted(networks.items(), key=lambda item: depth[item[0]]))


class _PlainCounter(TorchDispatchMode):
    """The same FLOP formulas without torch's module tracker, which cannot follow ``torch.autograd.grad`` (R1):
    forward FLOPs per network through forward hooks on the networks, backward FLOPs (every backward pass, R1's
    double backward included) as one sum, told apart by whether the autograd engine is running."""

    def __init__(self, networks: dict[str, nn.Module]):
        super().__init__()
        self.registry = FlopCounterMode(display=False).flop_registry
        self.total, self.stack = 0, []
        self.split: dict[str, dict[str, int]] = defaultdict(lambda: {"forward": 0, "backward": 0})
        self.hooks = []
        def enter(name):
            def hook(module, args):
                self.stack.append(name)
            return hook

        def leave(module, args, output):  # returns None: the output stays as it is
            self.stack.pop()

        for name, net in _outer_first(networks).items():  # every submodule: a part may run alone (G.style_encoder);
            # the outer network's hooks run first, so the top of the stack is the innermost network
            for module in net.modules():
                self.hooks += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in self.registry:
            flops = self.registry[packet](*args, **kwargs, out_val=out)
            self.total += flops
            if torch._C._current_graph_task_id() != -1:
                self.split["(all networks)"]["backward"] += flops
            else:
                self.split[self.stack[-1] if self.stack else "(outside the networks)"]["forward"] += flops
        return out

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def count_modules(make) -> dict:
    """FLOPs of ``fn()`` for ``fn, modules = make()`` (``modules``: {name: network} to split by):
    ``{"total": int, "by_network": {name: {"forward": int, "backward": int}}, "method": str}``. When torch's
    module tracker cannot follow ``fn`` (``torch.autograd.grad``: R1), a fresh ``make()`` is counted by
    :class:`_PlainCounter` instead (backward not split by network)."""
    fn, modules = make()
    counter = _StepCounter(modules)
    try:
        with counter:
            fn()
        return {"total": counter.get_total_flops(), "by_network": {k: dict(v) for k, v in counter.split.items()},
                "method": "FlopCounterMode, per network forward and backward"}
    except RuntimeError as err:
        if "autograd.grad" not in str(err):
            raise
    fn, modules = make()
    plain = _PlainCounter(modules)
    try:
        with plain:
            fn()
    finally:
        plain.close()
    return {"total": plain.total, "by_network": {k: dict(v) for k, v in plain.split.items()},
            "method": "per network forward; the backward of all networks together (torch's module tracker cannot "
                      "follow R1's autograd.grad)"}


def count_step(trainer, step: int = 1) -> dict:
    """FLOPs of one ``train_step(step)`` of a deep copy of ``trainer`` (no RNG, loader or weight of ``trainer``
    moves), split per network (see the module docstring)."""
    setting = precision_probe.Setting(trainer.precision, trainer.channels_last)

    def make():
        clone = precision_probe.trainer_copy(trainer, setting)
        networks = dict(clone.networks)
        inside = {id(m) for net in networks.values() for m in net.modules()}
        networks.update({name: value for name, value in vars(clone).items()  # frozen helpers (VGG, IR-SE50)
                         if isinstance(value, nn.Module) and id(value) not in inside and name not in networks})

        def run():
            with preserved_rng_state():
                clone.train_step(step)
        return run, _distinct(networks)

    return count_modules(make)


def _distinct(modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """``modules`` with each module once (the first name it has)."""
    seen, out = set(), {}
    for name, net in modules.items():
        if id(net) not in seen:
            seen.add(id(net))
            out[name] = net
    return out


# ----------------------------------------------------------------------------- peak
# Dense tensor-core peaks in TFLOP/s (vendor data sheets; SXM parts where there are two): bf16/fp16 with fp32
# accumulation, tf32, and plain fp32 (CUDA cores). Matched by substring of torch.cuda.get_device_name().
GPU_PEAKS_TFLOPS = {
    "H200": {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67},
    "H100": {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67},
    "A100": {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
    "L40S": {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6},
    "L4": {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3},
    "A10": {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2},
    "RTX 4090": {"bf16": 165, "fp16": 165, "tf32": 82.6, "fp32": 82.6},
    "RTX 3090": {"bf16": 71, "fp16": 71, "tf32": 35.6, "fp32": 35.6},
    "V100": {"fp16": 125, "fp32": 15.7},
    "T4": {"fp16": 65, "fp32": 8.1},
}


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _cpuinfo() -> dict[str, str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    out = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_clock_ghz(lscpu: dict[str, str] | None = None, cpuinfo: dict[str, str] | None = None) -> tuple[float, str]:
    """The clock to count the peak at, and where it came from: lscpu's "CPU max MHz" (the boost clock), else
    /proc/cpuinfo's "cpu MHz", else BogoMIPS / 2 (twice the clock on x86)."""
    lscpu = _lscpu() if lscpu is None else lscpu
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    if lscpu.get("CPU max MHz"):
        return float(lscpu["CPU max MHz"]) / 1000, "lscpu CPU max MHz"
    if cpuinfo.get("cpu MHz"):
        return float(cpuinfo["cpu MHz"]) / 1000, "/proc/cpuinfo cpu MHz (no max MHz: a VM)"
    bogomips = lscpu.get("BogoMIPS") or cpuinfo.get("bogomips")
    if bogomips:
        return float(bogomips) / 2000, "BogoMIPS / 2"
    return 0.0, "unknown"


def cpu_flops_per_cycle(flags: set[str], vendor: str, family: int) -> dict[str, tuple[int, str]]:
    """fp32 / bf16 / fp16 FLOPs per cycle per core of the vector unit, with the reasoning."""
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:  # Zen 4: AVX-512 on two 256-bit FMA pipes (double-pumped)
            fp32 = (2 * 8 * 2, "AVX-512 on Zen 4's 2 x 256-bit FMA pipes: 2 x 8 lanes x 2")
        else:  # Zen 5 and Xeons with two 512-bit FMA units (some Xeons have one: then half this)
            fp32 = (2 * 16 * 2, "AVX-512, 2 FMA units: 2 x 16 lanes x 2")
    elif "avx2" in flags and "fma" in flags:
        fp32 = (2 * 8 * 2, "AVX2, 2 FMA units: 2 x 8 lanes x 2")
    elif "avx" in flags:
        fp32 = (8 * 2, "AVX without FMA: 8 lanes x (1 mul + 1 add)")
    else:
        fp32 = (4 * 2, "SSE: 4 lanes x (1 mul + 1 add)")
    out = {"fp32": fp32}
    if "amx_bf16" in flags:
        out["bf16"] = (1024, "AMX-BF16: 1024 per core per cycle (Intel's figure)")
    elif "avx512_bf16" in flags:
        out["bf16"] = (2 * fp32[0], "AVX512-BF16 dot products: 2 x fp32 (pairs of bf16 per fp32 lane)")
    else:
        out["bf16"] = (fp32[0], "no bf16 instructions: emulated, at most the fp32 peak")
    if "amx_fp16" in flags:
        out["fp16"] = (1024, "AMX-FP16: 1024 per core per cycle")
    elif "avx512_fp16" in flags:
        out["fp16"] = (2 * fp32[0], "AVX512-FP16: 2 x fp32 (32 lanes)")
    else:
        out["fp16"] = (fp32[0], "no fp16 arithmetic: converted to fp32, at most the fp32 peak")
    return out


def peak(device: torch.device, precision: str = "fp32") -> dict:
    """``{"flops": peak FLOP/s, "derivation": str, "name": device name}`` for ``precision`` on ``device``;
    ``flops`` is None for a GPU missing from :data:`GPU_PEAKS_TFLOPS`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        row = next((v for k, v in GPU_PEAKS_TFLOPS.items() if k in name), None)
        if row is None:
            return {"flops": None, "name": name, "derivation": f"{name}: not in gpunit.engine.flops.GPU_PEAKS_TFLOPS"}
        # fp32 convolutions run on tensor cores in TF32 (cuDNN's default in torch), matrix products do not
        key = precision if precision in row else "fp32"
        if precision == "fp32" and "tf32" in row and torch.backends.cudnn.allow_tf32:
            key = "tf32"
        return {"flops": row[key] * 1e12, "name": name,
                "derivation": f"{name}: {row[key]} TFLOP/s dense {key} (data sheet)"}
    lscpu, cpuinfo = _lscpu(), _cpuinfo()
    flags = set((cpuinfo.get("flags") or lscpu.get("Flags") or "").split())
    vendor, family = cpuinfo.get("vendor_id", ""), int(cpuinfo.get("cpu family", "0") or 0)
    name = cpuinfo.get("model name") or lscpu.get("Model name") or "CPU"
    cores = _physical_cores(lscpu)
    threads = torch.get_num_threads()
    used = min(cores, threads) if cores else threads
    ghz, clock_source = cpu_clock_ghz(lscpu, cpuinfo)
    per_cycle, why = cpu_flops_per_cycle(flags, vendor, family)[precision]
    flops = used * ghz * 1e9 * per_cycle
    return {"flops": flops, "name": name,
            "derivation": f"{name}: {used} cores (of {cores}; torch threads {threads}) x {ghz:.2f} GHz "
                          f"({clock_source}) x {per_cycle} {precision} FLOPs/cycle ({why}) = {flops / 1e9:.0f} GFLOP/s"}


def _physical_cores(lscpu: dict[str, str]) -> int:
    try:
        return int(lscpu["Core(s) per socket"]) * int(lscpu.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def annotate(row: dict, flops_per_step: int | None, peak_flops: float | None) -> dict:
    """``row`` (a benchmark row with ``ms_per_step``) plus GFLOP per step, achieved GFLOP/s and the fraction of
    the peak."""
    if flops_per_step is None:
        return row
    achieved = flops_per_step / (row["ms_per_step"] / 1000)
    row.update(gflop_per_step=flops_per_step / 1e9, gflop_per_s=achieved / 1e9,
               peak_fraction=achieved / peak_flops if peak_flops else None)
    return row


def format_flops(flops: dict) -> str:
    """One line: total GFLOP and each network's forward / backward share."""
    parts = [f"{name} {v['forward'] / 1e9:.3g}+{v['backward'] / 1e9:.3g}" for name, v in flops["by_network"].items()]
    return f"{flops['total'] / 1e9:.3g} GFLOP/step (fwd+bwd per network: {', '.join(parts)})"

