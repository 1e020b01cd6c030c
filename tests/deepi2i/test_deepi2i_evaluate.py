"""DeepI2I's many-class evaluation (scripts/evaluate.py on a DeepI2I checkpoint): mFID/mKID, RC, FC, LPIPS.

Tiny random DeepI2I, tiny colour-coded class folders (class = hue, so even a random ResNet-50 tells them
apart), and random-weight stand-ins for Inception, AlexNet and ResNet-50 under their standard file names,
loaded through the real code path.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import ScriptRun, record_calls, run_script, save_tiny_deepi2i
from PIL import Image

from gpunit.data.datasets import ImageFolderDataset
from gpunit.deepi2i.evaluate import class_folders, evaluate_deepi2i, translate_into_classes
from gpunit.deepi2i.evaluate import format_deepi2i_report as format_report
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.metrics.class_accuracy import (
    RESNET50_WEIGHTS_FILES,
    ClassifierSettings,
    ResNetLinearClassifier,
    accuracy_per_class,
    labelled_training_inputs,
    load_or_train_real_classifier,
)
from gpunit.metrics.fid import INCEPTION_WEIGHTS_FILE, InceptionFeatures, build_fid_inception, fid_from_features
from gpunit.metrics.kid import kernel_inception_distance
from gpunit.metrics.lpips_diversity import ALEXNET_WEIGHTS_FILE, LPIPSDiversity
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
    return save_tiny_deepi2i(tmp_path_factory.mktemp("ckpt") / "deepi2i.pt", CLASSES, SIZE)


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


# ----------------------------------------------------------------------------- the command line and its figures
def run_evaluate(*args, env: dict | None = None) -> ScriptRun:
    """scripts/evaluate.py in this process (tests/helpers.py): (exit status, stdout, stderr)."""
    return run_script("scripts/evaluate.py", *args, "--no-progress", env=env)


CLI_CLASSES = ["red", "green"]


def translations(translator, data: Path, classes) -> dict[int, torch.Tensor]:
    """{class: every content input translated into it}, 2 outputs each, drawn as an evaluation with the default
    seed (0) and batch size (16) draws them."""
    fakes = {c: [] for c in classes}
    contents = ImageFolderDataset([str(data / "content")], SIZE, resize="stretch")
    for _, c, outputs in translate_into_classes(translator, contents, list(fakes), 2, seed=0, batch_size=16,
                                                progress=False):
        fakes[c].append(outputs)
    return {c: torch.cat(outputs) for c, outputs in fakes.items()}


@pytest.fixture(scope="module")
def cli_run(checkpoint, data, weights_home, tmp_path_factory) -> tuple[dict, str, list]:
    """scripts/evaluate.py on the DeepI2I checkpoint with every weights file, once for the tests that read its
    output: (eval.json, stdout, Inception's calls: (images, features))."""
    out = tmp_path_factory.mktemp("cli") / "eval.json"
    with pytest.MonkeyPatch.context() as mp:
        inception_calls = record_calls(mp, InceptionFeatures, "forward")
        done = run_evaluate("--checkpoint", checkpoint, "--content", data / "content", "--real",
                            *folders(data / "test"), "--classifier-train", *folders(data / "train"),
                            "--target-classes", *CLI_CLASSES, "--num-outputs", 2, "--classifier-size", 32,
                            "--classifier-epochs", 10, "--device", "cpu", "--output", out,
                            env={"TORCH_HOME": weights_home})
    assert done.status == 0, done.err
    return json.loads(out.read_text()), done.out, inception_calls


def test_the_figures_are_the_per_class_scores_computed_directly(cli_run, checkpoint, data, weights_home,
                                                                monkeypatch):
    """mFID and mKID are the means of each class's FID and KID, of Inception's features of that class's
    translations and real images; RC the share of translations the real-image classifier puts in their target
    class; LPIPS the mean pairwise distance of each input's outputs: computed here again from the same
    translations (seed 0, batch 16: the CLI's defaults). Inception itself is tested in tests/metrics/."""
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    results, _, inception_calls = cli_run
    assert results["classes"] == CLI_CLASSES and results["num_fake_per_class"] == 4 and results["chance"] == 0.5
    assert results["num_real"] == {"red": 4, "green": 4} and results["skipped"] == {}
    fakes = translations(load_translator(str(checkpoint)), data, range(len(CLI_CLASSES)))
    # the RC classifier the CLI trained, read back from its cache (beside the training folders)
    monkeypatch.setattr(ResNetLinearClassifier, "fit", lambda *a, **k: pytest.fail("retrained despite the cache"))
    rc = load_or_train_real_classifier({n: data / "train" / n for n in CLI_CLASSES}, SIZE, ClassifierSettings(**FAST))

    def features_of(images):  # the features Inception gave for exactly these images
        (found,) = [f for x, f in inception_calls if x.shape == images.shape and torch.equal(x, images)]
        return found.double().numpy()

    per_class = {}
    for c, name in enumerate(CLI_CLASSES):
        reals = ImageFolderDataset([str(data / "test" / name)], SIZE)  # (indexing wraps around: no iteration)
        fake, real = features_of(fakes[c]), features_of(torch.stack([reals[i]["x"] for i in range(len(reals))]))
        per_class[name] = (fid_from_features(fake, real), kernel_inception_distance(fake, real)[0])
        scores = results["per_class"][name]
        assert scores["fid"] == pytest.approx(per_class[name][0], rel=1e-6)
        assert scores["kid"] == pytest.approx(per_class[name][1], rel=1e-6, abs=1e-9)
        assert scores["rc"] == float((rc.predict(fakes[c]) == c).float().mean())
        assert scores["fc"] * 4 == round(scores["fc"] * 4)  # the share of the class's 4 real test images
    assert len(inception_calls) == 2 * len(CLI_CLASSES)  # nothing else went into the figures
    assert results["mfid"] == pytest.approx(np.mean([f for f, _ in per_class.values()]), rel=1e-6)
    assert results["mkid"] == pytest.approx(np.mean([k for _, k in per_class.values()]), rel=1e-6, abs=1e-9)
    assert results["rc"] == pytest.approx(np.mean([results["per_class"][n]["rc"] for n in CLI_CLASSES]))
    assert results["fc"] == pytest.approx(np.mean([results["per_class"][n]["fc"] for n in CLI_CLASSES]))
    groups = torch.cat([fakes[c].view(-1, 2, 3, SIZE, SIZE) for c in fakes])  # (inputs x classes, 2 outputs)
    assert results["lpips_diversity"] == pytest.approx(LPIPSDiversity()(groups), rel=1e-5)


def test_missing_resnet_weights_train_from_scratch_with_a_note(checkpoint, data, tmp_path, monkeypatch):
    translator = load_translator(str(checkpoint))
    settings = ClassifierSettings(image_size=32, epochs=1, cache=str(tmp_path / "rc.pt"))
    results = evaluate_deepi2i(translator, [str(data / "content")], folders(data / "test"), num_outputs=2,
                               classifier=settings, progress=False)
    assert "trained from scratch" in results["note"] and RESNET50_WEIGHTS_FILES[0] in results["note"]
    assert results["weights"]["resnet50"] is None and results["classifier"]["weights"] is None
    assert "from scratch" in results["classifier"]["training"]
    assert INCEPTION_WEIGHTS_FILE in results["skipped"]["fid_kid"] and "mfid" not in results
    assert ALEXNET_WEIGHTS_FILE in results["skipped"]["lpips_diversity"]
    # RC directly: the share of each class's translations that the classifier trained from scratch (read back
    # from its cache) puts in that class; FC: the share of each class's 4 real test images
    fakes = translations(translator, data, range(len(CLASSES)))
    monkeypatch.setattr(ResNetLinearClassifier, "fit", lambda *a, **k: pytest.fail("retrained despite the cache"))
    rc = load_or_train_real_classifier({n: data / "test" / n for n in CLASSES}, SIZE, settings)
    for c, name in enumerate(CLASSES):
        assert results["per_class"][name]["rc"] == float((rc.predict(fakes[c]) == c).float().mean())
        assert results["per_class"][name]["fc"] * 4 == round(results["per_class"][name]["fc"] * 4)
    assert results["rc"] == pytest.approx(np.mean([results["per_class"][n]["rc"] for n in CLASSES]))
    assert results["fc"] == pytest.approx(np.mean([results["per_class"][n]["fc"] for n in CLASSES]))
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


def test_cli_on_a_deepi2i_checkpoint(cli_run, checkpoint, data, weights_home, tmp_path):
    results, printed, _ = cli_run
    assert results["protocol"] == "deepi2i" and results["classes"] == CLI_CLASSES
    assert {"mfid", "mkid", "rc", "fc", "lpips_diversity", "per_class", "num_real", "weights", "checkpoint",
            "classifier", "chance"} <= set(results) and "note" not in results
    assert set(results["per_class"]["green"]) == {"fid", "kid", "kid_std", "rc", "fc"}
    assert all(results["weights"].values()) and results["classifier"]["num_real_train"] == 8
    assert results["classifier"]["real_accuracy"] >= 0.9  # the RC classifier on held-out real images
    assert Path(results["classifier"]["cache"]) == data / "train" / ".rc_classifier_resnet50.pt"
    assert "protocol: deepi2i" in printed and "mFID" in printed and "classes: red, green" in printed
    assert f"weights resnet50: {weights_home}" in printed and "RC classifier on real" in printed

    # errors a user can make: a class without a real folder, an unknown class, GP-UNIT options
    for args, message in (([*folders(data / "test", ["red", "blue"])], "no folder for the classes ['green']"),
                          ([*folders(data / "test"), "--target-classes", "wolf"], "unknown target class 'wolf'"),
                          ([*folders(data / "test"), "--mode", "reference"], "many-class protocol")):
        done = run_evaluate("--checkpoint", checkpoint, "--content", data / "content", "--output",
                            tmp_path / "eval.json", "--real", *args, env={"TORCH_HOME": weights_home})
        assert done.status == 2 and message in done.err, done.err
