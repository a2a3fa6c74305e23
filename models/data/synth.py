"""Built-in source audio: a seeded generator of clips with realistic dynamics.

Each clip is drawn from ``numpy.random.default_rng((seed, index))``, so clip ``i`` of seed ``s`` is
the same on every run and machine. A clip is one of: a drum pattern, plucked bass, plucked guitar,
piano-like notes, speech-like bursts, or a band mix (drums + bass + guitar or piano). Notes and hits
have varied velocities; patterns have rests and sections at different levels; the overall RMS level
is random in [-30, -6] dBFS, reduced where needed to keep the peak below -1 dBFS.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SynthConfig", "generate_clip", "KINDS"]

KINDS = ("drums", "bass", "guitar", "piano", "speech", "mix")


class SynthConfig:
    """Sample rate, clip length, channel count and the overall level range of generated clips."""

    def __init__(self, sample_rate: int = 22050, clip_seconds: float = 1.5, channels: int = 1,
                 level_db: tuple = (-30.0, -6.0), peak_db: float = -1.0):
        if clip_seconds <= 0 or sample_rate < 8000 or channels < 1:
            raise ValueError("SynthConfig: need clip_seconds > 0, sample_rate >= 8000, channels >= 1")
        self.sample_rate = int(sample_rate)
        self.clip_seconds = float(clip_seconds)
        self.channels = int(channels)
        self.level_db = tuple(level_db)
        self.peak_db = float(peak_db)

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def _band_noise(rng, n, fs, lo, hi):
    """White noise band-limited to [lo, hi] Hz (FFT mask), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec[(f < lo) | (f > hi)] = 0.0
    out = np.fft.irfft(spec, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _place(out, start, sound):
    """Add ``sound`` into ``out`` at sample ``start`` (clipped to the buffer)."""
    if start >= len(out):
        return
    end = min(len(out), start + len(sound))
    out[start:end] += sound[: end - start]


def _env_times(n, fs):
    return np.arange(n) / fs


def _kick(rng, fs, vel):
    t = _env_times(int(0.35 * fs), fs)
    f0, f1 = rng.uniform(110, 160), rng.uniform(40, 60)
    freq = f1 + (f0 - f1) * np.exp(-t / rng.uniform(0.02, 0.05))
    phase = 2 * np.pi * np.cumsum(freq) / fs
    body = np.sin(phase) * np.exp(-t / rng.uniform(0.12, 0.3))
    click = rng.standard_normal(len(t)) * np.exp(-t / 0.002) * 0.4
    return vel * (body + click)


def _snare(rng, fs, vel):
    t = _env_times(int(0.3 * fs), fs)
    tone = np.sin(2 * np.pi * rng.uniform(160, 220) * t) * np.exp(-t / 0.06)
    noise = _band_noise(rng, len(t), fs, 1500, 9000) * np.exp(-t / rng.uniform(0.06, 0.15))
    return vel * (0.6 * tone + 0.5 * noise)


def _hat(rng, fs, vel, open_):
    dur = 0.35 if open_ else 0.08
    t = _env_times(int(dur * fs), fs)
    decay = rng.uniform(0.12, 0.25) if open_ else rng.uniform(0.015, 0.04)
    return vel * 0.35 * _band_noise(rng, len(t), fs, 6000, min(16000, 0.45 * fs)) * np.exp(-t / decay)


def _partials(t, f0, n_partials, decay0, decay_slope, rng, inharm=0.0):
    """Additive tone whose upper partials decay faster."""
    out = np.zeros_like(t)
    nyq = 0.45 / (t[1] - t[0]) if len(t) > 1 else 1e9
    for k in range(1, n_partials + 1):
        fk = f0 * k * np.sqrt(1.0 + inharm * k * k)
        if fk >= nyq:
            break
        amp = rng.uniform(0.5, 1.0) / k
        out += amp * np.sin(2 * np.pi * fk * t + rng.uniform(0, 2 * np.pi)) * np.exp(
            -t * (decay0 + decay_slope * (k - 1)))
    return out


def _pluck(rng, fs, f0, vel, dur):
    t = _env_times(int(dur * fs), fs)
    tone = _partials(t, f0, 12, rng.uniform(2.0, 5.0), rng.uniform(1.0, 3.0), rng)
    attack = np.minimum(t / 0.002, 1.0)
    return vel * tone * attack


def _piano(rng, fs, f0, vel, hold):
    dur = hold + 0.4
    t = _env_times(int(dur * fs), fs)
    tone = _partials(t, f0, 10, rng.uniform(0.8, 2.0), rng.uniform(0.8, 2.0), rng, inharm=1e-4)
    release = np.where(t < hold, 1.0, np.exp(-(t - hold) / 0.05))  # note-off damps quickly
    attack = np.minimum(t / 0.003, 1.0)
    return vel * tone * attack * release


def _midi(note):
    return 440.0 * 2 ** ((note - 69) / 12)


def _sections(rng, n, fs):
    """A slowly varying section gain: 1-3 sections at levels within 12 dB of each other."""
    gain = np.ones(n)
    cuts = np.sort(rng.integers(0, n, size=rng.integers(0, 3)))
    edges = [0, *cuts.tolist(), n]
    for a, b in zip(edges[:-1], edges[1:]):
        gain[a:b] = 10 ** (rng.uniform(-12, 0) / 20)
    ramp = max(1, int(0.01 * fs))  # 10 ms crossfades between sections
    kernel = np.ones(ramp) / ramp
    return np.convolve(gain, kernel, mode="same")


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def _drums(rng, n, fs):
    out = np.zeros(n)
    bpm = rng.uniform(80, 160)
    step = 60.0 / bpm / 4  # sixteenth notes
    steps = int(n / fs / step) + 1
    kick_pat = rng.random(16) < 0.25
    kick_pat[0] = True
    hat_every = rng.choice([1, 2])
    rest_from = rng.integers(steps // 2, steps + 8)  # sometimes a rest near the end
    for i in range(steps):
        if i >= rest_from and i < rest_from + 4:
            continue
        pos = int(i * step * fs + rng.normal(0, 0.002) * fs)
        pos = max(pos, 0)
        if kick_pat[i % 16]:
            _place(out, pos, _kick(rng, fs, rng.uniform(0.6, 1.0)))
        if i % 8 == 4:
            _place(out, pos, _snare(rng, fs, rng.uniform(0.5, 1.0)))
        if i % hat_every == 0:
            _place(out, pos, _hat(rng, fs, rng.uniform(0.2, 0.8), open_=rng.random() < 0.1))
    return out


def _plucked_line(rng, n, fs, low, high, dur_range):
    out = np.zeros(n)
    pos = int(rng.uniform(0, 0.1) * fs)
    while pos < n:
        dur = rng.uniform(*dur_range)
        if rng.random() < 0.15:  # rest
            pos += int(dur * fs)
            continue
        note = rng.integers(low, high)
        _place(out, pos, _pluck(rng, fs, _midi(note), rng.uniform(0.3, 1.0), dur + 0.3))
        pos += int(dur * fs)
    return out


def _piano_notes(rng, n, fs):
    out = np.zeros(n)
    pos = int(rng.uniform(0, 0.1) * fs)
    while pos < n:
        hold = rng.uniform(0.1, 0.6)
        for _ in range(rng.integers(1, 4)):  # single notes or small chords
            note = rng.integers(48, 84)
            _place(out, pos, _piano(rng, fs, _midi(note), rng.uniform(0.2, 1.0), hold))
        pos += int((hold + rng.uniform(0.0, 0.3)) * fs)
    return out


def _speech(rng, n, fs):
    """Speech-like bursts: a glottal pulse train with a moving pitch, shaped by moving formants
    (frame-wise spectral envelopes, overlap-add), 3-6 syllables per second, unvoiced noise and
    pauses of 0.15-0.8 s."""
    out = np.zeros(n)
    frame, hop = 512, 256
    window = np.hanning(frame)
    freqs = np.fft.rfftfreq(frame, 1.0 / fs)
    pos = int(rng.uniform(0.0, 0.2) * fs)
    while pos < n:
        n_syll = rng.integers(2, 7)
        rate = rng.uniform(3.0, 6.0)
        phrase = np.zeros(int(n_syll / rate * fs) + frame)
        t = np.arange(len(phrase)) / fs
        f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = np.cumsum(f0) / fs
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        syl_env = np.clip(np.sin(np.pi * (t * rate % 1.0)), 0, None) ** 0.7
        voiced = pulses * syl_env
        unvoiced = rng.standard_normal(len(t)) * 0.05 * (rng.random(len(t)) < 1.0)
        unvoiced *= np.clip(np.sin(np.pi * (t * rate % 1.0 - 0.85) / 0.15), 0, None)
        f1_track = rng.uniform(300, 800) + 200 * np.sin(2 * np.pi * rate * t / 2)
        f2_track = rng.uniform(900, 2200) + 400 * np.sin(2 * np.pi * rate * t / 3 + 1.0)
        shaped = np.zeros(len(phrase) + frame)
        for start in range(0, len(phrase) - frame, hop):
            c = start + frame // 2
            env = (np.exp(-0.5 * ((freqs - f1_track[c]) / 90.0) ** 2)
                   + 0.6 * np.exp(-0.5 * ((freqs - f2_track[c]) / 120.0) ** 2)
                   + 0.2 * np.exp(-0.5 * ((freqs - 2800.0) / 250.0) ** 2))
            v = np.fft.irfft(np.fft.rfft(voiced[start:start + frame] * window) * env, frame)
            u = np.fft.irfft(np.fft.rfft(unvoiced[start:start + frame] * window)
                             * (freqs > 2500), frame)
            shaped[start:start + frame] += v + u
        _place(out, pos, shaped[: len(phrase)] * rng.uniform(0.5, 1.0))
        pos += len(phrase) + int(rng.uniform(0.15, 0.8) * fs)
    return out


def generate_clip(config: SynthConfig, seed: int, index: int, kind: str | None = None):
    """Clip ``index`` of ``seed``: a float32 array (channels, samples) and its kind."""
    rng = np.random.default_rng((int(seed), int(index)))
    n, fs = config.num_samples, config.sample_rate
    kind = kind or KINDS[rng.integers(len(KINDS))]
    if kind == "drums":
        mono = _drums(rng, n, fs)
    elif kind == "bass":
        mono = _plucked_line(rng, n, fs, 28, 52, (0.12, 0.5))
    elif kind == "guitar":
        mono = _plucked_line(rng, n, fs, 45, 76, (0.1, 0.4))
    elif kind == "piano":
        mono = _piano_notes(rng, n, fs)
    elif kind == "speech":
        mono = _speech(rng, n, fs)
    elif kind == "mix":
        other = _plucked_line(rng, n, fs, 45, 76, (0.1, 0.4)) if rng.random() < 0.5 else (
            _piano_notes(rng, n, fs))
        mono = (_drums(rng, n, fs) + 0.7 * _plucked_line(rng, n, fs, 28, 52, (0.12, 0.5))
                + 0.5 * other)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mono = mono * _sections(rng, n, fs)
    if config.channels == 1:
        audio = mono[None]
    else:  # a little width: per-channel gains and a tiny delay on the others
        chans = [mono]
        for _ in range(config.channels - 1):
            delay = rng.integers(0, 8)
            chans.append(rng.uniform(0.7, 1.0) * np.concatenate([np.zeros(delay), mono[: n - delay]]))
        audio = np.stack(chans)
    rms = np.sqrt(np.mean(audio**2)) + 1e-12
    audio = audio * (10 ** (rng.uniform(*config.level_db) / 20) / rms)
    peak = np.abs(audio).max() + 1e-12
    limit = 10 ** (config.peak_db / 20)
    if peak > limit:
        audio = audio * (limit / peak)
    return audio.astype(np.float32), kind
