"""Build the `realistic` audio folder: real recordings and realistically rendered music, from
packages that Debian serves, split by source into train/val/test.

    python data/build_realistic.py                      # -> data/realistic (a few minutes)
    python data/build_realistic.py --install            # first apt-get install the packages
    python data/build_realistic.py --out DIR --songs 160 --seed 0

Sources (see data/README.md for sizes and licences):

- ``music``: songs composed here from a seed (drums, bass, chords, a melody; sections at
  different loudness, crescendos, breaks) written as Standard MIDI files and rendered by
  fluidsynth with the FluidR3 General MIDI soundfont (package ``fluid-soundfont-gm``), with its
  reverb and chorus: sampled real instruments, played with velocity dynamics.
- ``speech``: recorded human voices (letters and syllables read aloud, several languages,
  package ``klettres-data``), joined into 6-second phrases with pauses; split by language.
- ``soundtrack``: produced game music (orchestral, acoustic and electronic tracks, package
  ``wesnoth-1.16-music``), cut into 12-second excerpts; split by track.

Every file is 44.1 kHz stereo 16-bit FLAC at its natural level (``data.level_db`` sets training
levels). The output holds ``train/``, ``val/`` and ``test/`` subfolders (what ``data=folder``
reads as its splits), ``LICENSES.md`` and ``manifest.json`` (every file, its source and split).
The build is deterministic for a given seed and package versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PACKAGES = ("fluidsynth", "fluid-soundfont-gm", "klettres-data", "wesnoth-1.16-music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
KLETTRES_DIR = Path("/usr/share/klettres")
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
RATE = 44100
SPLITS = ("train", "val", "test")

LICENCES = """# Licences of the `realistic` folder

