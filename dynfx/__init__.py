"""dynfx: fast, exact, differentiable dynamics processors for PyTorch."""

from . import crossover, functional
from ._ballistics import ballistics, ballistics_reference
from .params import EffectParam
from .processors import (
    Compressor,
    DynamicsProcessor,
    Expander,
    Limiter,
    MultiBandCompressor,
    MultiBandExpander,
    MultiBandLimiter,
    MultiBandNoiseGate,
    NoiseGate,
    TransientShaper,
)

__version__ = "0.1.0"

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

__all__ = [
    "EffectParam",
    "DynamicsProcessor",
    "Compressor",
    "Limiter",
    "Expander",
    "NoiseGate",
    "TransientShaper",
    "MultiBandCompressor",
    "MultiBandLimiter",
    "MultiBandExpander",
    "MultiBandNoiseGate",
    "PROCESSORS",
    "ballistics",
    "ballistics_reference",
    "functional",
    "crossover",
]
