"""Tests for the shared training engine (gpunit.engine) with a tiny toy trainer."""
import io
import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from gpunit.engine.checkpoints import CheckpointManager
from gpunit.engine.device import resolve_device
from gpunit.engine.logger import RunLogger
from gpunit.engine.loop import CheckpointError, NonFiniteLossError, NonFiniteWatch, StopSignal, train_loop
from gpunit.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from gpunit.engine.run import RunExistsError, prepare_run_dir
from gpunit.engine.trainer import ema_update


class ToyTrainer:
    """Linear regression with dropout and input noise; every global RNG influences the weights."""

    images_per_step = 4

    def __init__(self, kill_at: int | None = None, nan_at: int | None = None):
        self.model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 1))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.position = 0  # data stream position: batch k is a pure function of k
        self.kill_at, self.nan_at = kill_at, nan_at
        self.checkpointed: list[int] = []

    def _next_batch(self):
        g = torch.Generator().manual_seed(1000 + self.position)
        self.position += 1
        x = torch.randn(4, 8, generator=g)
        return x, x.sum(1, keepdim=True)

    def train_step(self, step):
        x, y = self._next_batch()
        x = x + 0.1 * torch.randn_like(x)  # torch RNG (plus dropout)
        scale = 1.0 + 0.01 * random.random() + 0.01 * float(np.random.rand())  # python + numpy RNGs
        loss = scale * (self.model(x) - y).pow(2).mean()
        if step == self.nan_at:
            loss = loss * float("nan")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss/g/mse": loss.detach(), "lr": 1e-2}

    def state_dict(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "position": self.position}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.position = state["position"]

    def sample_images(self, step):
        return {"samples/toy": torch.rand(3, 8, 8) * 2 - 1}  # consumes the global RNG on purpose

    def on_checkpoint(self, step):
        self.checkpointed.append(step)
        torch.randn(3), random.random(), np.random.rand()  # like fitting a sampler with random init


def make_trainer(seed=0, **kwargs):
    seed_everything(seed)
    return ToyTrainer(**kwargs)


def run(trainer, run_dir, total, resume=None, **kwargs):
    options = dict(log_every=2, image_every=3, checkpoint_every=4, keep_checkpoints=2, progress=False)
    options.update(kwargs)
    return train_loop(trainer, run_dir=run_dir, total_steps=total, resume=resume, **options)


def assert_same_training_state(a: ToyTrainer, b: ToyTrainer):
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    state_a, state_b = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for key in state_a:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[key][name], state_b[key][name]), (key, name)
    assert a.position == b.position


def test_resume_is_bitwise_identical(tmp_path):
    straight = make_trainer()
    assert run(straight, tmp_path / "a", 8) == 8

    first = make_trainer()
    assert run(first, tmp_path / "b", 4) == 4
    second = make_trainer(seed=123)  # different init and RNG: the checkpoint must restore both
    assert run(second, tmp_path / "b", 8, resume="auto") == 8
    assert_same_training_state(straight, second)

    other = make_trainer(seed=123)
    run(other, tmp_path / "c", 8)
    assert not torch.equal(other.model[0].weight, straight.model[0].weight)  # the test can tell runs apart


def test_image_and_checkpoint_frequency_do_not_change_training(tmp_path):
    a = make_trainer()  # the toy trainer draws from the global RNG: build each right before its run
    run(a, tmp_path / "a", 6, image_every=1, checkpoint_every=1)
    b = make_trainer()
    run(b, tmp_path / "b", 6, image_every=100, checkpoint_every=100)
    assert_same_training_state(a, b)
    assert a.checkpointed == [1, 2, 3, 4, 5, 6] and b.checkpointed == [6]


class Unpicklable:
    """What torch.save cannot write (as a lambda, but with the same error on every Python version)."""

    def __reduce__(self):
        raise TypeError("this object cannot be pickled")


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in range(1, 6):
        manager.save({"step": step, "w": torch.full((2,), float(step))}, step)
    assert sorted(p.name for p in manager.dir.iterdir()) == ["step-0000004.pt", "step-0000005.pt"]
    assert manager.latest().name == "step-0000005.pt"
    assert torch.equal(manager.load(manager.latest())["w"], torch.full((2,), 5.0))

    with pytest.raises(TypeError, match="cannot be pickled"):  # the write fails half way
        manager.save({"step": 6, "w": torch.ones(3), "bad": Unpicklable()}, 6)
    assert sorted(p.name for p in manager.dir.iterdir()) == ["step-0000004.pt", "step-0000005.pt"]


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    good = manager.save({"step": 1, "w": torch.ones(1000)}, 1)
    truncated = manager.dir / "step-0000002.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="corrupt") as info:
            manager.load(path)
        assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        manager.load(tmp_path / "missing.pt")

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(CheckpointError, match="not a gpunit training checkpoint"):
        run(make_trainer(), tmp_path / "run", 2, resume=str(other))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(make_trainer(), tmp_path / "empty", 2, resume="auto")


