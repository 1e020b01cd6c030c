"""train.precision / channels_last = auto: the timed probe picks the fastest, caches it, moves no RNG and
leaves the run's weights those of the explicit setting (gpunit/engine/precision_probe.py)."""
from __future__ import annotations

import itertools
import json
import logging
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from gpunit.data.datasets import item_generator
from gpunit.engine import precision_probe
from gpunit.engine.config import TrainConfig
from gpunit.engine.trainer import Trainer

CPU = torch.device("cpu")


class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": torch.randn(3, 8, 8, generator=item_generator(0, i))}


class TinyTrainer(Trainer):
    """A conv net that learns to denoise; its step draws from torch's, numpy's and python's global RNGs."""

    def __init__(self, train: TrainConfig, fail_bf16: bool = False, width: int = 8):
        super().__init__(train, CPU)
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(width, 3, 3, padding=1))
        self.net = self.network("net", net)
        self.net_ema = self.ema("net_ema", self.net, 0.9)
        self.optimizer("net", self.net.parameters(), 1e-2, (0.5, 0.9))
        self.loader("train", Images())
        self.images_per_step, self.fail_bf16 = train.batch_size, fail_bf16

    def iteration(self, step):
        x = self.next_batch()["x"]
        noisy = x + 0.1 * torch.randn_like(x) * (1 + np.random.rand() + random.random())

        def loss_of(i):
            if self.fail_bf16 and self.precision == "bf16":
                raise RuntimeError("no bf16 kernel for this op")
            with self.autocast():
                y_hat = self.net(noisy)
            loss = (y_hat.float() - x).abs().mean()
            return loss, {"loss/g/rec": loss.detach()}

        return self.update(["net"], loss_of)


def tiny(precision="auto", channels_last="auto", **kw) -> TinyTrainer:
    torch.manual_seed(0)
    return TinyTrainer(TrainConfig(batch_size=4, precision=precision, channels_last=channels_last), **kw)


def rng_now():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def same_rng(a, b) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


