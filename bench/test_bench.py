"""pytest-benchmark suite: every op x backend x named workload (``pytest bench/ --benchmark-only``).

Backends: the seed's own functions (baseline), reference, cpu on CPU / triton on CUDA. CUDA
timings synchronise inside the timed function. Each benchmark's extra_info carries the device,
versions, threads and the workload, so saved results (--benchmark-json) stand on their own.
"""

import pytest
import torch

from .common import machine, sync
from .workloads import OPS, WORKLOADS, backends_for, cases

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = backends_for(DEVICE)
# slow combinations get fewer rounds, so that the suite runs in a few minutes on 2 CPU cores
ROUNDS = {"seed": 5, "wide": 3, "long": 2, "bigbatch": 3}
_cache: dict = {}


def _case(workload: str, op: str, backend: str):
    key = (workload, backend)
    if key not in _cache:
        _cache.clear()  # one workload's tensors at a time
        _cache[key] = cases(WORKLOADS[workload], DEVICE, [backend])
    return _cache[key][(op, backend)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_bench(benchmark, workload, op, backend):
    fn = _case(workload, op, backend)

    def timed():
        fn()
        sync(DEVICE)

    benchmark.group = f"{workload}-{op}"
    benchmark.extra_info.update(machine(), workload=WORKLOADS[workload].describe(), op=op, backend=backend,
                                device=str(DEVICE))
    benchmark.pedantic(timed, rounds=ROUNDS[workload], warmup_rounds=1)
