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
