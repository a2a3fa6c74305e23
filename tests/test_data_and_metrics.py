"""The built-in generator's determinism, fixed validation/test sets, and the metrics against
hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynfx
from models.data.synth import KINDS, SynthConfig, generate_clip
from models.metrics import gain_mae_db, param_errors, si_sdr


def test_generator_is_deterministic_per_seed():
    cfg = SynthConfig(22050, 0.5)
    for kind in KINDS:
        a, _ = generate_clip(cfg, 7, 3, kind)
        b, _ = generate_clip(cfg, 7, 3, kind)
        c, _ = generate_clip(cfg, 8, 3, kind)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        rms_db = 20 * np.log10(np.sqrt(np.mean(a**2)))
        assert -30.5 <= rms_db <= -5.5 and np.abs(a).max() <= 10 ** (-1 / 20) + 1e-6


def test_validation_and_test_sets_are_fixed_by_seed():
    from models.data.datamodule import EffectDataModule

    def items():
        dm = EffectDataModule(train_size=2, val_size=3, test_size=3, clip_seconds=0.2,
                              num_params=6)
        dm.setup("test")
        return [dm.splits["test"][i] for i in range(3)]

    a, b = items(), items()
    for x, y in zip(a, b):
        assert torch.equal(x["dry"], y["dry"]) and torch.equal(x["norm_params"], y["norm_params"])


def test_metrics_against_hand_computed_values():
    comp = dynfx.Compressor()
    true = torch.zeros(1, 6, dtype=torch.float64)
    pred = torch.zeros(1, 6, dtype=torch.float64)
    pred[0, 0] = 0.5  # threshold -60 -> -30 dB
    pred[0, 1] = 1.0  # ratio 1 -> 20
    err = param_errors(comp, pred, true)
    assert err["mae/threshold_db"].item() == pytest.approx(30.0)
    assert err["mae_norm/threshold_db"].item() == pytest.approx(0.5)
    assert err["mae/ratio"].item() == pytest.approx(19.0)
    assert err["log_err/ratio"].item() == pytest.approx(math.log(20.0))
    ref = torch.tensor([[[1.0, -1.0, 2.0, 0.0]]])
    noise = torch.tensor([[[0.1, 0.1, -0.1, -0.1]]])
    # by hand: centred ref [0.5, -1.5, 1.5, -0.5] (energy 5), <noise, ref> = -0.2, so the
    # projection scale is 0.96: target energy 0.96^2 * 5 = 4.608, residual
    # [0.12, 0.04, -0.04, -0.12] (energy 0.032); SI-SDR = 10 log10(4.608 / 0.032) = 10 log10(144)
    assert si_sdr(ref + noise, ref).item() == pytest.approx(10 * math.log10(144.0), rel=1e-5)
    assert si_sdr(3.0 * ref, ref).item() > 60  # scale-invariant
    g1 = torch.tensor([[0.0, -10.0, -300.0]])
    g2 = torch.tensor([[-2.0, -10.0, -100.0]])
    assert gain_mae_db(g1, g2).item() == pytest.approx(2.0 / 3.0)
