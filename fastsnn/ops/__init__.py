"""The ops, one folder each: ``neurons/`` (the LIF family: ``lif``, ``alif``), ``readout/``
(``leaky_readout``, ``leaky_readout_sum``), ``spikes/`` (``spike_matmul``) and ``delays/``
(``delayed_projection``, a projection with a learnable delay per synapse).

Each folder holds the op's oracle (``reference.py``), its numba kernels (``cpu.py``), its
autograd Function, its ``torch.library`` registration and its validated public function
(``__init__.py``); its Triton kernels are ``fastsnn/kernels/<folder>.py``. What they share
(backends, argument checks, the state dtype) is :mod:`fastsnn.ops._common`, which imports
none of them. Backends: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` (see ``_common``).
"""

from ._common import BACKENDS, resolve_backend, state_dtype
from .neurons import alif, lif
from .neurons.neuron import FIRES, RESETS, SPIKES, SURROGATES, neuron
from .neurons.reference import lif_ref
from .readout import leaky_readout, leaky_readout_sum, readout_time_weights
from .readout.reference import leaky_readout_ref, leaky_readout_sum_ref
from .spikes import SpikeBits, spike_matmul
from .delays import delayed_projection
from .delays.reference import delayed_projection_ref


def cpu_kernels_cached(delays: bool = False) -> bool:
    """Whether numba's disk cache holds the CPU kernels of the spike projection and the LIF family (and
    with ``delays``, of the learnable delays): False before a machine's first run, which compiles them
    (~30 s). The LIF kernels are made per neuron variant and share one cache index: any variant counts."""
    from fastsnn.cpu.cache import is_cached, module_cached

    from .delays import cpu as delays_cpu
    from .neurons import cpu as neurons_cpu
    from .spikes import cpu as spikes_cpu

    return (module_cached(spikes_cpu) and (not delays or module_cached(delays_cpu))
            and is_cached(neurons_cpu.lif_fwd_kernel(False, 0, False))
            and is_cached(neurons_cpu.lif_bwd_kernel(False, 0, False, False)))


__all__ = ["lif", "alif", "leaky_readout", "leaky_readout_sum", "spike_matmul", "lif_ref", "leaky_readout_ref",
           "leaky_readout_sum_ref", "readout_time_weights", "resolve_backend", "state_dtype", "BACKENDS", "SPIKES", "RESETS", "SURROGATES", "FIRES", "neuron",
           "cpu_kernels_cached"]
__all__ += ["delayed_projection", "delayed_projection_ref", "SpikeBits"]
