"""fastsnn.delayed_projection (learnable synaptic delays): every backend against the reference, values and
every gradient, on awkward shapes; the reference against the published implementation (dcls's Dcls1d,
Gaussian version); the custom op under torch.compile; one-line errors; the layer, the schedule, the
training loop and a tiny CLI run."""

import io
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, backend_device
from test_reference import _Spike

import fastsnn
from fastsnn.experiment.cli import main
from fastsnn.experiment.config import ModelConfig, RunConfig, StimulusConfig, TrainConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.nn import LIF, LeakyReadout, anneal_delays, clamp_delays_, delay_param_groups, delay_sigma
from fastsnn.ops.readout.reference import leaky_readout_sum_ref
from fastsnn.ops.delays import DelayedProjectionFunction, delayed_projection_op
from fastsnn.ops.delays.reference import NORM_EPS, delay_taps, delayed_projection_ref

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FAST = ["cpu"] + (["triton"] if _INTERPRET or torch.cuda.is_available() else [])
# (B, T, I, O, max_delay): single elements, T shorter than the kernel, no delay at all, odd sizes past a tile
SHAPES = [(1, 1, 1, 1, 0), (1, 1, 1, 1, 3), (3, 17, 11, 5, 6), (2, 5, 20, 3, 9), (4, 63, 37, 13, 25),
          (2, 30, 70, 33, 4)]
SIGMAS = [pytest.param(2.0, id="sigma2"), pytest.param(0.35, id="sigma0.35"), pytest.param(None, id="rounded")]


def shape_id(shape):
    return "B{}-T{}-I{}-O{}-D{}".format(*shape)


