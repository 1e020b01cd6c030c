"""Export a translator to ONNX or TorchScript, checked against eager PyTorch at export.

    translator = gpunit.load_translator("cat2dog.pt", content_encoder="content_encoder.pt")
    report = export_translator(translator, "cat2dog.onnx", fmt="onnx", mode="exemplar")
    print(report.describe())   # the largest difference from eager PyTorch on the check inputs

One graph per translator and mode, inputs in [-1, 1], batch size N free:

- GP-UNIT ``exemplar``: ``content`` (N, 3, H, W), ``style`` (N, 3, H, W) -> ``translation`` (N, 3, S, S):
  G(Ec(x), Es(y)) (paper Sec. 3.2, exemplar-guided).
- GP-UNIT ``latent``: ``content`` (N, 3, H, W), ``z`` (N, noise dim) -> G(Ec(x), sampler(z))
  (latent-guided; ``z`` ~ N(0, 1) as ``Translator.sample_styles`` draws it).
- DeepI2I: ``image`` (N, 3, H, W), ``target_class`` (N,) int64, ``z`` (N, dim_z) -> G(A(E(x)), z, c).

H and W are free too: inputs of another size are resized inside the graph exactly as
``translator.translate`` resizes them (bilinear, ``align_corners=False``, :mod:`gpunit.inference`).
The graphs compute in float32 in eval mode (batch norm with stored statistics).
"""
from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

FORMATS = ("onnx", "torchscript")
MODES = ("exemplar", "latent")
# The check at export: |exported - eager| <= TOLERANCE * max(1, max |eager|). float32 rounding through these
# networks differs between kernels (ONNX Runtime's convolutions are not PyTorch's) by ~1e-6 of the output
# scale; a wrong op is off by far more than 1e-4 of it.
TOLERANCE = 1e-4
CHECK_BATCH_SIZES = (1, 3)
OPSET = 17


class ExportError(ValueError):
    """The exported graph does not compute what the eager translator computes."""


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    # Always resized, unlike gpunit.inference.model_batch, so that H and W stay free in the graph: bilinear
    # (align_corners=False) to the same size samples every pixel at its own centre, an identity.
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class GPUnitExemplar(nn.Module):
    """(content, style) -> G(Ec(content), Es(style))."""
    input_names = ("content", "style")

    def __init__(self, translator):
        super().__init__()
        self.encoder, self.generator = translator.content_encoder, translator.generator
        self.size = translator.image_size

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        features = self.encoder(_resize(content, self.size), all_features=True)
        return self.generator(features, self.generator.style_encoder(_resize(style, self.size)))[0]


