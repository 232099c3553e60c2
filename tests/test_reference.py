"""The reference network equals a direct transcription of the seed's equations; Dale's law."""

import math

import pytest
import torch

from fastsnn.experiment.config import ModelConfig, StimulusConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.nn import LIF, dale_signs
from fastsnn.ops.neurons.reference import lif_ref


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        out = torch.zeros_like(x)
        out[x > 0] = 1.0
        return out

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sig = 1 / (1 + torch.exp(-5 * x))
        return grad * 5 * sig * (1 - sig)


def seed_equations(x, w1, w2, tau_ms=5.0, signs=None):
    """SEMANTICS.md written out the seed's way: h[:, t] indexing, einsum, spike from the previous v."""
    if signs is not None:
        w1, w2 = w1.abs() * signs[0], w2.abs() * signs[1]
    alpha = math.exp(-1.0 / tau_ms)
    B, T, _ = x.shape
    h = torch.einsum("abc,cd->abd", x, w1)
    v = torch.zeros(B, w1.shape[1], dtype=x.dtype)
    s = torch.zeros_like(v)
    rec = [s]
    for t in range(T - 1):
        new_v = (alpha * v + h[:, t, :]) * (1 - s)
        s = _Spike.apply(v - 1)
        v = new_v
        rec.append(s)
    s_rec = torch.stack(rec, dim=1)
    h2 = torch.einsum("abc,cd->abd", s_rec, w2)
    u = torch.zeros(B, w2.shape[1], dtype=x.dtype)
    out = [u]
    for t in range(T - 1):
        u = alpha * u + h2[:, t, :]
        out.append(u)
    return torch.stack(out, dim=1).sum(1)


@pytest.mark.parametrize("dales_law", [False, True])
@pytest.mark.parametrize("tau_ms", [5.0, 12.0])
def test_reference_network_matches_the_seed_equations(dales_law, tau_ms):
    stim = StimulusConfig(anf_per_ear=20, steps=40)
    model = IPDNetwork(stim, ModelConfig(hidden=9, tau_ms=tau_ms, dales_law=dales_law, backend="reference"),
                       torch.Generator().manual_seed(0))
    with torch.no_grad():  # scale up so that the hidden layer spikes a fair amount
        model.hidden.weight.mul_(4)
    x = (torch.rand(5, 40, 40, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    scores = model(x)
    scores.square().sum().backward()
    grads = [model.hidden.weight.grad.clone(), model.readout.weight.grad.clone()]

    w1 = model.hidden.weight.detach().clone().requires_grad_()
    w2 = model.readout.weight.detach().clone().requires_grad_()
    signs = (model.hidden.sign, model.readout.sign) if dales_law else None
    expected = seed_equations(x, w1, w2, tau_ms, signs)
    expected.square().sum().backward()

    spikes = model.hidden(x)
    assert 0.02 < spikes.mean() < 0.5, "the test input must make the hidden layer spike"
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], w1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], w2.grad, rtol=1e-4, atol=1e-6)


def test_lif_ref_double_spike_pattern():
    # constant drive 0.6, alpha = 0.819: v = 0, .6, 1.09, 1.49, 0, 0, .6, 1.09, 1.49, 0, 0, .6;
    # s_{t+1} = H(v_t - 1): each crossing gives two spikes, and the reset holds v at 0 for two steps
    s = lif_ref(torch.full((1, 12, 1), 0.6), math.exp(-1 / 5))[0, :, 0]
    assert s.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0]


def test_lif_ref_ignores_the_last_input_step():
    h = torch.randn(2, 7, 3)
    h2 = h.clone()
    h2[:, -1] += 100
    assert torch.equal(lif_ref(h, 0.8), lif_ref(h2, 0.8))


@pytest.mark.parametrize("rows,cols,ratio,inhibitory", [(200, 30, 0.5, 100), (30, 12, 0.5, 15), (10, 3, 0.25, 3),
                                                         (7, 2, 0.0, 0), (7, 2, 1.0, 7)])
