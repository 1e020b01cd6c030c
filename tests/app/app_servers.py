"""Fixtures of the app's tests: tiny random-weight translators of both methods, served once per test module
(import them into the test module: ``from app_servers import gp_unit_server, ...``)."""
import os
from pathlib import Path

import pytest
import torch
from test_translate_script import checkpoint as gp_unit_checkpoint  # noqa: F401  (a fixture: the tiny GP-UNIT file)

import gpunit
from gpunit.biggan.models import BigGANGenerator
from gpunit.deepi2i.models import DeepI2I, Encoder, build_adaptors
from gpunit.deepi2i.weights import save_deepi2i_translator

SIZE = 64  # both tiny translators' image size
CLASSES = ["cat", "dog", "fox", "red panda"]
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"  # ../shared/samples beside the repository


@pytest.fixture(scope="module")
def deepi2i_checkpoint(tmp_path_factory) -> Path:
    """A tiny random DeepI2I in our format (as tests/deepi2i/test_deepi2i_translate.py builds it)."""
    torch.manual_seed(0)
    g = BigGANGenerator(SIZE, 4, len(CLASSES), dim_z=20, shared_dim=4, attention=(16,))
    e = Encoder(SIZE, 4, attention=(16,))
    return save_deepi2i_translator(tmp_path_factory.mktemp("ckpt") / "deepi2i.pt", DeepI2I(e, build_adaptors(e, g), g),
                                   CLASSES)


def serve(checkpoint: Path):
    """(translator, local URL, app) of the page for ``checkpoint``, listening on a free port."""
    from gpunit.app import build_app, launch  # lazy: gradio is imported by the app tests only

    translator = gpunit.load_translator(str(checkpoint))
    app = build_app(translator, checkpoint.name)
    return translator, launch(app, port=None, block=False), app


@pytest.fixture(scope="module")
def gp_unit_server(gp_unit_checkpoint):  # noqa: F811
    translator, url, app = serve(gp_unit_checkpoint)
    yield translator, url
    app.close()


@pytest.fixture(scope="module")
def deepi2i_server(deepi2i_checkpoint):
    translator, url, app = serve(deepi2i_checkpoint)
    yield translator, url
    app.close()


@pytest.fixture(scope="session")
def sample() -> Path:
    """One photo of ../shared/samples (a cat, 512x512)."""
    path = SAMPLES / "afhq_cat_flickr_cat_000418.jpg"
    if not path.is_file():
        missing = f"no sample photo {path} (the project's shared/samples folder, cloned beside the repository)"
        if os.environ.get("CI", "").lower() == "true":  # CI must run it, as with the fixtures (tests/conftest.py)
            pytest.fail(missing)
        pytest.skip(missing)
    return path
