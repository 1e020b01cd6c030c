"""DeepI2I's many-class evaluation (scripts/evaluate.py on a DeepI2I checkpoint): mFID/mKID, RC, FC, LPIPS.

Tiny random DeepI2I, tiny colour-coded class folders (class = hue, so even a random ResNet-50 tells them
apart), and random-weight stand-ins for Inception, AlexNet and ResNet-50 under their standard file names,
loaded through the real code path.
"""
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from gpunit.biggan.models import BigGANGenerator
from gpunit.data.datasets import ImageFolderDataset
from gpunit.deepi2i.evaluate import class_folders, evaluate_deepi2i, translate_into_classes
from gpunit.deepi2i.evaluate import format_deepi2i_report as format_report
from gpunit.deepi2i.models import DeepI2I, Encoder, build_adaptors
from gpunit.deepi2i.weights import save_deepi2i_translator
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.metrics.class_accuracy import (
    RESNET50_WEIGHTS_FILES,
    ClassifierSettings,
    ResNetLinearClassifier,
    accuracy_per_class,
    labelled_training_inputs,
    load_or_train_real_classifier,
)
from gpunit.metrics.fid import INCEPTION_WEIGHTS_FILE, InceptionFeatures, build_fid_inception
from gpunit.metrics.kid import kernel_inception_distance
from gpunit.metrics.lpips_diversity import ALEXNET_WEIGHTS_FILE
from gpunit.translators import load_translator

REPO = Path(__file__).resolve().parents[2]
SIZE = 64  # the tiny translator's image size
CLASSES = ["red", "green", "blue"]
HUES = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
FAST = dict(image_size=32, epochs=10)  # classifier settings that train in a blink on one core


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no weights found unless a test says so


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds random stand-ins for Inception, AlexNet and ResNet-50."""
    home = tmp_path_factory.mktemp("torch_home")
    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_fid_inception().state_dict(), hub / INCEPTION_WEIGHTS_FILE)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), hub / ALEXNET_WEIGHTS_FILE)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), hub / RESNET50_WEIGHTS_FILES[1])
    return home


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    g = BigGANGenerator(SIZE, 4, len(CLASSES), dim_z=20, shared_dim=4, attention=(16,))
    e = Encoder(SIZE, 4, attention=(16,))
    return save_deepi2i_translator(tmp_path_factory.mktemp("ckpt") / "deepi2i.pt", DeepI2I(e, build_adaptors(e, g), g),
                                   CLASSES)


def write_class_images(folder: Path, hue, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        noisy = np.asarray(hue) + rng.normal(0, 30, (SIZE, SIZE, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/<class>, test/<class>: 4 images each; content/: 2 test inputs."""
    root = tmp_path_factory.mktemp("data")
    for k, name in enumerate(CLASSES):
        write_class_images(root / "train" / name, HUES[name], 4, seed=k)
        write_class_images(root / "test" / name, HUES[name], 4, seed=10 + k)
    write_class_images(root / "content", (128, 128, 128), 2, seed=99)
    return root


def folders(root: Path, names=CLASSES) -> list[str]:
    return [str(root / n) for n in names]


