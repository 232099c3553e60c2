"""fastsnn: fast training of spiking neural networks.

The time loops of the leaky integrate-and-fire (LIF) layer and of the leaky
readout run as fused kernels (Triton on GPU, numba on CPU) with hand-written
surrogate-gradient backward passes; a plain autograd reference checks them.
Importing fastsnn never initialises CUDA nor imports Triton.
"""

__version__ = "0.1.0"

from .ops import BACKENDS, leaky_readout, leaky_readout_sum, lif, lif_sum  # noqa: E402

__all__ = ["lif", "lif_sum", "leaky_readout", "leaky_readout_sum", "BACKENDS", "__version__"]
