"""The learning-rate schedules of the estimation module: step-based cosine, and cosine over the
run's time budget (``cosine_time``), checked against their formulas."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer

import dynfx
from models.encoders import FrameEncoder
from models.module import EffectEstimator


def _module(scheduler, total, callbacks=(), warmup_frac=0.1):
    enc = FrameEncoder(6, 44100, input_mode="wet", stem_stride=2, widths=(8,), dilations=(1,))
    module = EffectEstimator(enc, dynfx.Compressor(44100), scheduler=scheduler,
                             warmup_frac=warmup_frac)
    module._trainer = SimpleNamespace(estimated_stepping_batches=total, callbacks=list(callbacks))
    conf = module.configure_optimizers()
    sched = conf["lr_scheduler"]["scheduler"]
    return sched.lr_lambdas[0]


def _cosine(t):
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))


def test_step_cosine_follows_its_formula():
    f = _module("cosine", total=100)
    assert f(0) == pytest.approx(1 / 10)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(_cosine(45 / 90))
    assert f(100) == pytest.approx(0.05)


class _FakeTimer(Timer):
    """A Timer whose elapsed training time is set by the test."""

    def __init__(self, seconds):
        super().__init__(duration={"seconds": seconds})
        self.now = 0.0

    def time_elapsed(self, stage="train"):
        return self.now


def test_time_cosine_anneals_over_the_time_budget():
    timer = _FakeTimer(200)
    f = _module("cosine_time", total=10**6, callbacks=[timer])  # the step count never binds
    timer.now = 10.0  # 5 % of the budget: half-way through the 10 % warm-up
    assert f(3) == pytest.approx(0.5)
    timer.now = 20.0
    assert f(7) == pytest.approx(1.0)
    timer.now = 110.0  # 55 %: half-way through the decay
    assert f(11) == pytest.approx(_cosine(0.5))
    timer.now = 200.0
    assert f(12) == pytest.approx(0.05)
    timer.now = 260.0  # past the budget (the last step of a run Lightning is stopping)
    assert f(13) == pytest.approx(0.05)


def test_time_cosine_follows_the_steps_when_they_run_out_first():
    timer = _FakeTimer(3600)
    f = _module("cosine_time", total=100, callbacks=[timer])
    timer.now = 1.0
    assert f(55) == pytest.approx(_cosine(0.5))
    assert f(100) == pytest.approx(0.05)


def test_time_cosine_without_a_time_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="trainer.max_time"):
        _module("cosine_time", total=100)
    with pytest.raises(ValueError, match="cosine_time"):
        EffectEstimator(FrameEncoder(6, 44100, input_mode="wet", stem_stride=2, widths=(8,),
                                     dilations=(1,)), dynfx.Compressor(44100), scheduler="linear")


def test_time_cosine_sets_the_rate_of_a_real_optimizer():
    timer = _FakeTimer(100)
    enc = FrameEncoder(6, 44100, input_mode="wet", stem_stride=2, widths=(8,), dilations=(1,))
    module = EffectEstimator(enc, dynfx.Compressor(44100), scheduler="cosine_time",
                             optimizer=lambda p: torch.optim.SGD(p, lr=2.0), warmup_frac=0.0)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10**6, callbacks=[timer])
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    timer.now = 50.0
    opt.step()  # no gradients: leaves the weights alone
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * _cosine(0.5))
