"""Identity loss (Sec. 5): the IR-SE50 layout of model_ir_se50.pth, loading, the loss and its errors."""
import pytest
import torch

from gpunit.engine.checkpoints import CheckpointError
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.gp_unit.models.arcface import IRSE50, IdentityLoss, face_crop


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A random-weight stand-in for model_ir_se50.pth, saved as a plain state dict like the real file."""
    torch.manual_seed(1)
    net = IRSE50()
    with torch.no_grad():  # non-trivial BN statistics, so loading them is visible
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def id_loss(weights_file):
    return IdentityLoss(weights_file)


def test_layout_matches_published_weights_file():
    net = IRSE50()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sum(p.numel() for p in net.parameters()) == 43_797_696  # IR-SE50 with the 112px output layer
    assert shapes["input_layer.0.weight"] == (64, 3, 3, 3)
    assert shapes["input_layer.2.weight"] == (64,)                      # PReLU
    assert shapes["body.0.res_layer.1.weight"] == (64, 64, 3, 3)
    assert shapes["body.0.res_layer.5.fc1.weight"] == (4, 64, 1, 1)    # SE, reduction 16
    assert shapes["body.3.shortcut_layer.0.weight"] == (128, 64, 1, 1)  # first unit of stage 2
    assert shapes["body.23.res_layer.3.weight"] == (512, 512, 3, 3)
    assert shapes["output_layer.3.weight"] == (512, 512 * 7 * 7)
    assert shapes["output_layer.4.running_var"] == (512,) and "output_layer.4.weight" in shapes
    assert not any(k.startswith("body.0.shortcut_layer") for k in shapes)  # max-pool shortcut
    assert {int(k.split(".")[1]) for k in shapes if k.startswith("body.")} == set(range(3 + 4 + 14 + 3))


def test_loads_weights_file_frozen_in_eval(weights_file, id_loss):
    saved = torch.load(weights_file, weights_only=True)
    own = id_loss.facenet.state_dict()
    assert own.keys() == saved.keys()
    assert all(torch.equal(own[k], saved[k]) for k in saved)
    assert not any(p.requires_grad for p in id_loss.parameters())
    id_loss.train()  # e.g. a parent module switching to training
    assert not id_loss.facenet.training


def test_file_without_bn_step_counters_loads(weights_file, tmp_path):
    state = torch.load(weights_file, weights_only=True)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "model_ir_se50.pth")
    loss = IdentityLoss(tmp_path)  # a folder holding the file works too
    assert torch.equal(loss.facenet.output_layer[3].weight, state["output_layer.3.weight"])


def test_face_crop_is_published_crop_scaled():
    x = torch.randn(1, 3, 256, 256)
    assert torch.equal(face_crop(x), x[:, :, 35:223, 32:220])
    x = torch.randn(1, 3, 512, 512)
    assert torch.equal(face_crop(x), x[:, :, 70:446, 64:440])


def test_loss_is_mean_of_one_minus_cosine_per_pair(id_loss):
    a, b, c = torch.rand(3, 1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        f_b, f_c = id_loss.embed(torch.cat([b, c]))
        loss = id_loss(torch.cat([a, b]), torch.cat([a, c]))
    assert f_b.norm().item() == pytest.approx(1, abs=1e-5)
    expected = (0 + (1 - f_b @ f_c)) / 2  # the identical pair adds 0
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert loss.item() > 1e-4


def test_gradient_reaches_translation_not_backbone(id_loss):
    y_hat = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    y = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    id_loss(y_hat, y).backward()
    assert y_hat.grad is not None and y_hat.grad.abs().sum() > 0
    assert y.grad is None  # the target embedding is detached
    assert all(p.grad is None for p in id_loss.parameters())


def test_rejects_non_image_input(id_loss):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        id_loss(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))


def test_missing_file_names_file_and_option(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(MissingWeightsError, match=r"model_ir_se50\.pth.*loss\.identity_weights"):
        IdentityLoss(tmp_path / "nowhere.pth")


def test_wrong_keys_name_missing_and_unexpected(tmp_path):
    path = tmp_path / "model_ir_se50.pth"
    torch.save({"module.fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: body\.0\..*unexpected keys: module\.fc\.weight"):
        IdentityLoss(path)
