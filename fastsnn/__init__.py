"""fastsnn: fast training of spiking neural networks.

The time loops of the leaky integrate-and-fire (LIF) family and of the leaky readout run
as fused kernels (Triton on GPU, numba on CPU) with hand-written surrogate-gradient backward
passes; a plain autograd reference checks them. Importing fastsnn never initialises CUDA
nor imports Triton or numba.
"""

__version__ = "0.1.0"

from .ops import BACKENDS, alif, leaky_readout, leaky_readout_sum, lif, spike_matmul  # noqa: E402
from .ops import SpikeBits, delayed_projection  # noqa: E402

__all__ = ["lif", "alif", "leaky_readout", "leaky_readout_sum", "spike_matmul", "BACKENDS", "__version__"]
__all__ += ["delayed_projection", "SpikeBits"]
