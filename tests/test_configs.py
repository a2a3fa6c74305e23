"""The Hydra configs: every processor has one, every knee/smoothing combination and plugin
target instantiates, a wrong group option lists the valid ones."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import dynfx

from models.configs import config_name, processor_node

from .conftest import ROOT, compose_config

# the dynfx processors' config names (generated from dynfx.PROCESSORS by models.configs);
# conf/processor/plugin_*.yaml are the third-party plugin targets (models/plugins.py)
PROCESSORS = sorted(config_name(c) for c in dynfx.PROCESSORS)
PLUGIN_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "processor").glob("plugin_*.yaml"))

def test_every_processor_class_has_a_config():
    """Each class of the package's list composes as ``processor=<snake_case name>`` into that
    class with its own defaults; no hand-written file shadows a generated entry."""
    for cls in dynfx.PROCESSORS:
        cfg = compose_config([f"processor={config_name(cls)}", "data.sample_rate=22050",
                              "run_dir=."])
        proc = instantiate(cfg.processor)
        assert type(proc) is cls and proc.sample_rate == 22050
        assert OmegaConf.to_container(cfg.processor, resolve=True) == {
            **processor_node(cls), "sample_rate": 22050}
    assert config_name(dynfx.MultiBandNoiseGate) == "multiband_noise_gate"
    files = {p.stem for p in (ROOT / "conf" / "processor").glob("*.yaml")}
    assert not files & set(PROCESSORS), "a file would shadow the generated entry"


@pytest.mark.parametrize("name", PLUGIN_CONFIGS)
def test_plugin_target_configs_instantiate(name):
    from models.plugins import PluginProcessor

    p = instantiate(compose_config([f"processor={name}", "run_dir=."]).processor)
    assert isinstance(p, PluginProcessor) and p.count_num_parameters() >= 2


@pytest.mark.parametrize("proc", PROCESSORS)
def test_every_processor_knee_smoothing_combination_instantiates(proc):
    knees = [None] if proc == "transient_shaper" else ["hard", "quadratic", "exponential"]
    for knee in knees:
        for smooth in ("ballistics", "iir"):
            over = [f"processor={proc}", f"processor.smooth_type={smooth}", "run_dir=."]
            if knee:
                over.append(f"processor.knee_type={knee}")
            cfg = compose_config(over)
            p = instantiate(cfg.processor)
            assert isinstance(p, dynfx.DynamicsProcessor)
            assert p.smooth_type == smooth and (knee is None or p.knee_type == knee)


def test_wrong_group_option_lists_valid_options():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose_config(["processor=compresor"])
    assert "compressor" in str(e.value) and "limiter" in str(e.value)


def test_the_input_mode_is_decided_in_one_place():
    """The module takes its input mode from the encoder; a different one, or an unknown mode,
    is a clear error."""
    from models.encoders import FrameEncoder, uses_dry
    from models.module import EffectEstimator

    enc = FrameEncoder(6, 44100, input_mode="wet", stem_stride=2, widths=(8,), dilations=(1,))
    module = EffectEstimator(enc, dynfx.Compressor(44100))
    assert module.input_mode == "wet" and not module.uses_dry
    with pytest.raises(ValueError, match="built for 'wet'"):
        EffectEstimator(enc, dynfx.Compressor(44100), input_mode="dry_wet")
    with pytest.raises(ValueError, match="input_mode must be one of"):
        uses_dry("stereo")
    assert uses_dry("dry_wet") and not uses_dry("wet")


@pytest.mark.parametrize("mode,split,epochs,schedule", [("dry_wet", 3, 1000, "cosine_time"),
                                                         ("wet", 0, 5, "cosine")])
def test_a_recipe_can_differ_between_the_input_modes(mode, split, epochs, schedule):
    cfg = compose_config(["experiment=est_multiband_limiter", f"input_mode={mode}", "run_dir=."])
    assert cfg.encoder.band_split == split and cfg.trainer.max_epochs == epochs
    assert cfg.model.scheduler == schedule and cfg.trainer.max_time == "00:00:10:00"
    with pytest.raises(ValueError, match="input_mode must be one of"):
        compose_config(["experiment=est_multiband_limiter", "input_mode=mono",
                        "run_dir=."]).encoder.band_split
