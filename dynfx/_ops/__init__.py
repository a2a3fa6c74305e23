"""The compiled operations: the only place with custom ``autograd.Function``\\ s, numba and
Triton. One file per operation, named by what it computes; each operation picks its backend
from the tensor's device (numba kernels on CPU, Triton on CUDA where it has one, composed
PyTorch operations elsewhere).

- :mod:`.ballistics`: the attack/release recursion (numba; :mod:`.ballistics_triton` on CUDA)
- :mod:`.biquad`: second-order IIR sections (numba; torchaudio's ``lfilter`` elsewhere)
- :mod:`.band`: one band of dynamics, detector to output, fused on CPU
- :mod:`.split`: a whole crossover split in one pass (numba kernels generated per band count)
- :mod:`.transient`: the transient shaper, detector to output, fused on CPU
- :mod:`.gain_match`: the gain-matching loss of refinement, loss and gradient in one pass
- :mod:`.checks`: the input check (non-finite or overflowing samples) in one pass
- :mod:`.simd`: eight float64 lanes as one value in numba kernels (LLVM vector intrinsics)
- :mod:`.memory`: signal-sized buffers on huge pages, and a pool for intermediate arrays
"""

from .ballistics import ballistics, ballistics_reference
from .band import band_dynamics, band_dynamics_reference
from .biquad import biquad, biquad_reference

__all__ = ["ballistics", "ballistics_reference", "band_dynamics", "band_dynamics_reference",
           "biquad", "biquad_reference"]
