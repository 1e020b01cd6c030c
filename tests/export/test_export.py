"""gpunit.export and scripts/export.py: every graph, in its own runtime, against the eager translator.

Both methods, both formats, GP-UNIT's exemplar and latent graphs, batch sizes 1 and 3, at the model's size
and at a size the graph must resize; our files and the authors' published GP-UNIT format."""
from pathlib import Path

import pytest
import torch
from helpers import run_script, save_tiny_deepi2i
from test_translate_script import checkpoint as gp_unit_checkpoint  # noqa: F401  (a fixture: the tiny GP-UNIT file)
from torch.nn.utils import parametrize

import gpunit
import gpunit.export
from gpunit.export import TOLERANCE, ExportError, eager_translation, example_inputs, export_translator
from gpunit.gp_unit.weights import export_published_content_encoder, export_published_stage2

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")

SIZE = 64
GRAPHS = [("gp_unit", "exemplar"), ("gp_unit", "latent"), ("deepi2i", "translate")]


@pytest.fixture(scope="module")
def deepi2i_checkpoint(tmp_path_factory) -> Path:
    """A tiny random DeepI2I, as tests/deepi2i/test_deepi2i_translate.py builds it."""
    return save_tiny_deepi2i(tmp_path_factory.mktemp("ckpt") / "deepi2i.pt", ["cat", "dog", "fox", "red panda"], SIZE)


@pytest.fixture(scope="module")
def translators(gp_unit_checkpoint, deepi2i_checkpoint):  # noqa: F811
    return {"gp_unit": gpunit.load_translator(str(gp_unit_checkpoint)),
            "deepi2i": gpunit.load_translator(str(deepi2i_checkpoint))}


def run_in_runtime(path: Path, fmt: str, inputs: dict) -> torch.Tensor:
    """The exported file in its own runtime, as a user would run it."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == list(inputs)
        return torch.from_numpy(session.run(["translation"], {k: v.numpy() for k, v in inputs.items()})[0])
    return torch.jit.load(str(path))(*inputs.values())


def assert_matches_eager(translator, mode: str, path: Path, fmt: str) -> float:
    worst = 0.0
    for batch, size in ((1, SIZE), (3, SIZE + 16)):  # the second resized inside the graph
        inputs = example_inputs(translator, mode, batch, size, seed=100 + batch)
        expected = eager_translation(translator, mode, inputs)
        got = run_in_runtime(path, fmt, inputs)
        assert got.shape == (batch, 3, SIZE, SIZE)
        torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE * max(1.0, expected.abs().max().item()))
        worst = max(worst, (got - expected).abs().max().item())
    return worst


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("method,mode", GRAPHS)
def test_export_matches_eager_in_its_runtime(translators, method, mode, fmt, tmp_path):
    translator = translators[method]
    report = export_translator(translator, tmp_path / f"graph.{fmt}", fmt, mode)
    assert report.max_difference <= report.tolerance and len(report.checks) == 4
    assert any(parametrize.is_parametrized(m) for m in translators["gp_unit"].modules())  # the translator untouched
    assert f"N=3 at {SIZE + 24}x{SIZE + 24}" in report.checks  # resized inside the graph, as translate() resizes
    assert_matches_eager(translator, mode, report.path, fmt)


def test_eager_reference_is_translate(translators):
    """What the graphs are checked against is the translators' own translate()."""
    gp, d = translators["gp_unit"], translators["deepi2i"]
    x = example_inputs(gp, "latent", 2, seed=1)
    codes = gp.sampler(x["z"])
    assert torch.equal(eager_translation(gp, "latent", x), gp.generate(gp.content_features(x["content"]), codes))
    x = example_inputs(gp, "exemplar", 2, size=50, seed=1)
    assert torch.equal(eager_translation(gp, "exemplar", x), gp.translate(x["content"], style=x["style"]))
    x = example_inputs(d, "translate", 2, seed=1)
    expected = d.translate(x["image"], x["target_class"].tolist(), z=x["z"])
    assert torch.equal(eager_translation(d, "translate", x), expected)


def test_published_gp_unit_files_export_to_onnx(translators, tmp_path):
    ours = translators["gp_unit"]
    stage2 = export_published_stage2(ours.generator, ours.sampler, tmp_path / "cat2dog.pt")
    encoder = export_published_content_encoder(ours.content_encoder, tmp_path / "content_encoder.pt")
    done = run_script("scripts/export.py", "--checkpoint", stage2, "--content-encoder", encoder, "--format", "onnx",
                      "--mode", "latent", "--output", tmp_path / "cat2dog.onnx")
    assert done.status == 0, done.err
    assert "max |exported - eager| = " in done.out and "N=3 at 88x88" in done.out
    published = gpunit.load_translator(stage2, content_encoder=encoder)
    assert_matches_eager(published, "latent", tmp_path / "cat2dog.onnx", "onnx")
    inputs = example_inputs(ours, "latent", 3, seed=7)  # and it is our translator's translation
    torch.testing.assert_close(run_in_runtime(tmp_path / "cat2dog.onnx", "onnx", inputs),
                               eager_translation(ours, "latent", inputs), rtol=0, atol=TOLERANCE)


def test_a_graph_that_differs_fails_the_export(translators, tmp_path, monkeypatch):
    eager = gpunit.export.eager_translation
    monkeypatch.setattr(gpunit.export, "eager_translation", lambda *a: eager(*a) + 0.01)
    with pytest.raises(ExportError, match="differs from eager PyTorch by 0.01"):
        export_translator(translators["gp_unit"], tmp_path / "bad.pt", "torchscript")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial
    (tmp_path / "good.pt").write_bytes(b"an earlier export")  # a failed overwrite keeps the earlier file
    with pytest.raises(ExportError):
        export_translator(translators["gp_unit"], tmp_path / "good.pt", "torchscript", overwrite=True)
    assert (tmp_path / "good.pt").read_bytes() == b"an earlier export" and len(list(tmp_path.iterdir())) == 1


def test_an_existing_export_is_replaced_only_with_overwrite(translators, tmp_path):
    target = tmp_path / "graph.pt"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_translator(translators["gp_unit"], target, "torchscript")
    assert target.read_bytes() == b"keep me"
    report = export_translator(translators["gp_unit"], target, "torchscript", overwrite=True)
    assert report.path == target and target.read_bytes() != b"keep me" and len(list(tmp_path.iterdir())) == 1
    assert_matches_eager(translators["gp_unit"], "exemplar", target, "torchscript")


def test_cli_benchmark_and_errors(gp_unit_checkpoint, deepi2i_checkpoint, tmp_path):  # noqa: F811
    done = run_script("scripts/export.py", "--checkpoint", gp_unit_checkpoint, "--format", "torchscript",
                      "--output", tmp_path / "g.pt", "--benchmark", "--batch-size", 2, "--seconds", 0.05)
    assert done.status == 0, done.err
    assert "inputs content, style -> translation" in done.out and "images/s at batch 2" in done.out
    assert torch.is_grad_enabled()  # the script (run in this process) left autograd as it found it
    again = run_script("scripts/export.py", "--checkpoint", gp_unit_checkpoint, "--format", "torchscript",
                       "--output", tmp_path / "g.pt")
    assert again.status != 0 and "exists; pass --overwrite" in again.err
    done = run_script("scripts/export.py", "--checkpoint", deepi2i_checkpoint, "--format", "onnx", "--output",
                      tmp_path / "x.onnx", "--mode", "latent")
    assert done.status == 2 and "DeepI2I translator, which exports one graph: drop --mode" in done.err
