"""Tests for gpunit.metrics: FID, KID, per-class scores, LPIPS diversity, domain classifier."""
import logging

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision
from PIL import Image

from gpunit.engine.pretrained import MissingWeightsError
from gpunit.metrics import domain_classifier as dc
from gpunit.metrics.fid import (
    INCEPTION_WEIGHTS_FILE,
    InceptionFeatures,
    build_fid_inception,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    per_class_scores,
)
from gpunit.metrics.kid import kernel_inception_distance
from gpunit.metrics.lpips_diversity import (
    ALEXNET_WEIGHTS_FILE,
    LPIPSDiversity,
    alexnet_features_to_lpips,
    build_lpips_alex,
)


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """Real weights in the user's hub cache must not make 'missing file' tests pass or fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------- FID


@pytest.mark.parametrize("n, d", [(300, 32), (20, 64)])  # the second has a singular covariance
def test_fid_of_a_set_with_itself_is_zero(n, d):
    features = np.random.default_rng(0).normal(size=(n, d)) * 3 + 1
    assert abs(fid_from_features(features, features)) < 1e-6


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = rng.uniform(0.1, 2, size=16), rng.uniform(0.1, 2, size=16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(2)
    mu1, mu2, s1, s2 = rng.normal(size=20), rng.normal(size=20), random_spd(rng, 20), random_spd(rng, 20)
    root = np.real(scipy.linalg.sqrtm(s1 @ s2))
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fid_with_fewer_samples_than_dimensions_is_finite_and_exact():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) * 1.5 + 0.3
    # With centred features A, B: Tr sqrt(S1 S2) is the nuclear norm of A B^T / sqrt((n1-1)(n2-1)).
    ca, cb = a - a.mean(0), b - b.mean(0)
    cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(9 * 11)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + (ca ** 2).sum() / 9 + (cb ** 2).sum() / 11 - 2 * cross
    fid = fid_from_features(a, b)  # through the features (n < d)
    assert np.isfinite(fid) and fid == pytest.approx(expected, rel=1e-6)
    # the same distance through the 64 x 64 covariances and their roots (the route for n >= d)
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == pytest.approx(fid, rel=1e-6)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))


# ----------------------------------------------------------------------------- KID


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(300, 16))
    mean, std = kernel_inception_distance(a, b, num_subsets=50, subset_size=1000)  # clipped to 300
    assert abs(mean) < 3 * std + 1e-3
    shifted_mean, shifted_std = kernel_inception_distance(a, b + 0.5, num_subsets=50)
    assert shifted_mean > 0.05 and shifted_mean > 10 * shifted_std


def test_kid_is_unbiased_on_small_subsets():
    rng = np.random.default_rng(5)
    # A biased estimator (diagonal kernel terms kept) would be far above 0 with 8 samples per set.
    scores = [kernel_inception_distance(rng.normal(size=(8, 4)), rng.normal(size=(8, 4)), num_subsets=1)[0]
              for _ in range(800)]
    assert abs(np.mean(scores)) < 4 * np.std(scores) / np.sqrt(len(scores))


def test_kid_rejects_too_few_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_per_class_scores_gives_fid_kid_per_class_and_their_means():
    rng = np.random.default_rng(6)
    real = {"cat": rng.normal(size=(40, 8)), "dog": rng.normal(size=(40, 8)) + 1}
    fake = {"cat": rng.normal(size=(30, 8)), "dog": rng.normal(size=(30, 8))}
    scores = per_class_scores(fake, real, num_subsets=10)
    assert set(scores) == {"per_class", "mFID", "mKID"} and set(scores["per_class"]) == {"cat", "dog"}
    assert set(scores["per_class"]["cat"]) == {"fid", "kid", "kid_std"}
    assert scores["per_class"]["dog"]["fid"] > scores["per_class"]["cat"]["fid"]  # fake dogs are off by 1
    assert scores["mFID"] == pytest.approx(np.mean([s["fid"] for s in scores["per_class"].values()]))
    assert scores["mKID"] == pytest.approx(np.mean([s["kid"] for s in scores["per_class"].values()]))
    with pytest.raises(ValueError, match="no real features for classes \\['bird'\\]"):
        per_class_scores({"bird": real["cat"]}, real)


# ----------------------------------------------------------------------------- Inception


def test_inception_features_from_a_weights_file(tmp_path):
    weights = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.manual_seed(0)
    stand_in = build_fid_inception()
    for module in stand_in.modules():  # uninitialised weights could hold anything; make them sane
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    torch.save(stand_in.state_dict(), weights)
    extractor = InceptionFeatures(weights_path=tmp_path)
    loaded = extractor.inception.blocks[0][0].conv.weight
    assert torch.equal(loaded, stand_in.Conv2d_1a_3x3.conv.weight)

    images = torch.rand(2, 3, 64, 64) * 2 - 1
    features = extractor(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    batched = extractor.features_of(list(images), batch_size=1)  # an iterable of single images
    assert batched.shape == (2, 2048) and np.allclose(batched, features.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        extractor(images * 255)


def test_inception_missing_or_wrong_weights_file(tmp_path):
    with pytest.raises(MissingWeightsError, match=INCEPTION_WEIGHTS_FILE):
        InceptionFeatures(weights_path=tmp_path / "nowhere")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="not the pytorch-fid Inception weights"):
        InceptionFeatures(weights_path=wrong)


# ----------------------------------------------------------------------------- LPIPS diversity


@pytest.fixture(scope="module")
def alexnet_state():
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).state_dict()


def test_alexnet_keys_map_onto_lpips_slices(alexnet_state):
    model = build_lpips_alex()
    renamed = alexnet_features_to_lpips(alexnet_state, model.net)
    assert set(renamed) == set(model.net.state_dict())
    assert torch.equal(renamed["slice1.0.weight"], alexnet_state["features.0.weight"])
    assert torch.equal(renamed["slice5.10.bias"], alexnet_state["features.10.bias"])


def test_lpips_diversity_is_zero_for_identical_outputs_and_positive_otherwise(tmp_path, alexnet_state):
    torch.save(alexnet_state, tmp_path / ALEXNET_WEIGHTS_FILE)
    diversity = LPIPSDiversity(alexnet_weights=tmp_path)
    assert torch.equal(diversity.model.net.state_dict()["slice2.3.weight"], alexnet_state["features.3.weight"])

    torch.manual_seed(1)
    same = torch.rand(1, 3, 64, 64).mul(2).sub(1).expand(3, -1, -1, -1)  # K = 3 identical outputs
    different = torch.rand(3, 3, 64, 64) * 2 - 1
    assert diversity(same[None]) == pytest.approx(0, abs=1e-6)
    score_different = diversity(different[None])
    assert score_different > 0
    # The score averages over inputs: one identical group and one diverse group give half.
    assert diversity(torch.stack([same, different])) == pytest.approx(score_different / 2, rel=1e-5)
    with pytest.raises(ValueError, match="K >= 2"):
        diversity(different[None, :1])
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        diversity(different[None] * 255)


def test_lpips_missing_or_wrong_alexnet_file(tmp_path):
    with pytest.raises(MissingWeightsError, match=ALEXNET_WEIGHTS_FILE):
        LPIPSDiversity(alexnet_weights=tmp_path / "nowhere")
    wrong = tmp_path / "wrong.pth"
    torch.save({"classifier.1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="not torchvision's AlexNet weights"):
        LPIPSDiversity(alexnet_weights=wrong)


# ----------------------------------------------------------------------------- domain classifier

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 210)}


def solid_images(rng, colour, n):
    noise = rng.integers(-25, 26, size=(n, 16, 16, 3))
    return [Image.fromarray(np.clip(np.array(colour) + x, 0, 255).astype(np.uint8)) for x in noise]


@pytest.fixture()
def domains(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "domains"
    for name, colour in COLOURS.items():
        for split, n in (("train", 20), ("test", 6)):
            (root / name / split).mkdir(parents=True)
            for i, image in enumerate(solid_images(rng, colour, n)):
                image.save(root / name / split / f"{i:03d}.png")
    return root


def as_tensor(images):
    return torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]).float() / 127.5 - 1


def count_training(monkeypatch):
    calls = []
    original = dc.train_domain_classifier
    monkeypatch.setattr(dc, "train_domain_classifier", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_domain_classifier_learns_domains_and_caches(domains, monkeypatch):
    calls = count_training(monkeypatch)
    classifier = dc.load_or_train_domain_classifier(domains, epochs=20, image_size=16)
    assert classifier.domain_names == ["blue", "green", "red"] and len(calls) == 1
    assert classifier.test_accuracy > 0.9
    new_reds = as_tensor(solid_images(np.random.default_rng(9), COLOURS["red"], 10))
    assert dc.domain_accuracy(classifier, new_reds, "red") > 0.9
    assert dc.domain_accuracy(classifier, new_reds, "blue") < 0.1
    assert (domains / "classifier.pt").is_file()

    again = dc.load_or_train_domain_classifier(domains, epochs=20, image_size=16)
    assert len(calls) == 1  # loaded from the cache
    assert again.predict(new_reds) == classifier.predict(new_reds)
    assert again.test_accuracy == classifier.test_accuracy

    solid_images(np.random.default_rng(1), (255, 255, 0), 1)[0].save(domains / "red" / "train" / "000.png")
    dc.load_or_train_domain_classifier(domains, epochs=20, image_size=16)
    assert len(calls) == 2  # a changed training file retrains

    (domains / "classifier.pt").write_bytes(b"garbage")
    dc.load_or_train_domain_classifier(domains, epochs=20, image_size=16)
    assert len(calls) == 3  # an unreadable cache retrains


def test_domain_classifier_bad_input(domains, tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="domains folder"):
        dc.load_or_train_domain_classifier(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="available domains"):
        dc.load_or_train_domain_classifier(domains, domain_names=["red", "purple"])
    (domains / "empty" / "train").mkdir(parents=True)
    (domains / "red" / "train" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(ValueError, match="at least two domains"):
            dc.load_or_train_domain_classifier(domains, domain_names=["red", "empty"], epochs=1, image_size=16)
    assert "domain 'empty' has no images" in caplog.text
    classifier = dc.load_or_train_domain_classifier(domains, domain_names=["red", "blue"], epochs=1, image_size=16,
                                                    cache_path=tmp_path / "c.pt")
    assert "cannot read image" in caplog.text and "broken.png" in caplog.text
    with pytest.raises(ValueError, match="unknown domain 'green'"):
        dc.domain_accuracy(classifier, torch.zeros(1, 3, 16, 16), "green")
