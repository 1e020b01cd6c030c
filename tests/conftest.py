import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
if not FIXTURES.is_dir():  # CI clones the repo with ../shared beside it; allow an override
    FIXTURES = Path(os.environ.get("GPUNIT_FIXTURES", FIXTURES))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}; clone the repo next to ../shared "
                    "or set GPUNIT_FIXTURES")
    return FIXTURES


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A tiny built-in synthetic data set (3 classes, 64x64) shared by the trainer tests."""
    from gpunit.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, size=64, classes=["ellipse", "star", "ring"], pairs_per_class=6, unpaired_per_class=4,
                 domain_train=8, domain_test=4, pair_test=4, seed=0, workers=0, progress=False)
    return root
