import os
from pathlib import Path

# OpenMP threads spin while they wait for work: on a machine shared with other jobs (2 cores here) each parallel
# region of a tiny test network then waits for a time slice, and a training step takes ten times longer. Waiting
# threads sleep instead. Set before torch loads its OpenMP runtime; subprocesses (scripts, torchrun) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# train.precision/channels_last=auto without the timed probe (gpunit/engine/precision_probe.py): tests that compare
# two runs must not depend on which setting a shared machine happened to time faster
os.environ.setdefault("GPUNIT_PROBE", "off")

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
if not FIXTURES.is_dir():  # CI clones the repo with ../shared beside it; allow an override
    FIXTURES = Path(os.environ.get("GPUNIT_FIXTURES", FIXTURES))


FIXTURES_MISSING = (f"reference fixtures not found at {FIXTURES}: they are the authors' published code run on "
                    "seeded inputs (the project's shared/fixtures folder); clone the repo next to ../shared or set "
                    "GPUNIT_FIXTURES")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The fixtures folder; without it the fixture tests skip (counted), except in CI (``CI=true``), where
    they must run."""
    if not FIXTURES.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(FIXTURES_MISSING)
        pytest.skip("no fixtures folder")
    return FIXTURES


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "no fixtures folder" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} fixture tests skipped: {FIXTURES_MISSING}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# the sizes of the tiny built-in synthetic data set (3 classes, 64x64)
TINY_SYNTHETIC = dict(size=64, classes=["ellipse", "star", "ring"], pairs_per_class=6, unpaired_per_class=4,
                      domain_train=8, domain_test=4, pair_test=4, seed=0, workers=0, progress=False)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A tiny built-in synthetic data set shared by the trainer tests (:data:`TINY_SYNTHETIC`)."""
    from gpunit.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, **TINY_SYNTHETIC)
    return root


SOURCE_CLASSES = ["ellipse", "ring", "star", "square"]  # the tiny BigGAN's rows; tiny_synthetic has the first three


@pytest.fixture(scope="session")
def tiny_biggan(tmp_path_factory):
    """A 64 px BigGAN at tiny width with named class rows, saved as scripts/train_biggan.py does."""
    import copy

    from gpunit.biggan.models import BigGANDiscriminator, BigGANGenerator
    from gpunit.biggan.weights import save_biggan

    torch.manual_seed(1)
    g = BigGANGenerator(64, 4, len(SOURCE_CLASSES), dim_z=20, shared_dim=8, attention=(32,))
    d = BigGANDiscriminator(64, 4, len(SOURCE_CLASSES), attention=(16,))
    with torch.no_grad():  # away from init, as a trained BigGAN is: attention gates are 0 there, and orthogonal
        for net in (g, d):  # weights have all singular values 1, where spectral norm's vectors would not matter
            for name, p in net.named_parameters():
                if name.endswith("gamma"):
                    p.fill_(0.3)
                elif p.dim() > 1:
                    p.mul_(1 + torch.rand_like(p))
    return save_biggan(tmp_path_factory.mktemp("biggan") / "biggan.pt", g, d, copy.deepcopy(g), SOURCE_CLASSES)
