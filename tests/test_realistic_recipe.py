"""The realistic-audio recipe (data/build_realistic.py): its MIDI writer, the composer's
determinism and dynamics, the split rule and the missing-package message. The full build needs
Debian packages and is not a test (data/README.md)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def recipe():
    return load_script("data/build_realistic.py", "build_realistic")


def test_vlq_matches_the_smf_examples(recipe):
    # the variable-length quantities listed in the Standard MIDI File specification
    for n, enc in [(0, "00"), (0x40, "40"), (0x7F, "7F"), (0x80, "8100"), (0x2000, "C000"),
                   (0x3FFF, "FF7F"), (0x4000, "818000"), (0x0FFFFFFF, "FFFFFF7F")]:
        assert recipe._vlq(n) == bytes.fromhex(enc)


def test_midi_file_round_trips_its_notes(recipe):
    ev = [(0, bytes([0xC0, 5])), (480, bytes([0x90, 60, 100])), (960, bytes([0x80, 60, 0])),
          (0, bytes([0x99, 36, 120])), (240, bytes([0x89, 36, 0]))]
    data = recipe.midi_file(ev, 480)
    assert data[:4] == b"MThd" and int.from_bytes(data[12:14], "big") == 480
    assert recipe.parse_midi_notes(data) == [(0, 9, 36, 120), (480, 0, 60, 100)]


def test_compose_is_seeded_and_has_dynamics(recipe):
    a, meta = recipe.compose(np.random.default_rng((0, 1, 7)))
    b, _ = recipe.compose(np.random.default_rng((0, 1, 7)))
    c, _ = recipe.compose(np.random.default_rng((0, 1, 8)))
    assert a == b and a != c
    vels = []
    for i in range(20):
        notes = recipe.parse_midi_notes(recipe.compose(np.random.default_rng((0, 1, i)))[0])
        assert notes, "every song plays something"
        v = np.array([n[3] for n in notes])
        vels.append(v.max() - v.min())
        assert all(0 <= n[1] <= 15 and 0 <= n[2] <= 127 and 1 <= n[3] <= 127 for n in notes)
    assert np.median(vels) >= 40  # loud and soft notes within a song
    assert meta["roles"] and 70 <= meta["bpm"] <= 160


def test_split_rule_is_stable_and_near_its_fractions(recipe):
    keys = [f"music/{i}" for i in range(2000)]
    splits = [recipe._split_of(k, 0) for k in keys]
    assert splits == [recipe._split_of(k, 0) for k in keys]
    share = {s: splits.count(s) / len(splits) for s in recipe.SPLITS}
    assert abs(share["test"] - 0.1) < 0.03 and abs(share["val"] - 0.1) < 0.03


def test_trim_drops_silent_ends(recipe):
    x = np.zeros((1000, 2), np.float32)
    x[300:400] = 0.5
    x[250] = 1e-4  # below -50 dB of the peak: trimmed
    assert recipe._trim(x).shape == (100, 2)
    assert recipe._trim(np.zeros((10, 2))).shape == (0, 2)


def test_missing_packages_are_one_clear_message(recipe, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(recipe, "SOUNDFONT", tmp_path / "none.sf2")
    monkeypatch.setattr(recipe, "KLETTRES_DIR", tmp_path / "none")
    assert recipe.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "fluid-soundfont-gm" in err and "klettres-data" in err and "apt-get install" in err
    assert not (tmp_path / "out").exists()
