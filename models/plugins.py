"""Third-party processors as estimation targets: the ``pedalboard`` package's Compressor, Limiter
and NoiseGate (JUCE's ``dsp`` widgets inside), and their imitation by dynfx.

A :class:`PluginProcessor` has the plugin's own settings as its parameters (ranges below) and
behaves like a dynfx processor: calling it renders dynfx's imitation of the plugin, which is
differentiable, so a network that outputs the plugin's settings can be trained with an audio loss
against the plugin's real output (:meth:`PluginProcessor.render_plugin`).

The mapping from plugin settings to dynfx (:meth:`PluginProcessor.dynfx_settings`) follows the
plugins' published behaviour (JUCE 7, ``juce_dsp``):

- time constants: JUCE's ballistics filter uses ``exp(-2 pi 1000 / (fs t_ms))``, dynfx
  ``exp(-1000 / (fs t_ms))`` (SPEC section 2), so a JUCE time ``t`` is the dynfx time
  ``t / (2 pi)``;
- **Compressor** (threshold_db, ratio, attack_ms, release_ms): a peak follower with the
  attack and release, hard knee, no makeup -> dynfx ``Compressor(detector="peak",
  knee_type="hard")`` with the same threshold and ratio, knee 0, makeup 0;
- **Limiter** (threshold_db, release_ms): two compressors in series, a fixed one (-10 dB, 4:1,
  attack 2 ms, release 200 ms) and one at the threshold (1000:1, attack 0.001 ms, the release),
  then a gain of ``3.75 - threshold_db`` dB and a clip at +-1 -> the same chain of two dynfx
  peak compressors (hard knee), the gain and a clamp;
- **NoiseGate** (threshold_db, ratio, attack_ms, release_ms): a follower of the squared input
  (instant attack, 50 ms release; its square root is the level), then a follower of that
  amplitude with the attack and release, then the downward expander ``(ratio - 1) (L - T)`` below
  the threshold -> the same two followers (``dynfx.functional.smooth``) and
  ``dynfx.functional.expander_gain`` with the hard knee. (The instant attack makes the first
  follower hold the signal's peaks: the gate reads a sine at its peak level, not its RMS level,
  and noise about 10 dB above its RMS level; dynfx's own ``Expander`` would read RMS.)

Not imitated: pedalboard detects every channel on its own, dynfx links them (the max over the
channels); the two agree on mono audio, where the Compressor and Limiter imitations match the
plugins to float32 rounding (``tests/test_plugins.py``).

How close each imitation comes is measured, not assumed (``bench/plugins.py``; the table is in
the README).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

import dynfx
from dynfx import functional as F
from dynfx.params import EffectParam
from dynfx.processors.base import DynamicsProcessor

__all__ = ["PLUGINS", "PluginProcessor", "measured_gain_db", "pedalboard_available"]

TWO_PI = 2.0 * math.pi

# the plugin settings drawn for training and tests (the plugins' own units)
PLUGINS: dict[str, "OrderedDict[str, EffectParam]"] = {
    "Compressor": OrderedDict(threshold_db=EffectParam(-50.0, 0.0),
                              ratio=EffectParam(1.0, 20.0, "log"),
                              attack_ms=EffectParam(1.0, 300.0, "log"),
                              release_ms=EffectParam(50.0, 3000.0, "log")),
    "Limiter": OrderedDict(threshold_db=EffectParam(-30.0, 0.0),
                           release_ms=EffectParam(20.0, 2000.0, "log")),
    "NoiseGate": OrderedDict(threshold_db=EffectParam(-70.0, -20.0),
                             ratio=EffectParam(1.5, 10.0, "log"),
                             attack_ms=EffectParam(1.0, 100.0, "log"),
                             release_ms=EffectParam(20.0, 2000.0, "log")),
}
LIMITER_STAGE1 = dict(threshold_db=-10.0, ratio=4.0, attack_ms=2.0, release_ms=200.0)
LIMITER_STAGE2 = dict(ratio=1000.0, attack_ms=0.001)
GATE_RMS_RELEASE_MS = 50.0
GATE_INSTANT_MS = 1e-6  # the power follower's attack: instant (weight 1 for a new sample)


def measured_gain_db(wet: Tensor, dry: Tensor, fill: Tensor) -> Tensor:
    """The gain a processor applied, read off its output sample by sample: (B, T) in dB,
    ``20 log10 |wet| / |dry|`` on the channel with the louder dry sample (the plugins' gain is
    linked across channels and multiplies each sample, so this is exact up to float rounding,
    clipping included). Where the dry signal is below -80 dBFS the gain is not observable and
    ``fill`` (B, T) is used (the imitation's gain there)."""
    from .refine import VALID_AMPLITUDE, sample_gain_db

    lead = dry.abs().argmax(dim=1, keepdim=True)
    d, w = dry.gather(1, lead)[:, 0], wet.gather(1, lead)[:, 0]
    return torch.where(d.abs() > VALID_AMPLITUDE, sample_gain_db(w, d), fill)


def pedalboard_available() -> bool:
    try:
        import pedalboard  # noqa: F401
    except ImportError:
        return False
    return True


class PluginProcessor(DynamicsProcessor):
    """A pedalboard plugin (``"Compressor"``, ``"Limiter"`` or ``"NoiseGate"``) as a processor:
    parameters are the plugin's settings (:data:`PLUGINS`); calling it renders dynfx's
    differentiable imitation; :meth:`render_plugin` renders the plugin itself.

    Shape:
        x: (B, C, T); output: (B, C, T) (and the gain in dB, (B, T), with ``return_gain``:
        every stage's, the Limiter's output gain and clip included).
    """

    def __init__(self, plugin: str = "Compressor", sample_rate: float = 44100) -> None:
        super().__init__(sample_rate, validate=True)
        if plugin not in PLUGINS:
            raise ValueError(f"plugin must be one of {tuple(PLUGINS)}, got {plugin!r}")
        self.plugin = plugin
        self._init_params(None)
        n = {"Compressor": 1, "Limiter": 2, "NoiseGate": 0}[plugin]
        self.stages = torch.nn.ModuleList([dynfx.Compressor(
            sample_rate=sample_rate, knee_type="hard", detector="peak", validate=False)
            for _ in range(n)])

    def _register_default_parameters(self) -> Mapping[str, EffectParam]:
        return PLUGINS[self.plugin]

    def extra_repr(self) -> str:
        return f"plugin={self.plugin!r}, sample_rate={self.sample_rate}"

    # -- the mapping ---------------------------------------------------------------------------
    def dynfx_settings(self, settings: Mapping[str, Tensor]) -> tuple[list[dict], Tensor]:
        """Plugin settings (name -> (B,) physical values) -> the dsp_params of each dynfx
        stage, and the output gain in dB after the stages ((B,); the Limiter's makeup). For the
        NoiseGate: the settings of its two followers and gain computer (see the module doc)."""
        thr = settings["threshold_db"]
        zero = torch.zeros_like(thr)
        if self.plugin == "Compressor":
            stage = dict(threshold_db=thr, ratio=settings["ratio"], knee_db=zero,
                         attack_ms=settings["attack_ms"] / TWO_PI,
                         release_ms=settings["release_ms"] / TWO_PI, makeup_db=zero)
            return [stage], zero
        if self.plugin == "Limiter":
            s1 = {k: zero + v for k, v in LIMITER_STAGE1.items()}
            s1.update(knee_db=zero, makeup_db=zero, attack_ms=s1["attack_ms"] / TWO_PI,
                      release_ms=s1["release_ms"] / TWO_PI)
            s2 = dict(threshold_db=thr, ratio=zero + LIMITER_STAGE2["ratio"], knee_db=zero,
                      attack_ms=zero + LIMITER_STAGE2["attack_ms"] / TWO_PI,
                      release_ms=settings["release_ms"] / TWO_PI, makeup_db=zero)
            makeup = 10.0 * (1.0 - 1.0 / LIMITER_STAGE1["ratio"]) / 2.0 - thr  # 3.75 - thr
            return [s1, s2], makeup
        power_follower = dict(attack_ms=zero + GATE_INSTANT_MS,
                              release_ms=zero + GATE_RMS_RELEASE_MS / TWO_PI)
        level_follower = dict(attack_ms=settings["attack_ms"] / TWO_PI,
                              release_ms=settings["release_ms"] / TWO_PI)
        gain = dict(threshold_db=thr, ratio=settings["ratio"], knee_db=zero)
        return [power_follower, level_follower, gain], zero

    def _gate(self, x: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        power_f, level_f, gain_c = self.dynfx_settings(params)[0]
        sr = self.sample_rate
        power = F.smooth(x.square().amax(dim=1), power_f["attack_ms"], power_f["release_ms"], sr)
        amplitude = torch.sqrt(power + 1e-20)
        level = F.smooth(amplitude, level_f["attack_ms"], level_f["release_ms"], sr)
        gain = F.expander_gain(F.amp_to_db(level, 1e-10), gain_c["threshold_db"],
                               gain_c["ratio"], gain_c["knee_db"], "hard")
        return x * torch.pow(10.0, gain / 20.0)[:, None, :], gain

    def _process(self, x: Tensor, params: dict[str, Tensor]):
        if self.plugin == "NoiseGate":
            return self._gate(x, params)
        stages, makeup_db = self.dynfx_settings(params)
        y = x
        gain = torch.zeros(x.shape[0], x.shape[-1], dtype=x.dtype, device=x.device)
        for proc, dsp in zip(self.stages, stages):
            y, g = proc(y, dsp_params=dsp, return_gain=True, validate=False)
            gain = gain + g
        if self.plugin == "Limiter":  # the output gain, then the clip (in the gain: on the
            # louder channel, where the plugin's linked gain is read)
            y = y * torch.pow(10.0, makeup_db / 20.0)[:, None, None]
            peak = y.abs().amax(dim=1).clamp_min(1.0)
            gain = gain + makeup_db[:, None] - 20.0 * torch.log10(peak)
            y = y.clamp(-1.0, 1.0)
        return y, gain

    # -- the plugin itself ---------------------------------------------------------------------
    def plugin_instance(self, settings: Mapping[str, float]):
        """A fresh pedalboard plugin (no state from earlier audio) at ``settings``."""
        import pedalboard

        cls = getattr(pedalboard, self.plugin)
        return cls(**{k: float(v) for k, v in settings.items()})

    @torch.no_grad()
    def render_plugin(self, x: Tensor, norm_params: Tensor) -> Tensor:
        """The plugin's output for (B, C, T) audio at (B, P) normalised settings, each item
        rendered by a fresh instance (float32, on the CPU; returned on x's device and dtype)."""
        settings = self.denormalize(norm_params.detach().to(torch.float64).cpu())
        audio = x.detach().to(torch.float32).cpu().numpy()
        out = np.empty_like(audio)
        for b in range(audio.shape[0]):
            plugin = self.plugin_instance({k: v[b] for k, v in settings.items()})
            out[b] = plugin(np.ascontiguousarray(audio[b]), float(self.sample_rate), reset=True)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    @torch.no_grad()
    def render_target(self, dry: Tensor, norm_params: Tensor) -> tuple[Tensor, Tensor]:
        """The training target: the plugin's output and the gain measured on it (so that the
        gain-curve term, like the audio terms, compares against the plugin itself, not the
        imitation): see :func:`measured_gain_db`."""
        _, imitation = self(dry, norm_params=norm_params, return_gain=True, validate=False)
        wet = self.render_plugin(dry, norm_params)
        return wet, measured_gain_db(wet, dry, imitation)