def problem(B, T, I, O, max_delay, spikes=True, dtype=torch.float32, device="cpu", seed=0):
    """x (0/1 spikes at 25%, or signed reals with zeros), weight and delays in [0, max_delay] (a few exactly on
    taps and at half steps), all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    if spikes:
        x = (torch.rand(B, T, I, generator=g) < 0.25).double()
    else:
        x = torch.randn(B, T, I, generator=g, dtype=torch.float64) * (torch.rand(B, T, I, generator=g) < 0.6)
    w = torch.randn(I, O, generator=g, dtype=torch.float64) / math.sqrt(I)
    d = torch.rand(I, O, generator=g, dtype=torch.float64) * max_delay
    d.view(-1)[::7] = d.view(-1)[::7].round()  # on a tap: (k - D) = 0 exactly
    d.view(-1)[3::11] = d.view(-1)[3::11].floor() + 0.5  # half steps: round half to even when rounded
    d.clamp_(0, max_delay)
    return [t.to(device, dtype).requires_grad_() for t in (x, w, d)]


def run(backend, x, w, d, sigma, max_delay, grad_seed=1):
    h = fastsnn.delayed_projection(x, w, d, sigma, max_delay=max_delay, backend=backend)
    g = torch.randn(h.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    grads = torch.autograd.grad(h, (x, w, d), g.to(h.device, h.dtype))
    return [t.detach().cpu() for t in (h, *grads)]


def on_cpu(*tensors, dtype=None):
    return [t.detach().cpu().to(dtype or t.dtype).requires_grad_() for t in tensors]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("spikes", [True, False], ids=["spikes", "reals"])
def test_delayed_projection_matches_reference(backend, sigma, shape, spikes):
    device = backend_device(backend)
    max_delay = shape[-1]
    x, w, d = problem(*shape, spikes=spikes, device=device)
    got = run(backend, x, w, d, sigma, max_delay)
    expected = run("reference", *on_cpu(x, w, d), sigma, max_delay)
    for name, a, e in zip(("h", "dx", "dweight", "ddelay"), got, expected):
        scale = e.abs().max().item() + 1e-30
        assert_close(f"{name} ({backend})", a, e, rtol=1e-5, atol=2e-6 * scale)
    if sigma is None:
        assert (got[3] == 0).all(), "rounded delays have a zero gradient"


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(2, 0, 3, 4), (2, 5, 0, 4), (2, 5, 3, 0), (0, 5, 3, 4)],
                         ids=lambda s: "B{}-T{}-I{}-O{}".format(*s))
@pytest.mark.parametrize("spikes", [True, False], ids=["spikes", "reals"])
def test_empty_shapes_match_the_reference(backend, shape, spikes):
    """The CPU backward crashed at T, I or O = 0 (and its dense forward at O = 0); the others give zeros."""
    x, w, d = problem(*shape, 3, spikes=spikes, device=backend_device(backend))
    got, expected = run(backend, x, w, d, 1.0, 3), run("reference", *on_cpu(x, w, d), 1.0, 3)
    for name, a, e in zip(("h", "dx", "dweight", "ddelay"), got, expected):
        assert a.shape == e.shape and torch.equal(a, e.to(a.dtype)), name


def test_both_cpu_forwards_are_exercised():
    """The CPU forward is event-driven for sparse inputs and conv1d for dense ones: the spikes and the reals
    of the comparison above take one path each."""
    from fastsnn.ops.delays.cpu import dense_input

    assert not dense_input(problem(4, 63, 37, 13, 25)[0]) and dense_input(problem(4, 63, 37, 13, 25, spikes=False)[0])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_delayed_projection_other_dtypes(backend, dtype):
    """float64: to 1e-12 of the float64 reference (CPU kernels only); 16-bit x: the float32 reference on the
    upcast input, within one rounding of h to 16 bits."""
    if dtype == torch.float64 and backend == "triton":
        pytest.skip("the Triton kernels take float32, bfloat16 and float16")
    device = backend_device(backend)
    x, w, d = problem(3, 20, 9, 6, 7, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    x = x.detach().to(dtype).requires_grad_()
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    got = run(backend, x, w, d, 1.5, 7)
    expected = run("reference", *on_cpu(x, w, d, dtype=ref_dtype), 1.5, 7)
    tol = 1e-12 if dtype == torch.float64 else {torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    assert got[0].dtype == dtype and got[1].dtype == dtype
    for name, a, e in zip(("h", "dx", "dweight", "ddelay"), got, expected):
        rel = ((a.double() - e.double()).norm() / e.double().norm()).item()
        assert rel < tol, f"{name}: relative error {rel:.2e} >= {tol}"


@pytest.mark.parametrize("backend", FAST)
def test_only_the_requested_gradients(backend):
    """x without a gradient (the network's input) and the delays frozen: the weight's gradient is unchanged."""
    device = backend_device(backend)
    x, w, d = problem(2, 12, 8, 4, 5, device=device)
    h = fastsnn.delayed_projection(x.detach(), w, d.detach(), 1.0, max_delay=5, backend=backend)
    (dw,) = torch.autograd.grad(h.sum(), (w,))
    w_ref = w.detach().cpu().requires_grad_()
    h_ref = delayed_projection_ref(x.detach().cpu(), w_ref, d.detach().cpu(), 1.0, 5)
    (dw_ref,) = torch.autograd.grad(h_ref.sum(), (w_ref,))
    assert_close("dweight", dw.cpu(), dw_ref, rtol=1e-5, atol=1e-6)


def test_delay_taps_are_normalised_gaussians_and_one_hots():
    d = torch.tensor([[0.0, 2.5, 3.5, 5.0, 7.2, -3.0, 9.0]], dtype=torch.float64)
    taps = delay_taps(d, 1.3, 5)
    k = torch.arange(6, dtype=torch.float64)
    e = torch.exp(-((k - d[..., None]) ** 2) / (2 * 1.3 ** 2))
    torch.testing.assert_close(taps, e / (e.sum(-1, keepdim=True) + NORM_EPS))
    assert torch.allclose(taps.sum(-1), torch.ones(1, 7, dtype=torch.float64), atol=1e-6)
    rounded = delay_taps(d, None, 5)
    assert rounded.argmax(-1).tolist() == [[0, 2, 4, 5, 5, 0, 5]]  # half to even, clamped into [0, 5]
    assert (rounded.sum(-1) == 1).all()
    nan = delay_taps(torch.tensor([[float("nan"), 1.0]]), None, 3)
    assert nan[0, 0].isnan().all() and nan[0, 1].tolist() == [0, 1, 0, 0]


# --- against the published implementation ---------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("max_delay", [6, 9, 25])
def test_matches_dcls(backend, max_delay):
    """dcls's Dcls1d(version="gauss", kernel_count=1) on the input padded by max_delay steps on the left, for
    the same parameters: weight[j, i, 0] = W_ij, SIG = sigma - 0.27, and the position P (its taps run the
    other way, centred on K // 2) with P + K // 2 = max_delay - D. Forward and the gradients for x, W and D."""
    pytest.importorskip("DCLS", reason="the dcls package is not installed (pip install dcls)")
    from DCLS.construct.modules import Dcls1d

    device = backend_device(backend)
    B, T, I, O, sigma = 4, 40, 13, 7, 2.3
    K = max_delay + 1
    x, w, d = problem(B, T, I, O, max_delay, device=device)
    layer = Dcls1d(I, O, kernel_count=1, dilated_kernel_size=K, bias=False, version="gauss").to(device)
    with torch.no_grad():
        layer.weight.copy_(w.t()[..., None])
        layer.P.copy_((max_delay - d - K // 2).t()[None, ..., None])
        layer.SIG.fill_(sigma - 0.27)
    x_dcls = x.detach().clone().requires_grad_()
    out = layer(F.pad(x_dcls.transpose(1, 2), (max_delay, 0))).transpose(1, 2)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(device)
    dx_dcls, dw_dcls, dp_dcls = torch.autograd.grad(out, (x_dcls, layer.weight, layer.P), g)
    h = fastsnn.delayed_projection(x, w, d, sigma, max_delay=max_delay, backend=backend)
    dx, dw, dd = torch.autograd.grad(h, (x, w, d), g)
    for name, a, e in [("h", h, out), ("dx", dx, dx_dcls), ("dweight", dw, dw_dcls[..., 0].t()),
                       ("ddelay", dd, -dp_dcls[0, ..., 0].t())]:
        assert_close(f"{name} vs dcls", a.detach().cpu(), e.detach().cpu(), rtol=1e-5, atol=1e-5)


def _dcls_projection(x, weight, delay, max_delay, sigma):
    """dcls's Dcls1d on x (B, T, I) padded by max_delay steps on the left, for the weight and delay (I, O) as in
    :func:`test_matches_dcls`: (h (B, T, O), layer). ``sigma=None``: the community notebook's evaluation, dcls's
    "max" version with the positions rounded and SIG 0 (a one-hot kernel)."""
    from DCLS.construct.modules import Dcls1d

    K = max_delay + 1
    layer = Dcls1d(weight.shape[0], weight.shape[1], kernel_count=1, dilated_kernel_size=K, bias=False,
                   version="gauss" if sigma is not None else "max")
    with torch.no_grad():
        layer.weight.copy_(weight.detach().t()[..., None])
        position = (max_delay - delay.detach() - K // 2).t()[None, ..., None]
        layer.P.copy_(position if sigma is not None else position.round())
        layer.SIG.fill_(sigma - 0.27 if sigma is not None else 0.0)
    return layer(F.pad(x.transpose(1, 2), (max_delay, 0))).transpose(1, 2), layer


def _dcls_network(x, model, sigmas):
    """The community notebook's network (Quick_Start_Delay_DCLS): dcls delays on both projections, the seed's
    LIF and leaky readout loops, scores = sum over time. Returns (scores, [(layer, its dcls projection)])."""
    layers = []
    alpha = math.exp(-1 / 5)

    def project(inp, fast_layer, sigma):
        h, layer = _dcls_projection(inp, fast_layer.weight, fast_layer.delay, fast_layer.max_delay, sigma)
        layers.append(layer)
        return h

    h = project(x, model.hidden, sigmas[0])
    v = h.new_zeros(h.shape[0], h.shape[2])
    s = torch.zeros_like(v)
    spikes = [s]
    for t in range(x.shape[1] - 1):
        v, s = (alpha * v + h[:, t]) * (1 - s), _Spike.apply(v - 1)
        spikes.append(s)
    h2 = project(torch.stack(spikes, 1), model.readout, sigmas[1])
    u = h2.new_zeros(h2.shape[0], h2.shape[2])
    total = u
    for t in range(x.shape[1] - 1):
        u = alpha * u + h2[:, t]
        total = total + u
    return total, layers


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_network_with_delays_on_both_projections_matches_dcls(backend, mode):
    """IPDNetwork with --max-delay and --readout-max-delay against the notebook's network built on dcls: the
    scores and the gradients for both layers' weights and delays (training: Gaussian kernels, each layer its
    own width; evaluation: rounded delays, as the notebook's "max" version with rounded positions)."""
    pytest.importorskip("DCLS", reason="the dcls package is not installed (pip install dcls)")
    device = backend_device(backend)
    stim = StimulusConfig(anf_per_ear=9, steps=30)
    model = IPDNetwork(stim, ModelConfig(hidden=7, max_delay=6, readout_max_delay=4, backend=backend),
                       torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a fair amount of hidden spikes; no delay on a half step (the two roundings differ there)
        model.hidden.weight.mul_(3)
        for layer in (model.hidden, model.readout):
            shifted = layer.delay + 0.25 * torch.rand(layer.delay.shape, generator=g)
            layer.delay.copy_(shifted.clamp(0, layer.max_delay))
            layer.delay[(layer.delay - layer.delay.floor() - 0.5).abs() < 0.05] += 0.1
    model.hidden.sigma, model.readout.sigma = 1.7, 0.9
    model.to(device).train(mode == "train")
    x = (torch.rand(5, 30, 18, generator=g) < 0.3).float().to(device)
    weights = torch.randn(5, stim.num_classes, generator=g).to(device)
    params = [model.hidden.weight, model.hidden.delay, model.readout.weight, model.readout.delay]
    scores = model(x)
    grads = torch.autograd.grad((scores * weights).sum(), params)

    expected, layers = _dcls_network(x.cpu(), model.cpu(), (1.7, 0.9) if mode == "train" else (None, None))
    (expected * weights.cpu()).sum().backward()
    hidden_spikes = model.hidden(x.cpu())
    assert 0.05 < hidden_spikes.mean() < 0.5, "the test input must make the hidden layer spike"
    assert_close("scores", scores.detach().cpu(), expected.detach(), rtol=1e-5, atol=1e-5)
    dcls_grads = [layers[0].weight.grad[..., 0].t(), -layers[0].P.grad[0, ..., 0].t(),
                  layers[1].weight.grad[..., 0].t(), -layers[1].P.grad[0, ..., 0].t()]
    for name, a, e in zip(("dW1", "dD1", "dW2", "dD2"), grads, dcls_grads):
        if mode == "eval" and name.startswith("dD"):
            assert (a == 0).all(), "rounded delays have a zero gradient"
            continue
        assert_close(f"{name} vs dcls", a.cpu(), e, rtol=1e-4, atol=1e-5 * e.abs().max().item())


def test_readout_layer_with_delays():
    """LeakyReadout(max_delay=M): the delayed projection, then the leaky integrator; no time-contracted shortcut."""
    layer = LeakyReadout(8, 3, max_delay=5, backend="cpu", generator=torch.Generator().manual_seed(0))
    assert layer.delay.shape == (8, 3) and layer.time_weights(20, torch.float32, torch.device("cpu")) is None
    x = (torch.rand(4, 20, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    h = delayed_projection_ref(x, layer.weight, layer.delay, layer.sigma, 5)
    torch.testing.assert_close(layer.project(x), h)
    torch.testing.assert_close(layer.time_sum(x), leaky_readout_sum_ref(h, layer.alpha()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x).sum(1), layer.time_sum(x), rtol=1e-5, atol=1e-5)


def test_each_projection_has_its_own_delays():
    stim = StimulusConfig(anf_per_ear=3)
    both = IPDNetwork(stim, ModelConfig(hidden=4, max_delay=6, readout_max_delay=3))
    assert (both.hidden.max_delay, both.readout.max_delay) == (6, 3)
    assert both.readout.delay.shape == both.readout.weight.shape
    only_readout = IPDNetwork(stim, ModelConfig(hidden=4, readout_max_delay=3))
    assert only_readout.hidden.delay is None and only_readout.readout.delay is not None
    # the spiking readout used to take the hidden layer's --max-delay; it takes --readout-max-delay now
    spiking = IPDNetwork(stim, ModelConfig(hidden=4, max_delay=6, readout="spiking"))
    assert spiking.hidden.max_delay == 6 and spiking.readout.delay is None


def test_delays_drawn_at_the_centre_as_dcls_draws_them():
    """delay_init="centre": dcls's positions N(0, 0.5^2) around the kernel's centre, as delays: N(M // 2, 0.25)."""
    layer = LIF(100, 50, max_delay=30, delay_init="centre", generator=torch.Generator().manual_seed(0))
    d = layer.delay.detach()
    assert abs(d.mean().item() - 15) < 0.02 and abs(d.std().item() - 0.5) < 0.02
    assert 0 <= d.min() and d.max() <= 30
    small = LIF(200, 30, max_delay=1, delay_init="centre", generator=torch.Generator().manual_seed(0)).delay
    assert 0 <= small.min() and small.max() <= 1 and (small == 0).any()  # N(0, 0.25) clipped at 0
    plain = LIF(7, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(LIF(7, 4, max_delay=3, delay_init="centre", generator=torch.Generator().manual_seed(0)).weight,
                       plain.weight)
    with pytest.raises(ValueError, match="delay_init must be one of uniform, centre, got 'middle'"):
        LIF(4, 3, max_delay=2, delay_init="middle")


# --- torch.compile --------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    device = backend_device(backend)
    x, w, d = problem(2, 9, 6, 5, 4, device=device)
    for sigma in (1.2, None):
        torch.library.opcheck(delayed_projection_op, (x, w, d, sigma, 4, backend))
        torch.library.opcheck(delayed_projection_op, (x.detach(), w, d, sigma, 4, backend))


def test_eager_function_equals_the_custom_op():
    x, w, d = problem(2, 9, 6, 5, 4)
    results = []
    for call in (DelayedProjectionFunction.apply, delayed_projection_op):
        h = call(x, w, d, 1.2, 4, "cpu")
        results.append((h.detach(), torch.autograd.grad(h.sum(), (x, w, d))))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_network_with_delays_compiles_without_graph_breaks():
    stim = StimulusConfig(anf_per_ear=6, steps=25)
    model = IPDNetwork(stim, ModelConfig(hidden=5, backend="cpu", max_delay=4), torch.Generator().manual_seed(0))
    x = (torch.rand(4, 25, 12, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    y = torch.tensor([0, 3, 7, 11])
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (model, compiled):
        loss = F.cross_entropy(fn(x) * 0.01, y)
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for eager, comp in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-7)


# --- errors ---------------------------------------------------------------------------------------------

def _bad(kind, message, **changes):
    return pytest.param(changes, kind, message, id=next(iter(changes)) + "-" + message.split()[0])


@pytest.mark.parametrize("changes,kind,message", [
    _bad(ValueError, r"x must be a tensor of shape \(B, T, in_features\), got \(4, 6\)", x=torch.zeros(4, 6)),
    _bad(TypeError, "x must be float32, float64, bfloat16 or float16, got torch.int64",
         x=torch.zeros(2, 4, 6, dtype=torch.long)),
    _bad(ValueError, r"weight must be a tensor of shape \(in_features, out_features\) = \(6, O\)",
         weight=torch.zeros(5, 3)),
    _bad(ValueError, r"delay must be a tensor of the weight's shape \(6, 3\), got \(3, 6\)", delay=torch.zeros(3, 6)),
    _bad(TypeError, "delay must be a floating-point tensor, got torch.int64",
         delay=torch.zeros(6, 3, dtype=torch.long)),
    _bad(ValueError, "sigma must be > 0.0, got 0", sigma=0),
    _bad(ValueError, "sigma must be a finite number, got nan", sigma=float("nan")),
    _bad(ValueError, "sigma must be a finite number, got inf", sigma=math.inf),
    _bad(ValueError, r"max_delay must be an integer >= 0 \(steps\), got -1", max_delay=-1),
    _bad(ValueError, r"max_delay must be an integer >= 0 \(steps\), got 2.5", max_delay=2.5),
    _bad(ValueError, r"max_delay must be an integer >= 0 \(steps\), got True", max_delay=True),
    _bad(ValueError, "backend must be one of auto, reference, cpu, triton, got 'gpu'", backend="gpu"),
])
def test_bad_arguments_fail_in_one_line(changes, kind, message):
    args = dict(x=torch.zeros(2, 4, 6), weight=torch.zeros(6, 3), delay=torch.zeros(6, 3), sigma=1.0, max_delay=3,
                backend="cpu")
    args.update(changes)
    with pytest.raises(kind, match=message) as err:
        fastsnn.delayed_projection(args.pop("x"), args.pop("weight"), args.pop("delay"), args.pop("sigma"), **args)
    assert "\n" not in str(err.value)


def test_triton_launchers_refuse_rows_past_32_bit_offsets():
    from fastsnn.kernels.delays import delays_fwd

    x = torch.zeros(1, 1, 1).expand(1, 2**16, 2**15)  # T x inputs = 2**31: no memory behind it
    with pytest.raises(ValueError, match=r"T x inputs, T x outputs and inputs x taps x outputs below 2\*\*31"):
        delays_fwd(x, torch.zeros(1, 1, 1).expand(2**15, 3, 1))


def test_layer_rejects_a_bad_max_delay():
    with pytest.raises(ValueError, match=r"max_delay must be an integer >= 0 \(steps; 0: no delays\), got -2"):
        LIF(4, 3, max_delay=-2)


# --- layer, schedule, training ---------------------------------------------------------------------------

def test_schedule_is_the_published_one():
    """dcls's SIG from max_delay / 2 to 0.23 exponentially over the annealing epochs; the width is SIG + 0.27."""
    assert delay_sigma(25, 0, 20) == pytest.approx(12.5 + 0.27)
    assert delay_sigma(25, 10, 20) == pytest.approx(math.sqrt(12.5 * 0.23) + 0.27)
    assert delay_sigma(25, 20, 20) == pytest.approx(0.5) == delay_sigma(25, 70, 20)
    assert delay_sigma(25, 5, 20) < delay_sigma(25, 4, 20)


def test_schedule_with_the_notebooks_widths():
    """The community notebook (Quick_Start_Delay_DCLS) multiplies SIG, first max_delay // 2 = 15 for its 31 taps,
    by (0.23 / 15)^(1/37) after each of the first 37 epochs: max_delay 30 (31 taps) and 37 annealing epochs give
    its widths, the default start included; --sigma-start / --sigma-end move the ends."""
    sig, factor = 15.0, (0.23 / 15) ** (1 / 37)
    for epoch in range(60):
        assert delay_sigma(30, epoch, 37) == pytest.approx(sig + 0.27, rel=1e-12)
        assert delay_sigma(30, epoch, 37, start=15, end=0.23) == pytest.approx(sig + 0.27, rel=1e-12)
        if epoch < 37 and sig > 0.23:
            sig *= factor
    assert delay_sigma(30, 0, 10, start=4.0, end=1.0) == pytest.approx(4.27)
    assert delay_sigma(30, 5, 10, start=4.0, end=1.0) == pytest.approx(2.27)
    assert delay_sigma(30, 12, 10, start=4.0, end=1.0) == pytest.approx(1.27)
    with pytest.raises(ValueError, match="the delay kernels' end width must be a finite number > 0"):
        delay_sigma(30, 0, 10, end=0.0)


def test_layer_uses_gaussians_in_training_and_rounds_in_eval():
    layer = LIF(7, 4, max_delay=5, backend="cpu", generator=torch.Generator().manual_seed(0))
    assert layer.delay.shape == (7, 4) and 0 <= layer.delay.min() and layer.delay.max() <= 5
    assert layer.sigma == pytest.approx(delay_sigma(5, 0, 1))
    x = (torch.rand(2, 11, 7, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    anneal_delays(layer, 3, 10)
    assert layer.sigma == delay_sigma(5, 3, 10)
    expected_train = delayed_projection_ref(x, layer.weight, layer.delay, layer.sigma, 5)
    torch.testing.assert_close(layer.project(x), expected_train)
    layer.eval()
    torch.testing.assert_close(layer.project(x), delayed_projection_ref(x, layer.weight, layer.delay, None, 5))


def test_layer_without_delays_draws_what_it_always_drew():
    a = LIF(7, 4, generator=torch.Generator().manual_seed(0))
    b = LIF(7, 4, max_delay=3, generator=torch.Generator().manual_seed(0))
    assert a.delay is None and torch.equal(a.weight, b.weight)


def test_param_groups_and_clamp():
    model = IPDNetwork(StimulusConfig(anf_per_ear=3), ModelConfig(hidden=4, max_delay=6))
    groups = delay_param_groups(model, 0.005, 0.2)
    assert [g["lr"] for g in groups] == [0.005, 0.2] and groups[1]["params"] == [model.hidden.delay]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    plain = IPDNetwork(StimulusConfig(anf_per_ear=3), ModelConfig(hidden=4))
    (group,) = delay_param_groups(plain, 0.005, 0.2)
    assert group["params"] == list(plain.parameters())
    with torch.no_grad():
        model.hidden.delay[0, 0], model.hidden.delay[1, 1] = -1.5, 9.0
    clamp_delays_(model)
    assert model.hidden.delay[0, 0] == 0 and model.hidden.delay[1, 1] == 6
    both = IPDNetwork(StimulusConfig(anf_per_ear=3), ModelConfig(hidden=4, max_delay=6, readout_max_delay=2))
    groups = both.param_groups(TrainConfig(lr=0.005, delay_lr=0.2, lr_schedule="one_cycle", delay_lr_schedule="cosine"))
    assert [(g["lr"], g["schedule"]) for g in groups] == [(0.005, "one_cycle"), (0.2, "cosine")]
    assert groups[1]["params"] == [both.hidden.delay, both.readout.delay]
    with torch.no_grad():
        both.readout.delay[0, 0] = 2.5
    clamp_delays_(both)
    assert both.readout.delay[0, 0] == 2


def test_fit_with_delays_anneals_clamps_and_resumes_exactly():
    """Three epochs at delay_lr 0.5: the delays move and stay in [0, max_delay], each epoch trains with its width,
    and a fit resumed from the first epoch's state ends with the same weights, bit for bit."""
    from fastsnn.experiment.run import generator
    from fastsnn.experiment.stimulus import IPDDataset
    from fastsnn.experiment.training import fit

    stim = StimulusConfig(anf_per_ear=10, steps=40)
    cfg = TrainConfig(epochs=3, batch_size=16, train_samples=32, valid_samples=16, test_samples=16, lr=0.01,
                      delay_lr=0.5, sigma_anneal_epochs=2)

    def setup():
        sets = [IPDDataset.random(n, stim, generator(0, f"{w}_set")) for n, w in ((32, "train"), (16, "valid"))]
        return IPDNetwork(stim, ModelConfig(hidden=6, max_delay=8, backend="cpu"), generator(0, "model")), sets

    model, (train, valid) = setup()
    start = model.hidden.delay.detach().clone()
    widths, saved = [], []
    model.register_forward_pre_hook(lambda m, args: widths.append(m.hidden.sigma) if m.training else None)

    def save(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved.append(buffer.getvalue())

    fit(model, train, valid, cfg, generator(0, "train"), progress=False, on_epoch=save)
    assert sorted(set(widths), reverse=True) == [delay_sigma(8, e, 2) for e in range(3)]  # 4.27, 1.23, 0.5
    delay = model.hidden.delay.detach()
    assert 0 <= delay.min() and delay.max() <= 8 and (delay - start).abs().max() > 0.3
    again, (train, valid) = setup()
    state = torch.load(io.BytesIO(saved[0]), weights_only=True)
    fit(again, train, valid, cfg, generator(0, "train"), progress=False, state=state)
    for (name, a), b in zip(again.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_fit_trains_as_the_notebook_with_its_two_optimizers():
    """The notebook trains the weights and the delays with two Adam optimizers under torch's OneCycleLR and
    CosineAnnealingLR, stepped once per epoch, and clips the delays after each step: fit, with one Adam of two
    groups and --lr-schedule one_cycle --delay-lr-schedule cosine, ends with the same weights and delays; and a
    fit resumed from its first epoch's state ends with them too."""
    from fastsnn.experiment.run import generator
    from fastsnn.experiment.stimulus import IPDDataset
    from fastsnn.experiment.training import batch_loss, fit

    stim = StimulusConfig(anf_per_ear=8, steps=30, phase_delays="none")
    cfg = TrainConfig(epochs=4, batch_size=16, train_samples=48, valid_samples=16, test_samples=16, lr=0.005,
                      lr_schedule="one_cycle", delay_lr=0.3, delay_lr_schedule="cosine", sigma_anneal_epochs=3,
                      validation=False)

    def setup():
        train = IPDDataset.random(48, stim, generator(0, "train_set"))
        model = IPDNetwork(stim, ModelConfig(hidden=6, max_delay=5, readout_max_delay=3, delay_init="centre",
                                             backend="cpu"), generator(0, "model"))
        return model, train

    model, train = setup()
    first = []

    def keep_first(state):
        if not first:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            first.append(buffer.getvalue())

    fit(model, train, None, cfg, generator(0, "train"), progress=False, on_epoch=keep_first)

    notebook, train = setup()
    delays = [notebook.hidden.delay, notebook.readout.delay]
    weights = [p for p in notebook.parameters() if all(p is not d for d in delays)]
    weight_opt = torch.optim.Adam(weights, lr=0.001)  # OneCycleLR replaces this 0.001 with max_lr / 25
    delay_opt = torch.optim.Adam(delays, lr=0.3)
    schedules = [torch.optim.lr_scheduler.OneCycleLR(weight_opt, max_lr=0.005, total_steps=4),
                 torch.optim.lr_scheduler.CosineAnnealingLR(delay_opt, T_max=4)]
    g = generator(0, "train")
    for epoch in range(4):
        notebook.start_epoch(epoch, cfg)
        notebook.train()
        for batch in train.batches(16, g):
            loss = batch_loss(notebook, batch.x, batch.labels, 0.01)
            weight_opt.zero_grad()
            delay_opt.zero_grad()
            loss.backward()
            weight_opt.step()
            delay_opt.step()
            clamp_delays_(notebook)
        for schedule in schedules:
            schedule.step()
    start = IPDNetwork(stim, ModelConfig(hidden=6, max_delay=5, readout_max_delay=3, delay_init="centre"),
                       generator(0, "model"))
    assert (notebook.readout.delay - start.readout.delay).abs().max() > 0.05, "the readout's delays learnt nothing"
    for (name, a), b in zip(model.state_dict().items(), notebook.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)

    again, train = setup()
    fit(again, train, None, cfg, generator(0, "train"), progress=False,
        state=torch.load(io.BytesIO(first[0]), weights_only=True))
    for (name, a), b in zip(again.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_cli_trains_with_delays(tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs", "2", "--train-batches", "2", "--test-batches", "1", "--batch-size", "16", "--hidden", "5",
             "--anf-per-ear", "10", "--quiet", "--seed", "3", "--max-delay", "6", "--delay-lr", "0.5",
             "--sigma-anneal-epochs", "3", "--keep-final"]
    assert main(["train", *flags, "--out", str(out)]) == 0
    config = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config.model.max_delay == 6 and config.train.delay_lr == 0.5 and config.train.sigma_anneal_epochs == 3
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]
    fresh = IPDNetwork(config.stimulus, config.model, __import__("fastsnn.experiment.run").experiment.run.generator(3, "model"))
    delay = state["hidden.delay"]
    assert 0 <= delay.min() and delay.max() <= 6
    assert (delay - fresh.hidden.delay).abs().max() > 0.1, "the delays learnt nothing"
    assert main(["evaluate", str(out / "checkpoint.pt"), "--seed", "3", "--out", str(tmp_path)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((tmp_path / "evaluate-seed3.json").read_text())["test_accuracy"] == metrics["test_accuracy"]


@pytest.mark.parametrize("flags,message", [
    (["--max-delay", "-1"], "max_delay must be an integer >= 0"),
    (["--delay-lr", "0"], "delay_lr must be a finite number > 0"),
    (["--sigma-anneal-epochs", "0"], "sigma_anneal_epochs must be an integer >= 1"),
    (["--max-delay", "2.5"], "invalid int value: '2.5'"),
    (["--readout-max-delay", "-3"], "readout_max_delay must be an integer >= 0"),
    (["--delay-init", "middle"], "invalid choice: 'middle'"),
    (["--lr-schedule", "step"], "invalid choice: 'step'"),
    (["--delay-lr-schedule", "onecycle"], "invalid choice: 'onecycle'"),
    (["--sigma-start", "0"], "sigma_start must be a finite number > 0"),
    (["--sigma-end", "-1"], "sigma_end must be a finite number > 0"),
    (["--phase-delays", "linear"], "invalid choice: 'linear'"),
    (["--weight-init", "xavier"], "invalid choice: 'xavier'"),
])
def test_bad_delay_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_delays_are_sweep_keys():
    from fastsnn.experiment.sweeps import expand, parse_grid

    points = expand(RunConfig(), parse_grid(["max-delay=0,25", "delay-lr=0.05", "sigma-anneal-epochs=30"]), [0])
    assert [(p.config.model.max_delay, p.config.train.delay_lr, p.config.train.sigma_anneal_epochs)
            for p in points] == [(0, 0.05, 30), (25, 0.05, 30)]
    grid = parse_grid(["readout-max-delay=30", "delay-init=centre", "lr-schedule=one_cycle,constant",
                       "delay-lr-schedule=cosine", "sigma-start=15", "sigma-end=0.5", "phase-delays=none", "weight-init=kaiming"])
    configs = [p.config for p in expand(RunConfig(), grid, [0])]
    assert [c.train.lr_schedule for c in configs] == ["one_cycle", "constant"]
    for c in configs:
        assert (c.model.readout_max_delay, c.model.delay_init, c.stimulus.phase_delays) == (30, "centre", "none")
        assert c.model.weight_init == "kaiming"
        assert (c.train.delay_lr_schedule, c.train.sigma_start, c.train.sigma_end) == ("cosine", 15.0, 0.5)


def test_cli_sets_every_new_option():
    """The flags of the notebook's model and of the 250 Hz notebook's stimulus reach the run's config."""
    from fastsnn.experiment.cli import config_from_args, parser

    args = parser().parse_args(["train", "--max-delay", "30", "--readout-max-delay", "30", "--delay-init", "centre",
                                "--weight-init", "kaiming", "--phase-delays", "none", "--lr", "0.005", "--lr-schedule", "one_cycle",
                                "--delay-lr-schedule", "cosine", "--sigma-start", "15", "--sigma-end", "0.23",
                                "--sigma-anneal-epochs", "37", "--steps", "1000", "--dt-ms", "0.1", "--tone-hz", "250",
                                "--rate-max-hz", "500"])
    c = config_from_args(args)
    assert (c.model.max_delay, c.model.readout_max_delay, c.model.delay_init, c.model.weight_init) == (
        30, 30, "centre", "kaiming")
    assert (c.stimulus.phase_delays, c.stimulus.steps, c.stimulus.dt_ms, c.stimulus.tone_hz,
            c.stimulus.rate_max_hz) == ("none", 1000, 0.1, 250.0, 500.0)
    assert (c.train.lr, c.train.lr_schedule, c.train.delay_lr_schedule, c.train.sigma_start, c.train.sigma_end,
            c.train.sigma_anneal_epochs) == (0.005, "one_cycle", "cosine", 15.0, 0.23, 37)
    defaults = config_from_args(parser().parse_args(["train"]))
    assert defaults == RunConfig()  # every flag's default is the config's


def test_config_defaults_have_no_delays():
    assert ModelConfig().max_delay == 0 and TrainConfig().delay_lr > 0
