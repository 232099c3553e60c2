"""torch.compile compatibility: networks and the LIF family trace with zero graph breaks (CPU kernels), the custom ops
(``fastsnn::lif`` with its flattened neuron, the readouts) pass opcheck, and the eager autograd Functions equal them."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TAU5, backend_device

import fastsnn
from fastsnn.experiment.config import ModelConfig, StimulusConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.ops.neurons import LIFFunction, lif_op
from fastsnn.ops.neurons.neuron import Neuron
from fastsnn.ops.readout import (LeakyReadoutFunction, LeakyReadoutSumFunction, leaky_readout_op,
                                 leaky_readout_sum_op)


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


# Members of the LIF family as the flattened op arguments (rho, time weights, *Neuron): the seed's neuron,
# its options, no gradient (save=False), time weights, and alif with each spike timing.
def lif_family_args(device):
    alpha = torch.full((6,), TAU5, device=device, requires_grad=True)
    rho = torch.full((6,), 0.9, device=device, requires_grad=True)
    ramp, ones = torch.linspace(0, 2, 9, device=device), torch.ones(9, device=device)
    return [
        ("seed", alpha, None, None, Neuron(), True),
        ("thr-beta-detach", alpha, None, None, Neuron(threshold=0.5, beta=2.0, detach_reset=True), True),
        ("inference", alpha.detach(), None, None, Neuron(), False),
        ("tw", alpha, None, ramp, Neuron(), True),
        ("tw-detach", alpha, None, ones, Neuron(threshold=0.5, beta=2.0, detach_reset=True), True),
        ("same_step-subtract-atan-ge", alpha, None, None, Neuron(same_step=True, reset=1, surrogate=1, fire_ge=True),
         True),
        ("alif-delayed-subtract", alpha, rho, None, Neuron(reset=1, adaptive=True, adapt=0.5), True),
        ("alif-same_step-subtract_next-tw", alpha, rho, ramp,
         Neuron(same_step=True, reset=2, adaptive=True, surrogate=1, detach_reset=True, adapt=1.0), True),
    ]


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_opcheck(backend):
    device = backend_device(backend)
    for name, alpha, rho, weights, neuron, save in lif_family_args(device):
        if backend == "triton" and name in ("thr-beta-detach", "tw-detach", "same_step-subtract-atan-ge",
                                            "alif-delayed-subtract"):
            continue  # the interpreter is slow; these are runtime options of kernels the others check
        h = _h(3, 9, 6, device=device)
        torch.library.opcheck(torch.ops.fastsnn.lif.default,
                              (h if save else h.detach(), alpha, rho, weights, *neuron, save, backend))
    alpha = torch.full((6,), TAU5, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fastsnn.leaky_readout.default, (_h(2, 7, 6, device=device), alpha, backend))
    torch.library.opcheck(torch.ops.fastsnn.leaky_readout_sum.default, (_h(2, 7, 6, device=device), alpha, backend))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_eager_functions_equal_the_custom_ops(backend):
    """Eagerly the ops skip the custom-op dispatcher (LIFFunction, LeakyReadout[Sum]Function): same numbers,
    same gradients as the custom ops torch.compile traces."""
    device = backend_device(backend)
    g = torch.randn(3, 9, 6, generator=torch.Generator().manual_seed(4)).to(device)
    cases = [((LIFFunction.apply, lif_op), (alpha, rho, weights, *neuron, True), [alpha, rho])
             for _, alpha, rho, weights, neuron, save in lif_family_args(device) if save]
    alpha = torch.full((6,), TAU5, device=device, requires_grad=True)
    cases += [((LeakyReadoutFunction.apply, leaky_readout_op), (alpha,), [alpha]),
              ((LeakyReadoutSumFunction.apply, leaky_readout_sum_op), (alpha,), [alpha])]
    for calls, args, params in cases:
        params = [p for p in params if p is not None]
        results = []
        for call in calls:
            h = _h(3, 9, 6, device=device)
            out = call(h, *args, backend)
            out = out[0] if isinstance(out, tuple) else out
            weight = g if out.ndim == 3 else g[:, 0]  # the sums return (B, N)
            grads = torch.autograd.grad((out * weight).sum(), (h, *params))
            results.append((out.detach(), grads))
        (out_f, grads_f), (out_o, grads_o) = results
        assert any(x.abs().sum() > 0 for x in grads_f), "the gradients must not all vanish"
        torch.testing.assert_close(out_f, out_o, rtol=0, atol=0)
        for a, b in zip(grads_f, grads_o):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


class SpikingNet(torch.nn.Module):
    """Two layers of the LIF family: same-step LIF with subtractive reset, then ALIF (CPU kernels)."""

    def __init__(self, learnt_decays: bool):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(8, 6, generator=g))
        self.w2 = torch.nn.Parameter(torch.randn(6, 4, generator=g))
        decay = torch.nn.Parameter if learnt_decays else (lambda t: float(t[0]))
        self.alpha = decay(torch.full((6,), TAU5))
        self.rho = decay(torch.full((4,), 0.9))

    def forward(self, x):
        s = fastsnn.lif(x @ self.w1, self.alpha, spike="same_step", reset="subtract", backend="cpu")
        return fastsnn.alif(s @ self.w2, TAU5, self.rho, adapt=0.5, backend="cpu").sum(1)


@pytest.mark.parametrize("learnt_decays", [False, True], ids=["float-decays", "tensor-decays"])
def test_family_traces_without_graph_breaks(learnt_decays):
    """Tensor decays too: their [0, 1] check (a host sync, Tensor.item()) stays out of the trace."""
    torch._dynamo.reset()
    model = SpikingNet(learnt_decays)
    x = torch.rand(3, 10, 8, generator=torch.Generator().manual_seed(1))
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    assert explanation.op_count >= 2  # the two custom ops are in the graph