def test_nan_loss_stops_before_saving(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"step 5: loss/g/mse=nan") as info:
        run(make_trainer(nan_at=5), tmp_path, 8, checkpoint_every=2, keep_checkpoints=5)
    assert "--resume auto" in str(info.value)
    manager = CheckpointManager(tmp_path, keep=5)
    assert manager.latest().name == "step-0000004.pt"
    state = manager.load(manager.latest())
    assert state["step"] == 4 and torch.isfinite(state["trainer"]["model"]["0.weight"]).all()


def test_nan_check_also_runs_before_every_checkpoint(tmp_path):
    # NaN weights after step 5 make step 6 NaN; step 6 is a checkpoint step, so the watch is read
    # there, and it names the first bad step
    with pytest.raises(NonFiniteLossError, match="step 5: loss/g/mse=nan"):
        run(make_trainer(nan_at=5), tmp_path, 8, checkpoint_every=2, nan_check_every=100)
    assert CheckpointManager(tmp_path, keep=2).latest().name == "step-0000004.pt"


def test_nan_watch_is_read_at_log_steps_and_names_the_first_bad_step(tmp_path):
    """Losses are watched on the device every step but read only every log_every steps (no device
    sync per step): a NaN at step 5 stops the run at the log step 8, naming step 5."""
    trainer = make_trainer(nan_at=5)
    with pytest.raises(NonFiniteLossError, match="step 5: loss/g/mse=nan") as info:
        run(trainer, tmp_path, 20, log_every=8, checkpoint_every=100)
    assert trainer.position == 8  # steps 6-8 ran before the read; nothing was saved
    assert CheckpointManager(tmp_path, keep=2).latest() is None
    assert "--resume auto" in str(info.value)


def test_nan_watch_names_every_bad_term_of_the_first_bad_step():
    watch = NonFiniteWatch()
    watch.add(16, {"loss/g/adv": torch.tensor(2.0), "loss/d/r1": torch.tensor(1.0), "loss/g/sty": torch.tensor(1.0),
                   "lr": 0.1})
    watch.check()  # all finite: no error
    watch.add(17, {"loss/g/adv": torch.tensor(1.0), "loss/d/r1": torch.tensor(float("inf")),
                   "loss/g/sty": torch.tensor(float("nan")), "lr": float("nan")})
    watch.add(18, {"loss/g/adv": torch.tensor(float("nan")), "loss/d/r1": torch.tensor(1.0),
                   "loss/g/sty": torch.tensor(1.0), "lr": 0.1})  # later steps do not overwrite it
    with pytest.raises(NonFiniteLossError) as info:
        watch.check()
    message = str(info.value)
    assert "step 17" in message and "loss/d/r1=inf" in message and "loss/g/sty=nan" in message
    assert "lr=nan" in message and "loss/g/adv" not in message


def test_sigterm_checkpoints_and_resume_finishes_identically(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    straight = make_trainer()
    run(straight, tmp_path / "a", 6, checkpoint_every=100)

    stopped = make_trainer(kill_at=3)
    assert run(stopped, tmp_path / "b", 6, checkpoint_every=100) == 3
    assert signal.getsignal(signal.SIGTERM) is before
    assert stopped.checkpointed == [3]
    manager = CheckpointManager(tmp_path / "b", keep=2)
    assert manager.latest().name == "step-0000003.pt"

    resumed = make_trainer(seed=7)
    assert run(resumed, tmp_path / "b", 6, resume="auto", checkpoint_every=100) == 6
    assert_same_training_state(straight, resumed)
    assert manager.latest().name == "step-0000006.pt"
    # the resumed run logs steps 4 and 6 once each, after the step-2 line of the first part
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_stop_signal_second_sigint_aborts():
    before = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_prepare_run_dir_refuses_to_overwrite(tmp_path):
    config = {"name": "toy", "train": {"lr": 2e-4, "betas": [0.0, 0.99]}}
    run_dir = prepare_run_dir(tmp_path, "toy", config, resume=False)
    assert run_dir == tmp_path / "toy"
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == config
    meta = json.loads((run_dir / "meta.json").read_text())
    assert {"git_commit", "python", "torch", "torchvision", "gpunit", "command", "hostname",
            "start_time"} <= meta.keys()
    assert meta["torch"] == torch.__version__

    prepare_run_dir(tmp_path, "toy", config, resume=False)  # no checkpoints yet: fine
    CheckpointManager(run_dir, keep=1).save({"step": 1}, 1)
    with pytest.raises(RunExistsError, match="--resume"):
        prepare_run_dir(tmp_path, "toy", config, resume=False)
    assert prepare_run_dir(tmp_path, "toy", config, resume=True) == run_dir


def test_prepare_run_dir_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    run_dir = prepare_run_dir(tmp_path, "nogit", {"a": 1}, resume=False)
    assert json.loads((run_dir / "meta.json").read_text())["git_commit"] is None


def test_rng_state_round_trips_through_weights_only_load():
    random.gauss(0, 1), np.random.standard_normal()  # fill the cached-gaussian slots too
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.standard_normal(), torch.rand(3))
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    again = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.standard_normal(), torch.rand(3))
    assert expected[:2] == again[:2] and expected[3] == again[3]
    assert np.array_equal(expected[2], again[2]) and torch.equal(expected[4], again[4])