@pytest.fixture(autouse=True)
def probing(monkeypatch, tmp_path):
    monkeypatch.delenv("GPUNIT_PROBE", raising=False)  # the suite turns the probe off elsewhere
    monkeypatch.setenv("GPUNIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_probe, "WARMUP_STEPS", 1)
    monkeypatch.setattr(precision_probe, "TIMED_STEPS", 1)


def fake_timer(seconds: list[float]):
    """A clock whose k-th timed step (start, end) lasts ``seconds[k]``."""
    ticks = itertools.chain.from_iterable((10.0 * k, 10.0 * k + s) for k, s in enumerate(seconds))
    return lambda: next(ticks)


def names(trainer) -> list[str]:
    return [s.name for s in precision_probe.candidates(CPU, "auto", "auto")[0]]


@pytest.mark.parametrize("fastest", [0, 1, 2])
def test_auto_picks_the_fastest_of_the_timed_settings(fastest, caplog):
    trainer = tiny()
    settings = names(trainer)
    if fastest >= len(settings):
        pytest.skip("bf16 is emulated on this CPU: not a candidate")
    seconds = [0.3 if i == fastest else 0.5 for i in range(len(settings))]
    with caplog.at_level(logging.INFO, "gpunit.speed"):
        chosen = precision_probe.choose(trainer, 1, "auto", "auto", timer=fake_timer(seconds))
    assert chosen.name == settings[fastest]
    assert f"auto: {settings[fastest]}; median s/step" in caplog.text and "300 ms" in caplog.text


def test_the_choice_is_cached_and_reused(monkeypatch, tmp_path):
    trainer = tiny()
    settings = names(trainer)
    first = precision_probe.choose(trainer, 1, "auto", "auto", timer=fake_timer([0.5] * (len(settings) - 1) + [0.1]))
    cache = json.loads(precision_probe.cache_path().read_text())
    (entry,) = cache["entries"].values()
    assert entry["choice"]["name"] == first.name == settings[-1]
    assert set(entry["timings_s"]) == set(settings) and entry["machine"]["threads"] == torch.get_num_threads()

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(precision_probe, "time_settings", no_probe)
    assert precision_probe.choose(tiny(), 1, "auto", "auto") == first
    with pytest.raises(AssertionError, match="probed again"):  # another configuration is measured anew
        precision_probe.choose(tiny(width=4), 1, "auto", "auto")


@pytest.mark.parametrize("fastest", [0, 1, 2])
def test_auto_trains_the_weights_of_the_explicit_setting_and_moves_no_rng(fastest, monkeypatch):
    auto = tiny()
    settings = names(auto)
    if fastest >= len(settings):
        pytest.skip("bf16 is emulated on this CPU: not a candidate")
    seconds = [0.3 if i == fastest else 0.5 for i in range(len(settings))]
    real_choose = precision_probe.choose
    monkeypatch.setattr(precision_probe, "choose", lambda *a, **k: real_choose(*a, **k, timer=fake_timer(seconds)))
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    before = rng_now()
    auto.resolve_auto_settings(1)
    after_probe = rng_now()
    assert same_rng(before, after_probe)
    assert auto._loaders["train"].consumed == 0 and auto._loaders["train"].iterator is None
    chosen = precision_probe.Setting(auto.precision, auto.channels_last)
    assert chosen.name == settings[fastest]
    for step in range(1, 4):
        auto.train_step(step)
    auto_rng = rng_now()

    explicit = tiny(chosen.precision, chosen.channels_last)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    for step in range(1, 4):
        explicit.train_step(step)
    for (key, a), (_, b) in zip(auto.state_dict()["net"].items(), explicit.state_dict()["net"].items()):
        assert torch.equal(a, b), key
    for a, b in zip(auto.net_ema.parameters(), explicit.net_ema.parameters()):
        assert torch.equal(a, b)
    assert same_rng(auto_rng, rng_now())
    assert auto.net[0].weight.is_contiguous(memory_format=torch.channels_last) == chosen.channels_last


def test_a_failing_setting_is_ruled_out_with_its_reason(caplog):
    trainer = tiny("auto", True, fail_bf16=True)
    with caplog.at_level(logging.INFO, "gpunit.speed"):
        trainer.resolve_auto_settings(1)
    assert (trainer.precision, trainer.channels_last) == ("fp32", True)
    assert ("bf16 + channels_last failed (RuntimeError: no bf16 kernel for this op)" in caplog.text
            or "bf16 + channels_last not tried: this CPU has no bf16" in caplog.text)
    entry, = json.loads(precision_probe.cache_path().read_text())["entries"].values()
    assert list(entry["timings_s"]) == ["fp32 + channels_last"]


def test_probe_off_takes_the_flag_rule(monkeypatch):
    monkeypatch.setenv("GPUNIT_PROBE", "off")
    trainer = tiny()
    trainer.train_step(1)
    assert trainer.channels_last is False and trainer.precision in ("fp32", "bf16")
    assert not precision_probe.cache_path().exists()


def test_channels_last_accepts_auto_in_configs():
    from gpunit.engine.config import ConfigError, load_config
    from gpunit.gp_unit.config import Stage1Config

    assert load_config(None, Stage1Config, ["train.channels_last=auto"]).train.channels_last == "auto"
    assert load_config(None, Stage1Config, ["train.channels_last=true"]).train.channels_last is True
    with pytest.raises(ValueError, match="true, false or auto"):
        TinyTrainer(TrainConfig(channels_last="fast"))
    with pytest.raises(ConfigError):
        load_config(None, Stage1Config, ["train.channels_last=[1]"])


def real_trainers(which: str, root, tmp_path, **train):
    """A tiny Stage II or DeepI2I trainer of the method's own code, with ``train.*`` overrides."""
    from gpunit.engine.config import load_config
    sets = [f"train.{k}={v}" for k, v in train.items()]
    if which == "stage2":
        from gpunit.gp_unit.config import Stage2Config
        from gpunit.gp_unit.models import ContentEncoder
        from gpunit.gp_unit.stage2 import Stage2Trainer
        from gpunit.gp_unit.weights import save_content_encoder
        torch.manual_seed(0)
        encoder = save_content_encoder(ContentEncoder(64, 8, 8, 16), tmp_path / "ec.pt")
        sets = [f"content_encoder={encoder}", f"data.source=[{root}/domains/ellipse/train]",
                f"data.target=[{root}/domains/star/train]", f"out_dir={tmp_path}", "model.base_channels=8",
                "model.max_channels=16", "model.style_base_channels=8", "model.style_dim=16", "model.style_hidden=8",
                "model.disc_base_channels=8", "model.disc_max_channels=16", "data.num_workers=0",
                "train.batch_size=2", *sets]
        cfg = load_config(REPO / "configs/gp_unit/stage2/synthetic.yaml", Stage2Config, sets)
        torch.manual_seed(0)
        return Stage2Trainer(cfg, CPU)
    raise ValueError(which)


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_stage2_with_auto_trains_the_explicit_settings_weights(tiny_synthetic, tmp_path, monkeypatch):
    """The real Stage II trainer (EMA, frozen Ec, VGG-less perceptual, two optimisers, R1): auto forced to
    channels_last (bf16 too where the CPU computes it) by the injected timer equals the explicit run bitwise."""
    settings = [s.name for s in precision_probe.candidates(CPU, "auto", "auto")[0]]
    seconds = [0.5] * (len(settings) - 1) + [0.1]  # the last candidate: bf16 + channels_last, or fp32 + channels_last
    real_choose = precision_probe.choose
    monkeypatch.setattr(precision_probe, "choose", lambda *a, **k: real_choose(*a, **k, timer=fake_timer(seconds)))
    auto = real_trainers("stage2", tiny_synthetic, tmp_path, precision="auto", channels_last="auto")
    torch.manual_seed(3)
    for step in (1, 2):
        auto.train_step(step)
    chosen = precision_probe.Setting(auto.precision, auto.channels_last)
    assert chosen.name == settings[-1] and chosen.channels_last
    after = torch.get_rng_state()
    explicit = real_trainers("stage2", tiny_synthetic, tmp_path, precision=chosen.precision, channels_last=True)
    torch.manual_seed(3)
    for step in (1, 2):
        explicit.train_step(step)
    assert torch.equal(after, torch.get_rng_state())
    a, b = auto.state_dict(), explicit.state_dict()
    for net in ("generator", "generator_ema", "discriminator"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    assert a["consumed"] == b["consumed"] == {"train": 4}


def test_a_resumed_run_keeps_the_choice_of_its_checkpoint(monkeypatch):
    trainer = tiny()
    settings = names(trainer)
    real_choose = precision_probe.choose
    monkeypatch.setattr(precision_probe, "choose",
                        lambda *a, **k: real_choose(*a, **k, timer=fake_timer([0.5] * (len(settings) - 1) + [0.1])))
    trainer.train_step(1)
    state = trainer.state_dict()
    assert state["auto_settings"] == {"precision": trainer.precision, "channels_last": True}

    def no_probe(*args, **kwargs):
        raise AssertionError("probed on resume")

    monkeypatch.setattr(precision_probe, "choose", no_probe)
    resumed = tiny()
    resumed.load_state_dict(state)
    resumed.train_step(2)
    assert (resumed.precision, resumed.channels_last) == (trainer.precision, True)
    assert "auto_settings" not in tiny("fp32", False).state_dict()


def test_a_cached_choice_is_not_reused_for_a_step_that_does_other_work():
    """The cache key follows the settings that change the step's work, e.g. the demos' speed options."""
    from types import SimpleNamespace

    from gpunit.biggan.config import BigGANConfig
    from gpunit.gp_unit.config import Stage2Config

    def key(cfg):
        return precision_probe.config_key(SimpleNamespace(cfg=cfg, networks={}))

    plain, reuse = BigGANConfig(), BigGANConfig()
    reuse.train.reuse_fakes_for_d = True
    assert key(plain) != key(reuse) and key(plain) == key(BigGANConfig())
    lazy = Stage2Config()
    lazy.loss.r1_every = 4
    assert key(Stage2Config()) != key(lazy)
