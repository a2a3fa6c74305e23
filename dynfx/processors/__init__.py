"""Processor classes (thin ``nn.Module`` wrappers around :mod:`dynfx.functional`).

:data:`PROCESSORS` is the one list of the processor classes: the package exports, the README's
processor table and the tests are derived from it.
"""

from .base import DynamicsProcessor
from .multiband import MultiBandCompressor, MultiBandExpander, MultiBandLimiter, MultiBandNoiseGate
from .single import Compressor, Expander, Limiter, NoiseGate
from .transient import TransientShaper

PROCESSORS = (
    Compressor,
    Limiter,
    Expander,
    NoiseGate,
    TransientShaper,
    MultiBandCompressor,
    MultiBandLimiter,
    MultiBandExpander,
    MultiBandNoiseGate,
)

__all__ = ["DynamicsProcessor", "PROCESSORS", *(cls.__name__ for cls in PROCESSORS)]