def test_resume_on_more_processes_gives_each_new_one_its_own_stream(monkeypatch):
    """A checkpoint saved by one process, resumed by three: rank 0 continues the saved stream, ranks 1
    and 2 get streams of their own (Stage I's content noise must differ across processes), the same
    on every resume."""
    from gpunit.engine import distributed, loop
    torch.manual_seed(7)
    state = {"rng": capture_rng_state(), "rng_per_process": [capture_rng_state()]}
    continued = torch.rand(4)

    def draws(rank):
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        loop._restore_process_rng(state)
        return torch.rand(4)

    rank0, rank1, rank2 = draws(0), draws(1), draws(2)
    assert torch.equal(rank0, continued)
    assert not torch.equal(rank1, rank0) and not torch.equal(rank2, rank0) and not torch.equal(rank1, rank2)
    assert torch.equal(draws(1), rank1) and torch.equal(draws(2), rank2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rng_state_round_trips():
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)
    expected = torch.rand(3, device="cuda")
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    assert torch.equal(torch.rand(3, device="cuda"), expected)


def test_ema_update():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model(torch.randn(5, 3))  # move the BN running statistics away from their init
    old = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, decay=0.9)
    for p_ema, p_old, p in zip(ema.parameters(), old, model.parameters()):
        assert torch.allclose(p_ema, 0.9 * p_old + 0.1 * p)
        assert p_ema.grad_fn is None
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        assert torch.equal(b_ema, b)


def test_run_logger_writes_jsonl_png_and_events(tmp_path):
    logger = RunLogger(tmp_path)
    logger.scalars(10, {"loss/g/adv": 0.5, "time/step": torch.tensor(0.25)})
    grid = torch.full((3, 4, 6), -1.0)
    grid[:, 0, 0] = 1.0
    logger.images(10, "samples/train", grid)
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 10, "loss/g/adv": 0.5, "time/step": 0.25}]
    png = np.asarray(Image.open(tmp_path / "images" / "samples_train_0000010.png"))
    assert png.shape == (4, 6, 3) and png[0, 0].tolist() == [255] * 3 and png[1, 1].tolist() == [0] * 3
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        RunLogger(tmp_path / "x").images(1, "bad", torch.zeros(1, 4, 4))


def test_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path / "run", enabled=False)
    logger.scalars(1, {"a": 1.0})
    logger.images(1, "t", torch.zeros(3, 2, 2))
    logger.close()
    assert not (tmp_path / "run").exists()


def test_train_loop_logs_time_and_images(tmp_path):
    run(make_trainer(), tmp_path, 4, log_every=2, image_every=3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4]
    assert rows[0]["time/images_per_s"] == pytest.approx(4 / rows[0]["time/step"])
    assert rows[0]["lr"] == 1e-2 and np.isfinite(rows[0]["loss/g/mse"])
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "samples_toy_0000001.png", "samples_toy_0000003.png"]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("banana", "meta"):
        with pytest.raises(ValueError, match='"auto", "cpu", "cuda", "cuda:N"'):
            resolve_device(bad)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_training_needs_no_evaluation_packages():
    """Training, translation and the benchmark import without pytorch-fid, lpips and
    pytorch-pretrained-biggan (a GPU box may lack them; they are needed only to evaluate or to
    generate BigGAN pairs). A fresh interpreter: this one has imported them already."""
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'lpips', 'pytorch_fid', 'pytorch_pretrained_biggan'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import gpunit.gp_unit.stage1, gpunit.gp_unit.stage2, gpunit.gp_unit.benchmark, gpunit.translate_folder\n"
        "print('imported')\n"
        "import pytorch_fid  # the block works\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "imported", result.stderr[-1500:]
    assert "ImportError: blocked pytorch_fid" in result.stderr
