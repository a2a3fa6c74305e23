"""dynfx: fast, exact, differentiable dynamics processors for PyTorch."""

from . import crossover, functional
from ._ops import ballistics, ballistics_reference
from .params import EffectParam
from .processors import *  # noqa: F403 - the classes of processors.PROCESSORS
from .processors import PROCESSORS, DynamicsProcessor
from .processors import __all__ as _processor_names

__version__ = "0.1.0"

__all__ = [
    "EffectParam",
    *_processor_names,
    "ballistics",
    "ballistics_reference",
    "functional",
    "crossover",
]