| source | package (Debian 12) | licence | what is used |
|---|---|---|---|
| music | fluid-soundfont-gm 3.1 (FluidR3_GM.sf2, Frank Wen and contributors) | MIT | the instrument samples; the songs are composed by `data/build_realistic.py` (the project's licence) |
| music | fluidsynth 2.3 | LGPL-2.1+ | the renderer (not redistributed in the output) |
| speech | klettres-data (KDE KLettres, recorded letters and syllables) | GPL-2+ (see /usr/share/doc/klettres-data/copyright) | the recordings |
| soundtrack | wesnoth-1.16-music (The Battle for Wesnoth) | GPL-2+ (see /usr/share/doc/wesnoth-1.16-music/copyright) | excerpts of the tracks |

The output is derived from these packages: keep these terms when you share it.
"""


# ----------------------------------------------------------------------------------------------
# Standard MIDI files
# ----------------------------------------------------------------------------------------------
def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_file(events: list[tuple[int, bytes]], ppq: int) -> bytes:
    """A format-0 Standard MIDI file from (tick, message bytes) events (any order)."""
    track = bytearray()
    last = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80)):
        track += _vlq(tick - last) + msg
        last = tick
    track += _vlq(0) + b"\xff\x2f\x00"
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, ppq)
            + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def parse_midi_notes(data: bytes) -> list[tuple[int, int, int, int]]:
    """(tick, channel, note, velocity) of every note-on in a format-0 file (for the tests)."""
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    pos, tick, notes = 22, 0, []
    while pos < len(data):
        delta = 0
        while True:
            b = data[pos]
            pos += 1
            delta = (delta << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        tick += delta
        status = data[pos]
        if status == 0xFF:
            length = data[pos + 2]
            pos += 3 + length
            continue
        kind = status & 0xF0
        size = 2 if kind in (0xC0, 0xD0) else 3
        if kind == 0x90 and data[pos + 2] > 0:
            notes.append((tick, status & 0x0F, data[pos + 1], data[pos + 2]))
        pos += size
    return notes


PROGRESSIONS = ([0, 5, 3, 4], [0, 3, 4, 4], [0, 5, 1, 4], [0, 4, 5, 3], [0, 0, 3, 4], [5, 3, 0, 4])
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
CHORD_PROGRAMS = (0, 1, 4, 5, 16, 19, 24, 25, 26, 48, 49, 50, 61, 88, 89, 91)
BASS_PROGRAMS = (32, 33, 34, 35, 38, 39)
LEAD_PROGRAMS = (0, 11, 22, 40, 42, 56, 65, 66, 68, 71, 73, 80, 81)


def compose(rng: np.random.Generator, seconds: float = 14.0) -> tuple[bytes, dict]:
    """One song as a MIDI file: 2-4 sections of 2 bars at their own loudness, some with a
    crescendo or a break; drums, bass, chords and a melody (each present with some chance,
    at least one), or a solo instrument."""
    ppq = 480
    bpm = float(rng.uniform(70, 160))
    bar = 4 * ppq
    bars = max(4, int(seconds * bpm / 60 / 4))
    root = int(rng.integers(40, 52))
    scale = MAJOR if rng.random() < 0.6 else MINOR
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    solo = rng.random() < 0.25
    roles = {"drums": rng.random() < 0.7, "bass": rng.random() < 0.8,
             "chords": rng.random() < 0.9, "lead": rng.random() < 0.7}
    if solo:
        roles = dict.fromkeys(roles, False)
        roles[("chords", "lead")[int(rng.integers(2))]] = True
    if not any(roles.values()):
        roles["chords"] = True
    ev: list[tuple[int, bytes]] = [(0, b"\xff\x51\x03" + int(60e6 / bpm).to_bytes(3, "big"))]
    programs = {"bass": (1, int(rng.choice(BASS_PROGRAMS))),
                "chords": (2, int(rng.choice(CHORD_PROGRAMS))),
                "lead": (3, int(rng.choice(LEAD_PROGRAMS)))}
    for role, (ch, program) in programs.items():
        ev.append((0, bytes([0xC0 | ch, program])))
        ev.append((0, bytes([0xB0 | ch, 7, int(rng.integers(90, 120))])))  # channel volume
    # sections: a loudness (velocity scale) each, maybe a crescendo (expression ramp) or a break
    levels = rng.uniform(0.35, 1.0, size=bars)
    for start in range(0, bars, 2):
        levels[start:start + 2] = levels[start]
    breaks = set(int(b) for b in rng.choice(bars, size=int(rng.integers(0, 2)), replace=False)
                 if b > 0)

    def note(tick, ch, pitch, vel, length):
        vel = int(np.clip(vel, 1, 127))
        ev.append((tick, bytes([0x90 | ch, int(pitch), vel])))
        ev.append((tick + max(1, int(length)), bytes([0x80 | ch, int(pitch), 0])))

    def degree(d, octave=0):
        return root + 12 * (octave + d // 7) + scale[d % 7]

    for b in range(bars):
        t0 = b * bar
        lvl = levels[b]
        if b in breaks:
            continue
        if rng.random() < 0.2:  # a crescendo or decrescendo over the bar (CC 11)
            a, z = (40, 127) if rng.random() < 0.5 else (127, 40)
            for k in range(8):
                for ch in (1, 2, 3):
                    ev.append((t0 + k * bar // 8, bytes([0xB0 | ch, 11, int(a + (z - a) * k / 7)])))
        else:
            for ch in (1, 2, 3):
                ev.append((t0, bytes([0xB0 | ch, 11, 127])))
        chord = prog[b % len(prog)]
        if roles["drums"]:
            hat_step = ppq // (2 if rng.random() < 0.5 else 4)
            for t in range(0, bar, hat_step):
                note(t0 + t, 9, 42, lvl * rng.uniform(50, 90), hat_step // 2)
            for beat in range(4):
                if beat in (0, 2) or rng.random() < 0.15:
                    note(t0 + beat * ppq, 9, 36, lvl * rng.uniform(95, 127), ppq // 4)
                if beat in (1, 3):
                    note(t0 + beat * ppq, 9, 38, lvl * rng.uniform(85, 120), ppq // 4)
            if b % 4 == 3 and rng.random() < 0.6:
                note(t0 + 3 * ppq, 9, 49, lvl * 110, ppq)
        if roles["bass"]:
            step = ppq * (1 if rng.random() < 0.6 else 2)
            for t in range(0, bar, step):
                pitch = degree(chord, -1) + (0 if rng.random() < 0.8 else 7)
                note(t0 + t, 1, pitch, lvl * rng.uniform(80, 115), step * 0.85)
        if roles["chords"]:
            pattern = rng.choice(["pad", "half", "quarter", "arp"])
            tones = [degree(chord + k, 0) for k in (0, 2, 4)]
            if pattern == "pad":
                for p in tones:
                    note(t0, 2, p, lvl * rng.uniform(60, 95), bar * 0.98)
            elif pattern == "arp":
                for k, t in enumerate(range(0, bar, ppq // 2)):
                    note(t0 + t, 2, tones[k % 3] + 12 * (k // 3 % 2), lvl * rng.uniform(55, 100),
                         ppq * 0.45)
            else:
                step = bar // 2 if pattern == "half" else ppq
                for t in range(0, bar, step):
                    for p in tones:
                        note(t0 + t, 2, p, lvl * rng.uniform(60, 110), step * rng.uniform(0.3, 0.95))
        if roles["lead"]:
            t = 0
            d = chord + 7
            while t < bar:
                length = int(rng.choice([ppq // 2, ppq, ppq, 2 * ppq]))
                if rng.random() < 0.2:  # a rest
                    t += length
                    continue
                d += int(rng.integers(-2, 3))
                d = int(np.clip(d, 3, 16))
                note(t0 + t, 3, degree(d, 0), lvl * rng.uniform(70, 120),
                     min(length, bar - t) * rng.uniform(0.5, 0.95))
                t += length
    meta = {"bpm": round(bpm, 1), "bars": bars, "roles": [r for r, on in roles.items() if on],
            "programs": {r: programs[r][1] for r in programs if roles[r]}}
    return midi_file(ev, ppq), meta


# ----------------------------------------------------------------------------------------------
# the build
# ----------------------------------------------------------------------------------------------
def _split_of(key: str, seed: int, val: float = 0.1, test: float = 0.1) -> str:
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12
    return "test" if u < test else "val" if u < test + val else "train"


def _write(path: Path, audio: np.ndarray) -> None:
    """16-bit FLAC, scaled down only where the peak would clip (decoded Vorbis overshoots)."""
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(audio).max())
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    sf.write(str(path.with_suffix(".flac")), audio.astype(np.float32), RATE, subtype="PCM_16")


def _trim(x: np.ndarray, floor_db: float = -50.0) -> np.ndarray:
    """``x`` without its leading and trailing stretch below ``floor_db`` of its peak."""
    env = np.abs(x).max(axis=1)
    loud = np.flatnonzero(env > float(np.abs(x).max()) * 10 ** (floor_db / 20))
    return x[loud[0]: loud[-1] + 1] if loud.size else x[:0]


def _stereo_44k(x: np.ndarray, rate: int) -> np.ndarray:
    """(frames, channels) audio as (frames, 2) at 44.1 kHz (mono doubled, other rates
    resampled)."""
    if x.shape[1] == 1:
        x = np.repeat(x, 2, axis=1)
    x = x[:, :2]
    if rate != RATE:
        import torch
        import torchaudio
        x = torchaudio.functional.resample(torch.from_numpy(x.T.copy()), rate, RATE).numpy().T
    return x


def _read(path: Path, start: int = 0, frames: int = -1) -> np.ndarray:
    """(frames, 2) float at 44.1 kHz of a file (or of ``frames`` from ``start``)."""
    import soundfile as sf
    x, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    return _stereo_44k(x, rate)


def missing_packages() -> list[str]:
    need = {"fluidsynth": shutil.which("fluidsynth") is not None,
            "fluid-soundfont-gm": SOUNDFONT.exists(),
            "klettres-data": KLETTRES_DIR.exists(),
            "wesnoth-1.16-music": WESNOTH_MUSIC.exists()}
    return [p for p, ok in need.items() if not ok]


def install_packages() -> None:
    cmd = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if os.geteuid() != 0:
        cmd = ["sudo", *cmd]
    subprocess.run(cmd, check=True)


def build_music(out: Path, songs: int, seed: int, manifest: list, progress) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i in progress(range(songs), desc="music (fluidsynth)"):
            rng = np.random.default_rng((seed, 1, i))
            data, meta = compose(rng)
            mid = Path(tmp) / f"song{i:04d}.mid"
            wav = Path(tmp) / f"song{i:04d}.wav"
            mid.write_bytes(data)
            subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RATE),
                            "-F", str(wav), str(SOUNDFONT), str(mid)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            audio = _trim(_read(wav), floor_db=-70.0)  # the render's silent tail
            split = _split_of(f"music/{i}", seed)
            name = f"{split}/music/song{i:04d}.flac"
            _write(out / name, audio)
            manifest.append({"file": name, "source": "music", "split": split,
                             "seconds": round(len(audio) / RATE, 2), **meta})


def build_speech(out: Path, phrases_per_language: int, seed: int, manifest: list,
                 progress) -> None:
    langs = sorted(p for p in KLETTRES_DIR.iterdir() if p.is_dir()
                   and any(p.rglob("*.ogg")))
    for lang in progress(langs, desc="speech (klettres)"):
        files = sorted(lang.rglob("*.ogg"))
        split = _split_of(f"speech/{lang.name}", seed, val=0.15, test=0.15)
        rng = np.random.default_rng((seed, 2, int(hashlib.sha256(lang.name.encode())
                                                  .hexdigest()[:8], 16)))
        cache = {}
        for k in range(phrases_per_language):
            parts = []
            total = 0
            while total < 6 * RATE:
                f = files[int(rng.integers(len(files)))]
                if f not in cache:
                    cache[f] = _trim(_read(f))
                if not len(cache[f]):
                    continue
                word = cache[f] * float(10 ** (rng.uniform(-6, 3) / 20))  # natural variation
                pause = np.zeros((int(rng.uniform(0.05, 0.35) * RATE), 2), np.float32)
                parts += [word, pause]
                total += len(word) + len(pause)
            audio = np.concatenate(parts)[: 6 * RATE]
            # a quiet room under the voice (-66 dBFS RMS, low-passed noise), as in a recording
            noise = rng.standard_normal(audio.shape).astype(np.float32)
            noise = np.cumsum(noise, axis=0) * 0.02
            noise -= np.convolve(noise[:, 0], np.ones(441) / 441, mode="same")[:, None]
            noise *= 10 ** (-66 / 20) / (noise.std() + 1e-12)
            audio = audio + noise
            name = f"{split}/speech/{lang.name}_{k:03d}.flac"
            _write(out / name, audio)
            manifest.append({"file": name, "source": "speech", "split": split,
                             "language": lang.name, "seconds": 6.0})


def build_soundtrack(out: Path, excerpts_per_track: int, seed: int, manifest: list,
                     progress) -> None:
    import soundfile as sf
    tracks = sorted(WESNOTH_MUSIC.glob("*.ogg"))
    for track in progress(tracks, desc="soundtrack (wesnoth)"):
        info = sf.info(str(track))
        split = _split_of(f"soundtrack/{track.stem}", seed)
        rng = np.random.default_rng((seed, 3, int(hashlib.sha256(track.stem.encode())
                                                  .hexdigest()[:8], 16)))
        length = int(12 * info.samplerate)
        if info.frames < length:
            continue
        starts = sorted(rng.choice(info.frames - length, size=excerpts_per_track,
                                   replace=False).tolist())
        for k, start in enumerate(starts):
            x = _read(track, int(start), length)
            name = f"{split}/soundtrack/{track.stem}_{k}.flac"
            _write(out / name, x)
            manifest.append({"file": name, "source": "soundtrack", "split": split,
                             "track": track.name, "start_s": round(start / info.samplerate, 2),
                             "seconds": 12.0})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/realistic")
    ap.add_argument("--songs", type=int, default=160, help="MIDI songs to render")
    ap.add_argument("--phrases", type=int, default=12, help="speech phrases per language")
    ap.add_argument("--excerpts", type=int, default=3, help="excerpts per soundtrack track")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--install", action="store_true",
                    help=f"apt-get install {' '.join(PACKAGES)} first")
    args = ap.parse_args(argv)
    if args.install:
        install_packages()
    missing = missing_packages()
    if missing:
        print(f"missing packages: {' '.join(missing)}\n  install them with: "
              f"sudo apt-get install {' '.join(PACKAGES)}\n  (or run with --install)",
              file=sys.stderr)
        return 2
    try:
        from tqdm import tqdm as progress
    except ImportError:  # pragma: no cover
        def progress(it, desc=""):
            return it
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    manifest: list[dict] = []
    build_music(out, args.songs, args.seed, manifest, progress)
    build_speech(out, args.phrases, args.seed, manifest, progress)
    build_soundtrack(out, args.excerpts, args.seed, manifest, progress)
    (out / "LICENSES.md").write_text(LICENCES)
    seconds = time.perf_counter() - t0
    summary = {}
    for m in manifest:
        key = f"{m['split']}/{m['source']}"
        summary[key] = summary.get(key, 0) + 1
    size = sum(f.stat().st_size for f in out.rglob("*.flac"))
    (out / "manifest.json").write_text(json.dumps(
        {"seed": args.seed, "build_seconds": round(seconds, 1), "files": len(manifest),
         "bytes": size, "counts": summary, "items": manifest}, indent=1))
    print(f"{len(manifest)} files, {size / 1e6:.0f} MB in {out} ({seconds:.0f} s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
