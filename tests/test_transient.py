"""TransientShaper behaviour of SPEC section 4."""

import pytest
import torch

import dynfx

from .conftest import FS, drum_hit

SETTINGS = {"fast_ms": 1.0, "slow_ms": 30.0, "release_ms": 100.0}


def _energy_db(y, a, b):
    return 10 * torch.log10(y[..., a:b].square().mean()).item()


def _run(x, attack_db, sustain_db, **kw):
    ts = dynfx.TransientShaper(FS)
    return ts(x, dsp_params=SETTINGS | kw | {"attack_db": attack_db, "sustain_db": sustain_db})


def _windows(onset):
    return (onset, onset + int(0.003 * FS)), (onset + int(0.15 * FS), onset + int(0.35 * FS))


def test_zero_settings_are_exactly_identity():
    x, _ = drum_hit()
    for kw in ({}, {"fast_ms": 0.1, "slow_ms": 100.0, "release_ms": 10.0}):
        assert torch.equal(_run(x, 0.0, 0.0, **kw), x)
    x32 = torch.randn(2, 2, 1000)
    u = torch.rand(2, 5)
    u[:, 0] = u[:, 1] = 0.5  # 0 dB in [-24, 24]
    assert torch.equal(dynfx.TransientShaper()(x32, norm_params=u), x32)


@pytest.mark.parametrize("fast_slow", [(1.0, 30.0), (0.5, 20.0), (2.0, 60.0)])
def test_attack_boost_raises_onset_and_leaves_tail(fast_slow):
    x, onset = drum_hit()
    y = _run(x, 12.0, 0.0, fast_ms=fast_slow[0], slow_ms=fast_slow[1])
    on, tail = _windows(onset)
    assert _energy_db(y, *on) - _energy_db(x, *on) >= 6.0
    assert abs(_energy_db(y, *tail) - _energy_db(x, *tail)) <= 1.0


@pytest.mark.parametrize("fast_slow", [(1.0, 30.0), (0.5, 20.0), (2.0, 60.0)])
def test_sustain_cut_lowers_tail_and_leaves_onset(fast_slow):
    x, onset = drum_hit()
    y = _run(x, 0.0, -12.0, fast_ms=fast_slow[0], slow_ms=fast_slow[1])
    on, tail = _windows(onset)
    assert _energy_db(y, *tail) - _energy_db(x, *tail) <= -6.0
    assert abs(_energy_db(y, *on) - _energy_db(x, *on)) <= 2.0


def test_attack_cut_and_sustain_boost_go_the_other_way():
    x, onset = drum_hit()
    on, tail = _windows(onset)
    y = _run(x, -12.0, 0.0)
    assert _energy_db(y, *on) - _energy_db(x, *on) <= -6.0
    y = _run(x, 0.0, 12.0)
    assert _energy_db(y, *tail) - _energy_db(x, *tail) >= 6.0


def test_level_independent():
    x, _ = drum_hit()
    kw = {"attack_db": 9.0, "sustain_db": -7.0}
    y1 = _run(x, **kw)
    y2 = _run(0.1 * x, **kw)
    err = (y2 - 0.1 * y1).abs().max() / (0.1 * y1).abs().max()
    assert err < 1e-4


def test_causal_and_no_clip_wide_normalisation():
    x, onset = drum_hit()
    cut = onset + int(0.1 * FS)
    y = _run(x, 10.0, -10.0)
    # changing the future (a much louder second hit) does not change the past
    x2 = x.clone()
    x2[..., cut:] *= 20.0
    y2 = _run(x2, 10.0, -10.0)
    assert torch.equal(y[..., :cut], y2[..., :cut])
    # processing a prefix alone gives the same prefix
    assert torch.equal(_run(x[..., :cut], 10.0, -10.0), y[..., :cut])


def test_silence_is_not_boosted():
    """After a hit decays into the noise floor, the sustain boost fades out."""
    x, onset = drum_hit(length_s=2.0)
    x = x + 1e-5 * torch.randn_like(x)  # a noise floor about 90 dB below the hit
    y = _run(x, 0.0, 12.0)
    late = (int(1.5 * FS), int(2.0 * FS))
    assert abs(_energy_db(y, *late) - _energy_db(x, *late)) < 1.0
    mid = (onset + int(0.15 * FS), onset + int(0.35 * FS))
    assert _energy_db(y, *mid) - _energy_db(x, *mid) > 6.0


def test_multichannel_gets_one_gain():
    x, _ = drum_hit(channels=3)
    y = _run(x, 6.0, -6.0)
    nz = x[0, 0].abs() > 1e-9
    r = y[0][:, nz] / x[0][:, nz]
    assert torch.allclose(r, r[:1].expand_as(r), rtol=1e-12)
