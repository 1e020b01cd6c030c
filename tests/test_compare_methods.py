"""scripts/compare_methods.py: GP-UNIT and DeepI2I scored on the same held-out inputs, one table."""
import json

import pytest
import torch
from conftest import TINY_SYNTHETIC
from helpers import run_script, save_tiny_deepi2i

import gpunit
from gpunit.data.datasets import ImageFolderDataset
from gpunit.gp_unit.evaluate import sensitivity_outputs
from gpunit.gp_unit.models import ContentEncoder, Generator, StyleSampler
from gpunit.gp_unit.weights import save_translator
from gpunit.metrics.sensitivity import input_sensitivity

SIZE = TINY_SYNTHETIC["size"]


@pytest.fixture(scope="module")
def translators(tmp_path_factory):
    root = tmp_path_factory.mktemp("translators")
    torch.manual_seed(0)
    gp_unit = save_translator(root / "gp_unit" / "translator.pt", ContentEncoder(SIZE, 8, 8, 16),
                              Generator(SIZE, 8, 8, 16, style_dim=16, style_base_channels=8, style_hidden=8),
                              StyleSampler(8, 16, 16))
    deepi2i = save_tiny_deepi2i(root / "deepi2i" / "deepi2i.pt", TINY_SYNTHETIC["classes"], SIZE)
    return gp_unit, deepi2i


def test_both_methods_in_one_table_on_the_same_inputs(tiny_synthetic, translators, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no Inception: FID/KID skipped, said
    gp_unit, deepi2i = translators
    out = tmp_path / "compare.json"
    run = run_script("scripts/compare_methods.py", "--gp-unit", gp_unit, "--deepi2i", deepi2i,
                     "--data", tiny_synthetic, "--inputs", "3", "--num-outputs", "2", "--device", "cpu",
                     "--output", out)
    assert run.status == 0, run.err
    results = json.loads(out.read_text())
    rows = {r["method"]: r for r in results["rows"]}
    assert set(rows) == {"gp_unit", "deepi2i"}
    for row in rows.values():
        assert 0 <= row["texture_accuracy"] <= 1 and 0 <= row["shape_accuracy"] <= 1
        assert row["centroid_px"] >= 0 and row["input_sensitivity"] >= 0
    assert "fid_kid" in results["skipped"] and "fid_kid: skipped" in run.out
    # the table printed is the one saved, a row per method, figures as in the JSON
    assert results["table"] in run.out
    gp_line = next(line for line in run.out.splitlines() if line.startswith("| gp_unit |"))
    assert f"{rows['gp_unit']['texture_accuracy']:.2f}" in gp_line
    assert "Random pairing: centroid" in run.out
    # the sensitivity figure is the one computed directly on the same held-out inputs
    translator = gpunit.load_translator(str(gp_unit))
    contents = ImageFolderDataset([str(tiny_synthetic / "domains" / "ellipse" / "test")], SIZE)
    x = torch.stack([contents[i]["x"] for i in range(3)])  # the --inputs scored
    direct = input_sensitivity(x, sensitivity_outputs(translator, x, 4, 0))
    assert rows["gp_unit"]["input_sensitivity"] == pytest.approx(direct["input_sensitivity"], rel=1e-4)