class GPUnitLatent(nn.Module):
    """(content, z) -> G(Ec(content), sampler(z))."""
    input_names = ("content", "z")

    def __init__(self, translator):
        super().__init__()
        self.encoder, self.generator = translator.content_encoder, translator.generator
        self.size = translator.image_size
        self.sampler = translator.sampler

    def forward(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        features = self.encoder(_resize(content, self.size), all_features=True)
        return self.generator(features, self.sampler(z))[0]


class DeepI2IGraph(nn.Module):
    """(image, target_class, z) -> G(A(E(image)), z, target_class)."""
    input_names = ("image", "target_class", "z")

    def __init__(self, translator):
        super().__init__()
        self.network, self.size = translator.network, translator.image_size

    def forward(self, image: torch.Tensor, target_class: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.network.generate(self.network.adapted_features(_resize(image, self.size)), z, target_class)


def export_graph(translator, mode: str = "exemplar") -> nn.Module:
    """The module that is exported for ``translator`` and ``mode``: a copy, in eval mode, float32, on the CPU."""
    if translator.method == "deepi2i":
        graph = DeepI2IGraph(translator)
    elif mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    elif mode == "latent" and translator.sampler is None:
        raise ValueError("this translator has no style sampler, so it has no latent-guided graph; "
                         "export --mode exemplar instead")
    else:
        graph = GPUnitExemplar(translator) if mode == "exemplar" else GPUnitLatent(translator)
    return _bake_parametrizations(copy.deepcopy(graph).float().cpu().eval())


def example_inputs(translator, mode: str, batch: int, size: int | None = None, seed: int = 0) -> dict:
    """Seeded inputs of the graph, by name: images uniform in [-1, 1] (``size`` x ``size``, default the
    model's), noise ~ N(0, 1), classes spread over the translator's."""
    g = torch.Generator().manual_seed(seed)
    size = size or translator.image_size
    image = lambda: torch.rand(batch, 3, size, size, generator=g) * 2 - 1  # noqa: E731
    if translator.method == "deepi2i":
        return {"image": image(), "target_class": torch.randint(0, translator.num_classes, (batch,), generator=g),
                "z": torch.randn(batch, translator.dim_z, generator=g)}
    if mode == "latent":
        return {"content": image(), "z": torch.randn(batch, translator.sampler.noise_dim, generator=g)}
    return {"content": image(), "style": image()}


@torch.no_grad()
def eager_translation(translator, mode: str, inputs: dict) -> torch.Tensor:
    """What the translator's own methods compute for these inputs: the reference of the exported graph."""
    if translator.method == "deepi2i":
        return translator.translate(inputs["image"], inputs["target_class"], z=inputs["z"]).cpu()
    if mode == "latent":
        codes = translator.sampler(inputs["z"].to(translator.device))
        return translator.translate_codes(inputs["content"], codes).cpu()
    return translator.translate(inputs["content"], style=inputs["style"]).cpu()


# ----------------------------------------------------------------------------- writing
def _bake_parametrizations(graph: nn.Module) -> nn.Module:
    """Spectral norm's W / sigma(W) as a plain weight: in eval mode it is a constant (no power iteration), so
    the graph need not recompute sigma each run (nor could the TorchScript-based ONNX exporter: it has no op
    for sigma's vdot). Done by hand on our copy: ``parametrize.remove_parametrizations`` would also strip the
    property from the parametrized class, which the copy shares with the translator's own modules."""
    for module in graph.modules():
        if parametrize.is_parametrized(module):
            weights = {name: getattr(module, name).detach() for name in module.parametrizations}
            module.__class__ = module.__class__.__bases__[0]  # the class before parametrize subclassed it
            del module._modules["parametrizations"]
            for name, weight in weights.items():
                module.register_parameter(name, nn.Parameter(weight, requires_grad=False))
    return graph


def _free_axes(graph: nn.Module) -> dict:
    """Input axes that stay free in the graph: the batch, and the image sizes (resized inside)."""
    axes = {"content": {0: "batch", 2: "height", 3: "width"}, "image": {0: "batch", 2: "height", 3: "width"},
            "style": {0: "batch", 2: "style_height", 3: "style_width"}, "z": {0: "batch"}, "target_class": {0: "batch"}}
    return {name: axes[name] for name in graph.input_names}


def _write_onnx(graph: nn.Module, inputs: dict, path: Path, dynamo: bool = False) -> None:
    args = tuple(inputs[name] for name in graph.input_names)
    names = dict(input_names=list(graph.input_names), output_names=["translation"])
    if dynamo:  # torch.export-based: torch's default since 2.9, about 20x slower to export these networks
        dims = {}  # one Dim object per axis name: the batch axis is shared by every input
        shapes = {k: {i: dims.setdefault(n, torch.export.Dim(n)) for i, n in v.items()}
                  for k, v in _free_axes(graph).items()}
        torch.onnx.export(graph, args, str(path), **names, dynamic_shapes=shapes, dynamo=True, external_data=False)
        return
    with warnings.catch_warnings():  # the TorchScript-based exporter: exports in seconds, and warns that it is old
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # size tests that _resize has made constant
        warnings.filterwarnings("ignore", "Constant folding|ONNX export mode", UserWarning)  # notes, not problems
        torch.onnx.export(graph, args, str(path), **names, dynamic_axes=_free_axes(graph), dynamo=False,
                          opset_version=OPSET)


def _write_torchscript(graph: nn.Module, inputs: dict, path: Path) -> None:
    # Traced: the networks are plain tensor code, and tracing records shapes symbolically, so N, H, W stay free
    # (check_export runs other sizes). The tracer warns about the content encoder's size test, which _resize
    # has made constant; torch >= 2.9 warns that TorchScript is deprecated (it still runs everywhere).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(graph, tuple(inputs[name] for name in graph.input_names), check_trace=False)
        torch.jit.save(traced, str(path))


def load_exported(path: str | os.PathLike, fmt: str):
    """A callable ``run(inputs: dict of tensors) -> tensor`` on the exported file, in its own runtime
    (ONNX Runtime's InferenceSession on the CPU, or ``torch.jit.load``)."""
    if fmt == "onnx":
        import onnxruntime  # lazy: an optional dependency (pip install -e '.[export]')

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda inputs: torch.from_numpy(session.run(None, {k: v.numpy() for k, v in inputs.items()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        module = torch.jit.load(str(path), map_location="cpu")
    return torch.no_grad()(lambda inputs: module(*inputs.values()))


# ----------------------------------------------------------------------------- export + check
@dataclass
class ExportReport:
    path: Path
    fmt: str
    mode: str
    input_names: tuple[str, ...]
    max_difference: float  # max |exported - eager| over the check inputs
    output_scale: float     # max |eager| over them
    checks: list[str]       # the input shapes checked

    @property
    def tolerance(self) -> float:
        return TOLERANCE * max(1.0, self.output_scale)

    def describe(self) -> str:
        return (f"wrote {self.path} ({self.fmt}, inputs {', '.join(self.input_names)} -> translation); "
                f"max |exported - eager| = {self.max_difference:.3g} over {'; '.join(self.checks)} "
                f"(outputs up to {self.output_scale:.3g}; tolerance {self.tolerance:.3g})")


def check_export(translator, path: str | os.PathLike, fmt: str, mode: str = "exemplar",
                 batch_sizes=CHECK_BATCH_SIZES, sizes=None) -> tuple[float, float, list[str]]:
    """(max |exported - eager|, max |eager|, checked shapes) over seeded inputs of each batch size and
    image size (default: the model's size and one that the graph must resize)."""
    run = load_exported(path, fmt)
    sizes = sizes or (translator.image_size, translator.image_size + 24)
    worst, scale, checks = 0.0, 0.0, []
    for seed, (batch, size) in enumerate((b, s) for b in batch_sizes for s in sizes):
        inputs = example_inputs(translator, mode, batch, size, seed=seed + 1)
        expected = eager_translation(translator, mode, inputs)
        got = run(inputs)
        if got.shape != expected.shape:
            raise ExportError(f"{path}: the exported graph gives shape {tuple(got.shape)} for batch {batch} at "
                              f"{size}x{size}, eager PyTorch {tuple(expected.shape)}")
        worst = max(worst, (got - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
        checks.append(f"N={batch} at {size}x{size}")
    return worst, scale, checks


def export_translator(translator, path: str | os.PathLike, fmt: str = "onnx", mode: str = "exemplar",
                      dynamo: bool = False, overwrite: bool = False) -> ExportReport:
    """Write the graph of ``translator`` (see the module docstring) to ``path`` and check it against eager
    PyTorch on batch sizes 1 and 3; raises :class:`ExportError` when the largest difference exceeds float32
    rounding (``TOLERANCE`` of the output scale). ``dynamo``: ONNX through torch.export instead of the
    TorchScript-based exporter (same graph, much slower to export).

    The graph is written and checked as ``<name>.partial<suffix>`` next to ``path`` and moved into place only
    when it passes, so a failed export leaves nothing behind and never a previous file damaged. An existing
    ``path`` is refused (:class:`FileExistsError`) unless ``overwrite``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if translator.precision != "fp32":
        raise ValueError("export computes in float32: load the translator with precision fp32")
    path = Path(path)
    if path.exists() and not overwrite:  # before any work
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    mode = "translate" if translator.method == "deepi2i" else mode
    graph = export_graph(translator, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    inputs = example_inputs(translator, mode, batch=2)
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _write_onnx(graph, inputs, partial, dynamo)
            else:
                _write_torchscript(graph, inputs, partial)
        worst, scale, checks = check_export(translator, partial, fmt, mode)
        report = ExportReport(path, fmt, mode, graph.input_names, worst, scale, checks)
        if not worst <= report.tolerance:  # `not <=` also catches NaN
            raise ExportError(f"the exported {fmt} graph differs from eager PyTorch by {worst:.3g} (tolerance "
                              f"{report.tolerance:.3g}: float32 rounding); nothing written. Please report this "
                              "with the checkpoint's architecture")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return report


# ----------------------------------------------------------------------------- speed
def images_per_second(run, inputs: dict, batch: int, seconds: float = 1.0) -> float:
    """Translations per second of ``run(inputs)`` over at least ``seconds`` (and two calls)."""
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        run(inputs)
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def benchmark_export(translator, path: str | os.PathLike, fmt: str, mode: str = "exemplar", batch: int = 8,
                     seconds: float = 3.0, rounds: int = 3) -> dict:
    """Images/s of the exported file in its runtime and of eager PyTorch on the same inputs (CPU): after a
    warm-up call each, ``rounds`` rounds that time both in turn for ``seconds`` each, and the best round of
    each. Taking turns and the best round keep the ratio fair when other jobs share the CPU."""
    mode = "translate" if translator.method == "deepi2i" else mode
    inputs = example_inputs(translator, mode, batch)
    runs = {"eager": lambda x: eager_translation(translator, mode, x), fmt: load_exported(path, fmt)}
    best = dict.fromkeys(runs, 0.0)
    for run in runs.values():
        run(inputs)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], images_per_second(run, inputs, batch, seconds))
    return {"batch": batch, "threads": torch.get_num_threads(), **best}