# ----------------------------------------------------------------------------- RC and FC
def test_rc_and_fc_follow_the_labels(data, weights_home, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    settings = ClassifierSettings(**FAST, cache=str(tmp_path / "rc.pt"))
    real = load_or_train_real_classifier({n: data / "train" / n for n in CLASSES}, SIZE, settings)
    assert real.frozen and real.weights_file.name == RESNET50_WEIGHTS_FILES[1] and real.num_train_images == 12

    def images_and_labels(split):
        batch = next(iter(torch.utils.data.DataLoader(ImageFolderDataset(folders(data / split), SIZE), 64)))
        return batch["x"], torch.arange(3).repeat_interleave(4)

    x_train, labels = images_and_labels("train")
    x_test, _ = images_and_labels("test")
    rotated = (labels + 1) % 3  # every image labelled as another class
    # RC: "translations" that are real images of their target class score high, mislabelled ones below chance
    assert (real.predict(x_train) == labels).float().mean() >= 0.9
    assert (real.predict(x_test) == labels).float().mean() >= 0.9
    assert (real.predict(x_train) == rotated).float().mean() <= 1 / 3

    # FC: trained on "translations" labelled by target class, tested on held-out real images
    def fc(train_labels):
        fake = ResNetLinearClassifier(CLASSES, settings.image_size, real.weights_file)
        fake.fit(fake.training_inputs(x_train), train_labels, settings.epochs)
        return np.mean(accuracy_per_class(fake.predict(x_test), labels, 3))

    assert fc(labels) >= 0.9
    assert fc(rotated) <= 1 / 3

    # the cache: the same files and settings load the trained layer instead of training again
    monkeypatch.setattr(ResNetLinearClassifier, "fit", lambda *a, **k: pytest.fail("retrained despite the cache"))
    again = load_or_train_real_classifier({n: data / "train" / n for n in CLASSES}, SIZE, settings)
    assert torch.equal(again.head.weight, real.head.weight) and torch.equal(again.feature_mean, real.feature_mean)
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    changed = ClassifierSettings(**{**FAST, "epochs": 3}, cache=str(tmp_path / "rc.pt"))
    retrained = load_or_train_real_classifier({n: data / "train" / n for n in CLASSES}, SIZE, changed)
    assert not torch.equal(retrained.head.weight, real.head.weight)


def test_training_inputs_of_labelled_folders(data, weights_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    from gpunit.metrics.class_accuracy import find_resnet50_weights
    clf = ResNetLinearClassifier(CLASSES, 32, find_resnet50_weights())
    inputs, labels = labelled_training_inputs(clf, [data / "train" / n for n in CLASSES], SIZE, batch_size=5)
    assert inputs.shape == (12, 2048) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    scratch = ResNetLinearClassifier(CLASSES, 32, None)
    images, _ = labelled_training_inputs(scratch, [data / "train" / "red"], SIZE)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)


# ----------------------------------------------------------------------------- mFID, mKID, LPIPS
def quick_fid(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID without its cross term: it tells feature sets apart like FID, without the 2048-d matrix square root
    that takes 10 s a class on one core (FID itself is tested in test_metrics.py and by the CLI test)."""
    diff = features1.mean(0) - features2.mean(0)
    return float(diff @ diff + np.cov(features1, rowvar=False).trace() + np.cov(features2, rowvar=False).trace())


def test_mfid_and_mkid_are_the_means_of_per_class_scores_computed_directly(checkpoint, data, weights_home,
                                                                          monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    monkeypatch.setattr("gpunit.metrics.fid.fid_from_features", quick_fid)
    translator = load_translator(str(checkpoint))
    targets = ["red", "blue"]
    results = evaluate_deepi2i(translator, [str(data / "content")], folders(data / "test"), target_classes=targets,
                               num_outputs=2, seed=3, batch_size=2,
                               classifier=ClassifierSettings(**FAST, cache=str(tmp_path / "rc.pt")), progress=False)
    assert results["classes"] == targets and results["num_fake_per_class"] == 4 and results["chance"] == 0.5
    assert results["num_real"] == {"red": 4, "blue": 4} and results["skipped"] == {}

    # directly: the same translations, Inception features, FID and KID per class
    inception = InceptionFeatures()
    contents = ImageFolderDataset([str(data / "content")], SIZE, resize="stretch")
    fakes = {0: [], 2: []}
    for _, c, outputs in translate_into_classes(translator, contents, [0, 2], 2, seed=3, batch_size=2, progress=False):
        fakes[c].append(outputs)
    per_class = {}
    for c, name in ((0, "red"), (2, "blue")):
        fake = inception.features_of(torch.cat(fakes[c]))
        reals = ImageFolderDataset([str(data / "test" / name)], SIZE)  # (indexing wraps around: no iteration)
        real = inception.features_of(torch.stack([reals[i]["x"] for i in range(len(reals))]))
        per_class[name] = (quick_fid(fake, real), kernel_inception_distance(fake, real)[0])
        assert results["per_class"][name]["fid"] == pytest.approx(per_class[name][0], rel=1e-6)
        assert results["per_class"][name]["kid"] == pytest.approx(per_class[name][1], rel=1e-6, abs=1e-9)
    assert results["mfid"] == pytest.approx(np.mean([f for f, _ in per_class.values()]), rel=1e-6)
    assert results["mkid"] == pytest.approx(np.mean([k for _, k in per_class.values()]), rel=1e-6, abs=1e-9)
    assert results["lpips_diversity"] > 0
    assert results["rc"] == pytest.approx(np.mean([results["per_class"][n]["rc"] for n in targets]))
    assert results["fc"] == pytest.approx(np.mean([results["per_class"][n]["fc"] for n in targets]))
    assert all(0 <= results["per_class"][n][k] <= 1 for n in targets for k in ("rc", "fc"))


def test_missing_resnet_weights_train_from_scratch_with_a_note(checkpoint, data, tmp_path):
    translator = load_translator(str(checkpoint))
    settings = ClassifierSettings(image_size=32, epochs=1, cache=str(tmp_path / "rc.pt"))
    results = evaluate_deepi2i(translator, [str(data / "content")], folders(data / "test"), num_outputs=2,
                               classifier=settings, progress=False)
    assert "trained from scratch" in results["note"] and RESNET50_WEIGHTS_FILES[0] in results["note"]
    assert results["weights"]["resnet50"] is None and results["classifier"]["weights"] is None
    assert "from scratch" in results["classifier"]["training"]
    assert INCEPTION_WEIGHTS_FILE in results["skipped"]["fid_kid"] and "mfid" not in results
    assert ALEXNET_WEIGHTS_FILE in results["skipped"]["lpips_diversity"]
    assert 0 <= results["rc"] <= 1 and 0 <= results["fc"] <= 1
    report = format_report(results)
    assert "NOTE: no ResNet-50 ImageNet weights found" in report and "fid_kid: skipped" in report
    # weights asked for by path and not there: an error, not a silent fallback
    with pytest.raises(MissingWeightsError, match="resnet50-11ad3fa6.pth or resnet50-0676ba61.pth"):
        evaluate_deepi2i(translator, [str(data / "content")], folders(data / "test"), num_outputs=2,
                         classifier=ClassifierSettings(weights=str(tmp_path / "nowhere.pth")), progress=False)


def test_class_folders_are_found_by_name_or_by_their_parent(checkpoint, tmp_path):
    translator = load_translator(str(checkpoint))
    for name in CLASSES:  # the built-in data's layout: <root>/<class>/{train,test}
        (tmp_path / "domains" / name / "test").mkdir(parents=True)
    (tmp_path / "domains" / "wolf" / "test").mkdir(parents=True)
    classes, found = class_folders(translator, sorted(str(p) for p in tmp_path.glob("domains/*/test")), ["blue", 0])
    assert classes == [2, 0] and found == {2: tmp_path / "domains/blue/test", 0: tmp_path / "domains/red/test"}
    with pytest.raises(ValueError, match="two folders for the class 'red'"):
        class_folders(translator, [str(tmp_path / "domains/red/test"), str(tmp_path / "domains/red")])
    with pytest.raises(ValueError, match="at least two target classes"):
        class_folders(translator, [str(tmp_path / "domains/red")], ["red"])


# ----------------------------------------------------------------------------- the command line
def run_evaluate(*args) -> int:
    """scripts/evaluate.py in this process; returns its exit status."""
    argv = sys.argv
    sys.argv = [str(REPO / "scripts" / "evaluate.py"), *map(str, args), "--no-progress"]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        return done.code or 0
    finally:
        sys.argv = argv
    raise AssertionError("the script did not exit through run_main")


def test_cli_on_a_deepi2i_checkpoint(checkpoint, data, weights_home, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    out = tmp_path / "eval.json"
    assert run_evaluate("--checkpoint", checkpoint, "--content", data / "content", "--real", *folders(data / "test"),
                        "--classifier-train", *folders(data / "train"), "--target-classes", "red", "green",
                        "--num-outputs", 2, "--classifier-size", 32, "--classifier-epochs", 10, "--device", "cpu",
                        "--output", out) == 0
    results = json.loads(out.read_text())
    assert results["protocol"] == "deepi2i" and results["classes"] == ["red", "green"]
    assert {"mfid", "mkid", "rc", "fc", "lpips_diversity", "per_class", "num_real", "weights", "checkpoint",
            "classifier", "chance"} <= set(results) and "note" not in results
    assert set(results["per_class"]["green"]) == {"fid", "kid", "kid_std", "rc", "fc"}
    assert results["mfid"] == pytest.approx(np.mean([results["per_class"][n]["fid"] for n in ("red", "green")]))
    assert all(results["weights"].values()) and results["classifier"]["num_real_train"] == 8
    assert results["classifier"]["real_accuracy"] >= 0.9  # the RC classifier on held-out real images
    assert Path(results["classifier"]["cache"]) == data / "train" / ".rc_classifier_resnet50.pt"
    printed = capsys.readouterr().out
    assert "protocol: deepi2i" in printed and "mFID" in printed and "classes: red, green" in printed
    assert f"weights resnet50: {weights_home}" in printed and "RC classifier on real" in printed

    # errors a user can make: a class without a real folder, an unknown class, GP-UNIT options
    assert run_evaluate("--checkpoint", checkpoint, "--content", data / "content", "--real",
                        *folders(data / "test", ["red", "blue"]), "--output", out) == 2
    assert "no folder for the classes ['green']" in capsys.readouterr().err
    assert run_evaluate("--checkpoint", checkpoint, "--content", data / "content", "--real", *folders(data / "test"),
                        "--target-classes", "wolf", "--output", out) == 2
    assert "unknown target class 'wolf'" in capsys.readouterr().err
    assert run_evaluate("--checkpoint", checkpoint, "--content", data / "content", "--real", *folders(data / "test"),
                        "--mode", "reference", "--output", out) == 2
    assert "many-class protocol" in capsys.readouterr().err
