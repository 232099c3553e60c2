"""What every op shares through ``fastsnn/ops/_common.py``: which devices ``backend="auto"`` serves, and the
autograd contract of the fast backends (first derivatives only, said clearly)."""

import pytest
import torch
from conftest import FAST, backend_device

import fastsnn

GEN = torch.Generator().manual_seed(0)
H = torch.randn(2, 5, 3, generator=GEN)
X = (torch.rand(2, 5, 3, generator=GEN) < 0.4).float()
W, D = torch.randn(3, 4, generator=GEN), torch.rand(3, 4, generator=GEN) * 3
OPS = {  # name -> (inputs, call(inputs, backend))
    "lif": ((H, torch.full((3,), 0.8)), lambda t, b: fastsnn.lif(t[0], t[1], backend=b)),
    "leaky_readout": ((H, torch.full((3,), 0.8)), lambda t, b: fastsnn.leaky_readout(t[0], t[1], backend=b)),
    "leaky_readout_sum": ((H, torch.full((3,), 0.8)), lambda t, b: fastsnn.leaky_readout_sum(t[0], t[1], backend=b)),
    "spike_matmul": ((X, W), lambda t, b: fastsnn.spike_matmul(t[0], t[1], backend=b)),
    "delayed_projection": ((X, W, D), lambda t, b: fastsnn.delayed_projection(t[0], t[1], t[2], 1.0, max_delay=3,
                                                                               backend=b)),
}


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("op", OPS)
def test_second_derivatives_are_a_clear_error(op, backend):
    """Differentiating a fast backward's gradient failed with autograd's "element 0 of tensors does not require
    grad"; the first derivatives under create_graph=True stay those of a plain backward."""
    inputs, call = OPS[op]
    leaves = [t.to(backend_device(backend)).requires_grad_() for t in inputs]
    plain = torch.autograd.grad(call(leaves, backend).square().sum(), leaves)
    grads = torch.autograd.grad(call(leaves, backend).square().sum(), leaves, create_graph=True)
    for a, b in zip(grads, plain):
        assert torch.equal(a.detach(), b)
    with pytest.raises(RuntimeError, match=rf"^fastsnn.{op}: the 'cpu' and 'triton' backends compute first "
                                           r"derivatives only \(a fused backward kernel\); for second derivatives use "
                                           r"backend='reference'$"):
        sum(g.sum() for g in grads).backward()


@pytest.mark.parametrize("op", OPS)
def test_auto_on_a_device_without_kernels_says_so(op):
    """backend="auto" on meta tensors blamed backend 'cpu', which the caller never chose."""
    inputs, call = OPS[op]
    with pytest.raises(ValueError, match=r"^backend 'auto' has no kernels for tensors on meta: the fast backends "
                                         r"take CPU \('cpu'\) and CUDA \('triton'\) tensors; use backend 'reference'$"):
        call([t.to("meta") for t in inputs], "auto")