def test_dale_signs_contiguous(rows, cols, ratio, inhibitory):
    signs = dale_signs(rows, cols, ratio)
    assert signs.shape == (rows, cols)
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    row_signs = signs[:, 0]
    assert (signs == row_signs[:, None]).all(), "a whole row (one presynaptic neuron) shares a sign"
    assert (row_signs[:inhibitory] == -1).all() and (row_signs[inhibitory:] == 1).all()


def test_dale_signs_random_mask():
    signs = dale_signs(50, 4, 0.3, "random", torch.Generator().manual_seed(0))
    inhibitory = (signs[:, 0] == -1).nonzero().flatten()
    assert len(inhibitory) == 15 and not torch.equal(inhibitory, torch.arange(15))
    assert (signs == signs[:, :1]).all()


def test_dales_law_weights_keep_their_signs():
    layer = LIF(20, 6, dales_law=True, ie_ratio=0.25, backend="reference")
    w = layer.effective_weight()
    assert (w[:5] <= 0).all() and (w[5:] >= 0).all()
    x = torch.rand(3, 10, 20)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.shape == (20, 6)


def test_seed_initialisation_scale():
    layer = LIF(200, 30, backend="reference")
    bound = 1 / math.sqrt(30)  # fan_in of an (in, out) matrix is its width
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound


def test_kaiming_initialisation_is_torchs():
    """weight_init="kaiming": the bound of torch's kaiming_uniform_(nonlinearity="relu") on the (out, in, 1)
    weight of dcls's Dcls1d, as the DCLS notebook draws both layers' weights."""
    for inputs, outputs in ((200, 30), (30, 12)):
        layer = LIF(inputs, outputs, weight_init="kaiming", generator=torch.Generator().manual_seed(0))
        dcls_shaped = torch.empty(outputs, inputs, 1)
        fan_in = torch.nn.init._calculate_correct_fan(dcls_shaped, "fan_in")
        bound = math.sqrt(3) * torch.nn.init.calculate_gain("relu") / math.sqrt(fan_in)
        assert bound == pytest.approx(math.sqrt(6 / inputs))
        assert 0.95 * bound < layer.weight.abs().max() <= bound
    assert torch.equal(LIF(20, 5, generator=torch.Generator().manual_seed(0)).weight,
                       LIF(20, 5, weight_init="seed", generator=torch.Generator().manual_seed(0)).weight)
    with pytest.raises(ValueError, match="weight_init must be one of seed, kaiming, got 'xavier'"):
        LIF(4, 3, weight_init="xavier")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("dales_law,learn_tau", [(False, False), (True, True)])
def test_fast_network_matches_the_reference_network(backend, dales_law, learn_tau):
    stim = StimulusConfig(anf_per_ear=12, steps=30)
    nets = {}
    for b in ("reference", backend):
        nets[b] = IPDNetwork(stim, ModelConfig(hidden=7, backend=b, dales_law=dales_law, learn_tau=learn_tau),
                             torch.Generator().manual_seed(0))
        with torch.no_grad():
            nets[b].hidden.weight.mul_(4)
    x = (torch.rand(6, 30, 24, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    y = torch.tensor([0, 1, 5, 7, 11, 3])
    out = {}
    for b, net in nets.items():
        loss = torch.nn.functional.cross_entropy(net(x) * 0.01, y)
        out[b] = (net(x), torch.autograd.grad(loss, list(net.parameters())))
    torch.testing.assert_close(out[backend][0], out["reference"][0], rtol=1e-5, atol=1e-5)
    for g_fast, g_ref in zip(out[backend][1], out["reference"][1]):
        assert ((g_fast - g_ref).norm() / g_ref.norm()).item() < 1e-5


def test_network_trains_after_an_inference_mode_call():
    """The readout's cached time weights must not be inference tensors, or a later backward fails."""
    net = IPDNetwork(StimulusConfig(anf_per_ear=3, steps=11), ModelConfig(hidden=4, backend="cpu"),
                     torch.Generator().manual_seed(0))
    x = (torch.rand(2, 11, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with torch.inference_mode():
        expected = net(x)
    out = net(x)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected)
    assert net.readout.weight.grad is not None
