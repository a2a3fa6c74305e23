"""The Hydra configs: every processor has one, every knee/smoothing combination and plugin
target instantiates, a wrong group option lists the valid ones."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

import dynfx

from .conftest import ROOT, compose_config

# the dynfx processors; conf/processor/plugin_*.yaml are the third-party plugin targets
# (models/plugins.py, tests/test_plugins.py)
PROCESSORS = sorted(p.stem for p in (ROOT / "conf" / "processor").glob("*.yaml")
                    if not p.stem.startswith("plugin_"))
PLUGIN_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "processor").glob("plugin_*.yaml"))

def test_every_processor_class_has_a_config():
    def snake(name):
        out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
        return out.replace("multi_band", "multiband")

    assert sorted(snake(c.__name__) for c in dynfx.PROCESSORS) == PROCESSORS


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
