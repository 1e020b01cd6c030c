"""Input sensitivity (gpunit/metrics/sensitivity.py) on translators whose answer is known, and the prior's
silhouette accuracy and layout spread (gpunit/metrics/prior_samples.py)."""
import pytest
import torch

from gpunit.data.synthetic import CLASS_NAMES
from gpunit.metrics.domain_classifier import domain_files, labelled_images, to_unit_range
from gpunit.metrics.prior_samples import format_prior_quality, prior_quality
from gpunit.metrics.sensitivity import format_sensitivity, input_sensitivity


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_identity_scores_full_and_a_constant_translator_none():
    x = images(6, 0)
    identity = x[:, None].repeat(1, 3, 1, 1, 1)  # every style gives the input itself
    s = input_sensitivity(x, identity)
    assert s["input_sensitivity"] == pytest.approx(1.0) and s["style_sensitivity"] == 0 and not s["ignores_input"]
    styles = images(3, 1)
    constant = styles[None].repeat(6, 1, 1, 1, 1)  # output k is style k, whatever the input
    c = input_sensitivity(x, constant)
    assert c["input_sensitivity"] == 0 and c["style_sensitivity"] > 0.5 and c["ignores_input"]
    assert "WARNING: the outputs barely depend on the input" in format_sensitivity(c)
    assert "WARNING" not in format_sensitivity(s)


def test_sensitivity_is_in_units_of_the_inputs_differences():
    x = images(5, 2)
    half = (x * 0.5)[:, None].repeat(1, 2, 1, 1, 1)  # outputs differ half as much as the inputs
    assert input_sensitivity(x, half)["input_sensitivity"] == pytest.approx(0.5)
    upsampled = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")[:, None]  # another size
    assert input_sensitivity(x, upsampled)["input_sensitivity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same n"):
        input_sensitivity(x, half[:4])
    with pytest.raises(ValueError, match="all the same image"):
        input_sensitivity(x[:1].repeat(3, 1, 1, 1), half[:3])


def test_prior_quality_tells_the_real_images_from_a_collapsed_prior(tiny_synthetic):
    root = tiny_synthetic / "domains"
    files = domain_files(root, "test", None)
    real, labels = labelled_images(files, list(files), 64)
    names = [list(files)[i] for i in labels]
    assert set(names) <= set(CLASS_NAMES)
    good = prior_quality(to_unit_range(real), names, root)
    collapsed = prior_quality(to_unit_range(real[:1]).repeat(len(real), 1, 1, 1), names, root)
    assert max(collapsed["spread_cx"], collapsed["spread_cy"], collapsed["spread_scale"]) < 1e-9
    assert collapsed["silhouette_accuracy"] == pytest.approx(1 / len(files))  # one silhouette for every class
    for stat in ("cx", "cy", "scale"):  # held-out real images spread like the training images
        assert 0.5 < good[f"spread_{stat}"] < 2, stat
    assert good["silhouette_accuracy"] > collapsed["silhouette_accuracy"] and good["object_found"] == 1
    # a prior that ignores z: one real image per class, repeated. Each class is right and the classes sit at
    # different places, but within a class nothing moves: no spread
    first = {c: next(i for i, n in enumerate(names) if n == c) for c in dict.fromkeys(names)}
    per_class = prior_quality(to_unit_range(real[[first[n] for n in names]]), names, root)
    assert max(per_class["spread_cx"], per_class["spread_cy"], per_class["spread_scale"]) < 1e-9
    assert per_class["silhouette_accuracy"] > collapsed["silhouette_accuracy"]
    assert "silhouette accuracy" in format_prior_quality(good)
    with pytest.raises(ValueError, match="not classes of"):
        prior_quality(to_unit_range(real[:2]), ["ellipse", "unicorn"], root)
