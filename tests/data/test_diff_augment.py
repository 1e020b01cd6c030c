"""DiffAugment: each transform does what it says, is differentiable, and is a function of its generator."""
import pytest
import torch

from gpunit.data.diff_augment import diff_augment, parse_policy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_policy_parsing():
    assert parse_policy("") == [] and parse_policy(" color, cutout ") == ["color", "cutout"]
    with pytest.raises(ValueError, match="unknown DiffAugment policy.*'flip'"):
        parse_policy("color,flip")


def test_translation_moves_a_dot_by_at_most_an_eighth():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1
    y = diff_augment(x, ["translation"], gen())
    assert torch.equal(y.sum((1, 2, 3)), torch.ones(64))  # one pixel, moved, never lost at this shift
    where = y[:, 0].flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2 and len(set(zip(dy.tolist(), dx.tolist()))) > 10


def test_cutout_zeroes_at_most_a_quarter_and_colour_is_per_image():
    x = torch.ones(32, 3, 16, 16)
    y = diff_augment(x, ["cutout"], gen())
    zeroed = (y == 0).float().flatten(1).mean(1)
    assert zeroed.max() <= 0.25 + 1e-6 and zeroed.mean() > 0.1 and (zeroed == 0.25).any()
    c = diff_augment(torch.rand(32, 3, 8, 8) * 2 - 1, ["color"], gen())
    assert c.mean((1, 2, 3)).std() > 0.1  # brightness differs between images


def test_same_generator_same_augmentation_and_gradients_flow():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_()
    policy = parse_policy("color,translation,cutout")
    a, b, c = diff_augment(x, policy, gen(1)), diff_augment(x, policy, gen(1)), diff_augment(x, policy, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, [], gen()) is x
