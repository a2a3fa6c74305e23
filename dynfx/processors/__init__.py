"""Processor classes (thin ``nn.Module`` wrappers around :mod:`dynfx.functional`)."""

from .base import DynamicsProcessor
from .multiband import MultiBandCompressor, MultiBandExpander, MultiBandLimiter, MultiBandNoiseGate
from .single import Compressor, Expander, Limiter, NoiseGate
from .transient import TransientShaper

__all__ = [
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
]
