"""torch.compile compatibility: the custom ops trace with zero graph breaks and pass opcheck (CPU)."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import backend_device

from fastsnn.config import ModelConfig, StimulusConfig
from fastsnn.model import IPDNetwork

TAU5 = math.exp(-1 / 5)


def network(backend="cpu", learn_tau=False):
    stim = StimulusConfig(anf_per_ear=6, steps=25)
    model = IPDNetwork(stim, ModelConfig(hidden=5, backend=backend, learn_tau=learn_tau),
                       torch.Generator().manual_seed(0))
    x = (torch.rand(4, 25, 12, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    return model, x, torch.tensor([0, 3, 7, 11])


def test_network_traces_without_graph_breaks():
    model, x, _ = network()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("learn_tau", [False, True])
def test_compiled_training_step_matches_eager(learn_tau):
    torch._dynamo.reset()
    model, x, y = network(learn_tau=learn_tau)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    losses, grads = [], []
    for fn in (model, compiled):
        model.zero_grad()
        loss = F.cross_entropy(fn(x) * 0.01, y)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for eager, comp in zip(*grads):
        torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-7)


def _h(*shape, device="cpu"):
    h = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.3
    return h.to(device).requires_grad_()


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_opcheck(backend):
    device = backend_device(backend)
    alpha = torch.full((6,), TAU5, device=device, requires_grad=True)
    ramp, ones = torch.linspace(0, 2, 9, device=device), torch.ones(9, device=device)
    for op, args in [
        (torch.ops.fastsnn.lif.default, (_h(3, 9, 6, device=device), alpha, 1.0, 5.0, False, True, backend)),
        (torch.ops.fastsnn.lif.default, (_h(3, 9, 6, device=device), alpha, 0.5, 2.0, True, True, backend)),
        (torch.ops.fastsnn.lif.default, (_h(3, 9, 6, device=device).detach(), alpha.detach(), 1.0, 5.0, False, False,
                                         backend)),
        (torch.ops.fastsnn.lif_sum.default, (_h(3, 9, 6, device=device), alpha, ramp, 1.0, 5.0, False, True, backend)),
        (torch.ops.fastsnn.lif_sum.default, (_h(3, 9, 6, device=device), alpha, ones, 0.5, 2.0, True, True, backend)),
        (torch.ops.fastsnn.leaky_readout.default, (_h(2, 7, 6, device=device), alpha, backend)),
        (torch.ops.fastsnn.leaky_readout_sum.default, (_h(2, 7, 6, device=device), alpha, backend)),
    ]:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_eager_functions_equal_the_custom_ops(backend):
    """Eagerly the ops skip the custom-op dispatcher (fastsnn.ops.registry): same numbers, same gradients."""
    from fastsnn.ops import registry

    device = backend_device(backend)
    alpha = torch.full((6,), TAU5, device=device, requires_grad=True)
    g = torch.randn(3, 9, 6, generator=torch.Generator().manual_seed(4)).to(device)
    weights = torch.linspace(0, 2, 9, device=device)
    for entry, args in [(registry.lif, (1.0, 5.0, False, True)), (registry.lif, (0.5, 2.0, True, True)),
                        (registry.lif_sum, (weights, 1.0, 5.0, False, True)),
                        (registry.leaky_readout, ()), (registry.leaky_readout_sum, ())]:
        results = []
        for call in (entry.function.apply, entry.op):
            h = _h(3, 9, 6, device=device)
            out = call(h, alpha, *args, backend)
            out = out[0] if isinstance(out, tuple) else out
            weight = g if out.ndim == 3 else g[:, 0]  # the sums return (B, N)
            grads = torch.autograd.grad((out * weight).sum(), (h, alpha))
            results.append((out.detach(), grads))
        (out_f, grads_f), (out_o, grads_o) = results
        torch.testing.assert_close(out_f, out_o, rtol=0, atol=0)
        for a, b in zip(grads_f, grads_o):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
