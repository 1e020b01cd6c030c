"""Fixtures of the app's tests: tiny random-weight translators of both methods, served once per test module
(import them into the test module: ``from app_servers import gp_unit_server, ...``)."""
import os
from pathlib import Path

import pytest
from helpers import save_tiny_deepi2i
from test_translate_script import checkpoint as gp_unit_checkpoint  # noqa: F401  (a fixture: the tiny GP-UNIT file)

import gpunit

SIZE = 64  # both tiny translators' image size
CLASSES = ["cat", "dog", "fox", "red panda"]
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"  # ../shared/samples beside the repository


@pytest.fixture(scope="module")
def deepi2i_checkpoint(tmp_path_factory) -> Path:
    """A tiny random DeepI2I in our format (as tests/deepi2i/test_deepi2i_translate.py builds it)."""
    return save_tiny_deepi2i(tmp_path_factory.mktemp("ckpt") / "deepi2i.pt", CLASSES, SIZE)


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
