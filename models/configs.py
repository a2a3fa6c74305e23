"""The ``processor`` config group's dynfx entries, generated from the package's one list of
classes (:data:`dynfx.PROCESSORS`): ``processor=compressor``, ``processor=multiband_compressor``
and so on, one per class, each with the class's defaults for ``num_bands``, ``knee_type`` and
``smooth_type`` (so ``processor.knee_type=hard`` overrides them). A new class in the list is a
config option without a file; ``conf/processor/`` holds only the third-party plugin targets.
Also the ``by_mode`` resolver of the recipes.
"""

from __future__ import annotations

import inspect

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import dynfx

__all__ = ["config_name", "processor_node", "register_processor_configs", "by_mode"]

SHOWN_ARGUMENTS = ("num_bands", "knee_type", "smooth_type")


def config_name(cls: type) -> str:
    """``MultiBandNoiseGate`` -> ``multiband_noise_gate``."""
    out = "".join("_" + c.lower() if c.isupper() else c for c in cls.__name__).lstrip("_")
    return out.replace("multi_band", "multiband")


def processor_node(cls: type) -> dict:
    """The config of ``cls``: its target, the data's sample rate and its constructor's defaults
    for the arguments a run usually changes."""
    node = {"_target_": f"dynfx.{cls.__name__}", "sample_rate": "${data.sample_rate}"}
    params = inspect.signature(cls.__init__).parameters
    for name in SHOWN_ARGUMENTS:
        if name in params and params[name].default is not inspect.Parameter.empty:
            node[name] = params[name].default
    return node


def register_processor_configs() -> None:
    """Store one ``processor`` entry per class of :data:`dynfx.PROCESSORS` (idempotent)."""
    store = ConfigStore.instance()
    for cls in dynfx.PROCESSORS:
        store.store(group="processor", name=config_name(cls), node=processor_node(cls))


def by_mode(input_mode: str, dry_wet, wet):
    """``${by_mode:${input_mode},A,B}`` in a recipe: A in dry_wet mode, B in wet mode (a recipe
    whose best settings differ between the input modes stays one file)."""
    from .encoders import uses_dry

    return dry_wet if uses_dry(input_mode) else wet


register_processor_configs()
OmegaConf.register_new_resolver("by_mode", by_mode, replace=True)
