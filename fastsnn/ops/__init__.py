"""The ops, one folder each: ``lif/`` (the LIF family: ``lif``, ``alif``), ``readout/``
(``leaky_readout``, ``leaky_readout_sum``) and ``spikes/`` (``spike_matmul``).

Each folder holds the op's oracle (``reference.py``), its numba kernels (``cpu.py``), its
autograd Function, its ``torch.library`` registration and its validated public function
(``__init__.py``); its Triton kernels are ``fastsnn/kernels/<op>.py``. What they share
(backends, argument checks, the state dtype) is :mod:`fastsnn.ops._common`, which imports
none of them. Backends: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` (see ``_common``).

``delays/``: ``delayed_projection``, a projection with a learnable delay per synapse.
"""

from ._common import BACKENDS, resolve_backend, state_dtype
from .lif import alif, lif
from .lif.reference import lif_ref
from .readout import leaky_readout, leaky_readout_sum, readout_time_weights
from .readout.reference import leaky_readout_ref, leaky_readout_sum_ref
from .spikes import spike_matmul
from .delays import delayed_projection
from .delays.reference import delayed_projection_ref

__all__ = ["lif", "alif", "leaky_readout", "leaky_readout_sum", "spike_matmul", "lif_ref", "leaky_readout_ref",
           "leaky_readout_sum_ref", "readout_time_weights", "resolve_backend", "state_dtype", "BACKENDS"]
__all__ += ["delayed_projection", "delayed_projection_ref"]
