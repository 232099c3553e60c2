"""Peer-exact configurations (docs/peers.md): fastsnn.lif against SpikingJelly's and snnTorch's own layers.

Each test runs the peer's layer and ``fastsnn.lif`` in the configuration docs/peers.md gives for it
on the same input currents, on every backend, and asserts identical spikes and the same gradients
(dL/dh and, where the peer learns it, the decay's parameter) within 1e-5 relative, for
``L = sum(g * spikes)`` with a random g. The peers run on the CPU, in the time loops they ship:
SpikingJelly's multi-step ``step_mode="m"`` (on CPU tensors its only implementation, the torch one:
a hand-written backward in float32, its autograd reference in float64), snnTorch's ``Leaky`` called
step by step with its state. fastsnn runs where ``backend_device`` puts the backend.

Inputs: ``random`` float currents of an awkward shape (ties with the threshold have probability
~0) and ``ties``, integer currents with a decay that keeps the membrane exact, so that it lands
exactly on the threshold often: there the spike test (``fire=">="`` or ``">"``) decides, and
``test_fire_test_decides_at_ties`` shows the other choice fails there and only there.

Skipped, each with its reason, when a peer is not importable; CI installs both (the ``compat``
extra, ``.ci/run``).
"""

import pytest
import torch
from conftest import WITH_REFERENCE, assert_close, backend_device

import fastsnn

DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]
KINDS = ("random", "ties")


def spikingjelly():
    """SpikingJelly's neuron module, or skip."""
    return pytest.importorskip("spikingjelly.activation_based.neuron",
                               reason="SpikingJelly is not installed (pip install -e '.[compat]')")


def snntorch():
    return pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install -e '.[compat]')")


# --- the peer-exact configurations (the table of docs/peers.md) ------------------------------------------

def sj_options(*, v_reset, detach_reset, v_threshold=1.0):
    """fastsnn.lif's options for SpikingJelly's ``LIFNode(tau, decay_input=False, v_threshold, v_reset,
    detach_reset)`` with its default ``surrogate.Sigmoid(alpha=4)``; the decay is ``alpha = 1 - 1/tau``.
    A hard reset to ``v_reset`` is a reset to zero of the membrane shifted by ``v_reset``."""
    return dict(spike="same_step", reset="subtract" if v_reset is None else "zero", fire=">=", surrogate="sigmoid",
                beta=4.0, detach_reset=detach_reset, threshold=v_threshold - (v_reset or 0.0))


def snntorch_options(*, reset_mechanism, threshold=1.0, reset_delay=True, detach_reset=True):
    """fastsnn.lif's options for snnTorch's ``Leaky(beta, threshold, reset_mechanism)`` with its default
    ``surrogate.atan(alpha=2)``; the decay is ``alpha = beta``. Its reset is detached (``detach_reset=False``
    matches a subclass whose ``mem_reset`` does not detach). ``reset_delay=False`` resets at the spike
    step, not detached (exact for "subtract" only while no reset leaves the membrane above threshold)."""
    if reset_delay:
        reset = "zero" if reset_mechanism == "zero" else "subtract_next"
    else:
        reset, detach_reset = reset_mechanism, False
    return dict(spike="same_step", reset=reset, fire=">", surrogate="atan", beta=2.0, detach_reset=detach_reset,
                threshold=threshold)


# --- helpers ---------------------------------------------------------------------------------------------

def peer_currents(kind: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":  # awkward shape, float currents around the threshold
        h = torch.randn(3, 13, 37, generator=g, dtype=torch.float64) * 1.5 + 0.3
    elif kind == "ties":  # integer currents: with a decay of 0.5 or 0.75 the membrane stays exact
        h = torch.randint(-1, 3, (2, 9, 129), generator=g).double()
    elif kind == "bounded":  # in [0, 1): with threshold 1 no reset leaves the membrane above it
        h = torch.rand(3, 13, 37, generator=g, dtype=torch.float64)
    elif kind == "bounded_ties":  # quarters in [0, 1): exact, and they sum to the threshold often
        h = torch.randint(0, 4, (2, 9, 129), generator=g).double() / 4
    else:
        raise ValueError(kind)
    return h.to(dtype)


def run_spikingjelly(node, h: torch.Tensor) -> torch.Tensor:
    """A SpikingJelly multi-step node on h (B, T, N) -> spikes (B, T, N) (it runs time-major)."""
    node.reset()
    return node(h.transpose(0, 1)).transpose(0, 1)


def run_snntorch(layer, h: torch.Tensor) -> torch.Tensor:
    """An snnTorch layer stepped over h (B, T, N) with its membrane state -> spikes (B, T, N)."""
    mem = layer.init_leaky()
    out = []
    for h_t in h.unbind(1):
        spk, mem = layer(h_t, mem)
        out.append(spk)
    return torch.stack(out, 1)


def assert_same(peer, ours, h: torch.Tensor, backend: str, params=()) -> None:
    """peer(h) and ours(h on the backend's device) give identical spikes and, for L = sum(g * spikes), the
    same dL/dh and dL/dp for each (name, our leaf, peer leaf) in ``params``, within 1e-5 relative."""
    device = backend_device(backend)
    g = torch.randn(h.shape, generator=torch.Generator().manual_seed(1), dtype=h.dtype)
    h_peer = h.clone().requires_grad_()
    s_peer = peer(h_peer)
    (s_peer * g.to(s_peer.dtype)).sum().backward()
    h_ours = h.to(device).requires_grad_()
    s_ours = ours(h_ours)
    (s_ours * g.to(device)).sum().backward()

    assert s_ours.dtype == h.dtype and s_ours.shape == h.shape
    expected = s_peer.detach().to(h.dtype)
    assert 0 < int(expected.sum()) < expected.numel(), "the inputs should make some, not all, neurons spike"
    diff = s_ours.detach().cpu() != expected
    if diff.any():
        b, t, n = (int(i) for i in diff.nonzero()[0])
        raise AssertionError(f"{int(diff.sum())} of {diff.numel()} spikes differ ({int(expected.sum())} peer "
                             f"spikes); first at (b={b}, t={t}, n={n}): peer {expected[b, t, n].item()}")
    for name, actual, wanted in [("dL/dh", h_ours.grad, h_peer.grad)] + [
            (f"dL/d{name}", ours_leaf.grad, peer_leaf.grad) for name, ours_leaf, peer_leaf in params]:
        wanted = wanted.detach().to(h.dtype)
        scale = max(1.0, wanted.abs().max().item())
        assert_close(name, actual.detach().cpu().to(h.dtype).reshape(wanted.shape), wanted, rtol=1e-5,
                     atol=1e-6 * scale)


# --- SpikingJelly ----------------------------------------------------------------------------------------

SJ_RESETS = [pytest.param(0.0, id="hard"), pytest.param(None, id="soft")]
# tau per input kind: 3 (alpha = 2/3, inexact) on random currents; 4 (alpha = 0.75, v - v/4 and 0.75 v
# round alike) on integer currents, so that both libraries' membranes are exact and tie
SJ_TAU = {"random": 3.0, "ties": 4.0}
SJ_THRESHOLD = {"random": 0.75, "ties": 1.0}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detached"])
@pytest.mark.parametrize("v_reset", SJ_RESETS)
def test_spikingjelly_lif(v_reset, detach_reset, backend, dtype, kind):
    """LIFNode(decay_input=False): hard (v_reset=0) and soft (None) reset, detach_reset both ways."""
    neuron = spikingjelly()
    tau, v_threshold = SJ_TAU[kind], SJ_THRESHOLD[kind]
    node = neuron.LIFNode(tau=tau, decay_input=False, v_threshold=v_threshold, v_reset=v_reset,
                          detach_reset=detach_reset, step_mode="m")
    options = sj_options(v_reset=v_reset, detach_reset=detach_reset, v_threshold=v_threshold)
    assert_same(lambda h: run_spikingjelly(node, h),
                lambda h: fastsnn.lif(h, 1 - 1 / tau, backend=backend, **options), peer_currents(kind, dtype), backend)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("v_reset", SJ_RESETS)
def test_spikingjelly_lif_decay_input(v_reset, backend, dtype, kind):
    """LIFNode's default decay_input=True, H = V + (X - V) / tau: fastsnn.lif on the currents divided by tau."""
    neuron = spikingjelly()
    tau = 2.0  # X / 2 and (X - V) / 2 stay exact on integer currents
    node = neuron.LIFNode(tau=tau, v_reset=v_reset, step_mode="m")
    options = sj_options(v_reset=v_reset, detach_reset=False)
    assert_same(lambda h: run_spikingjelly(node, h),
                lambda h: fastsnn.lif(h / tau, 1 - 1 / tau, backend=backend, **options), peer_currents(kind, dtype), backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
def test_spikingjelly_lif_nonzero_v_reset(backend, dtype):
    """A hard reset to v_reset != 0 (where the membrane also starts): the threshold becomes v_threshold - v_reset."""
    neuron = spikingjelly()
    node = neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.75, v_reset=-0.5, step_mode="m")
    options = sj_options(v_reset=-0.5, detach_reset=False, v_threshold=0.75)
    assert_same(lambda h: run_spikingjelly(node, h),
                lambda h: fastsnn.lif(h, 1 - 1 / 3.0, backend=backend, **options), peer_currents("random", dtype), backend)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("v_reset", SJ_RESETS)
@pytest.mark.parametrize("decay_input", [False, True], ids=["decay_input_false", "decay_input_true"])
def test_spikingjelly_parametric_lif(decay_input, v_reset, backend, dtype, kind):
    """ParametricLIFNode: 1/tau = sigmoid(w) learnt; alpha = 1 - sigmoid(w) (and the currents times
    sigmoid(w) with decay_input=True, its default), and dL/dw matches."""
    neuron = spikingjelly()
    init_tau = SJ_TAU[kind] if kind == "random" else 2.0  # w = 0: sigmoid(w) = 0.5 exactly on integer currents
    node = neuron.ParametricLIFNode(init_tau=init_tau, decay_input=decay_input, v_reset=v_reset,
                                    step_mode="m").to(dtype)
    w = node.w.detach().clone().to(backend_device(backend)).requires_grad_()
    n = peer_currents(kind, dtype).shape[2]
    options = sj_options(v_reset=v_reset, detach_reset=False)

    def ours(h):
        q = torch.sigmoid(w)
        return fastsnn.lif(h * q if decay_input else h, (1 - q).expand(n), backend=backend, **options)
    assert_same(lambda h: run_spikingjelly(node, h), ours, peer_currents(kind, dtype), backend, params=[("w", w, node.w)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("surrogate", ["Sigmoid", "ATan"])
def test_spikingjelly_lif_surrogates(surrogate, backend, dtype):
    """surrogate_function=surrogate.Sigmoid(alpha=a) / ATan(alpha=a): fastsnn's "sigmoid" / "atan" with beta=a."""
    neuron = spikingjelly()
    from spikingjelly.activation_based import surrogate as sj_surrogate

    node = neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.75, step_mode="m",
                          surrogate_function=getattr(sj_surrogate, surrogate)(alpha=3.0))
    options = {**sj_options(v_reset=0.0, detach_reset=False, v_threshold=0.75), "surrogate": surrogate.lower(),
               "beta": 3.0}
    assert_same(lambda h: run_spikingjelly(node, h),
                lambda h: fastsnn.lif(h, 1 - 1 / 3.0, backend=backend, **options), peer_currents("random", dtype), backend)


# --- snnTorch --------------------------------------------------------------------------------------------

SNN_RESETS = ("zero", "subtract")
SNN_BETA = {"random": 0.8, "ties": 0.75, "bounded": 0.8, "bounded_ties": 0.5}
SNN_THRESHOLD = {"random": 0.75, "ties": 1.0, "bounded": 1.0, "bounded_ties": 1.0}


def leaky(kind, dtype, reset_mechanism, cls=None, **kw):
    """snn.Leaky (or ``cls``) with beta as a tensor in the test dtype (a Python float would become float32)."""
    snn = snntorch()
    cls = cls or snn.Leaky
    return cls(beta=torch.tensor(SNN_BETA[kind], dtype=dtype), threshold=SNN_THRESHOLD[kind],
               reset_mechanism=reset_mechanism, **kw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("reset_mechanism", SNN_RESETS)
def test_snntorch_leaky(reset_mechanism, backend, dtype, kind):
    """Leaky's defaults (reset_delay=True, detached reset): "zero" and "subtract" (= fastsnn's subtract_next)."""
    layer = leaky(kind, dtype, reset_mechanism)
    options = snntorch_options(reset_mechanism=reset_mechanism, threshold=SNN_THRESHOLD[kind])
    alpha = float(layer.beta)
    assert_same(lambda h: run_snntorch(layer, h), lambda h: fastsnn.lif(h, alpha, backend=backend, **options),
                peer_currents(kind, dtype), backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("reset_mechanism", SNN_RESETS)
@pytest.mark.parametrize("shape", ["scalar", "per_neuron"])
def test_snntorch_leaky_learn_beta(shape, reset_mechanism, backend, dtype):
    """Leaky(learn_beta=True): a scalar beta (on integer currents) or one per neuron (random currents);
    alpha = beta.clamp(0, 1) (expanded to (N,)), and dL/dbeta matches."""
    snn = snntorch()
    kind = "ties" if shape == "scalar" else "random"
    h = peer_currents(kind, dtype)
    n = h.shape[2]
    beta0 = (torch.tensor(SNN_BETA[kind], dtype=dtype) if shape == "scalar"
             else 0.55 + 0.4 * torch.rand(n, generator=torch.Generator().manual_seed(2), dtype=dtype))
    layer = snn.Leaky(beta=beta0.clone(), threshold=SNN_THRESHOLD[kind], reset_mechanism=reset_mechanism,
                      learn_beta=True)
    beta = beta0.clone().to(backend_device(backend)).requires_grad_()
    options = snntorch_options(reset_mechanism=reset_mechanism, threshold=SNN_THRESHOLD[kind])
    assert_same(lambda h: run_snntorch(layer, h),
                lambda h: fastsnn.lif(h, beta.clamp(0, 1).expand(n), backend=backend, **options),
                h, backend, params=[("beta", beta, layer.beta)])


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("reset_mechanism", SNN_RESETS)
@pytest.mark.parametrize("spike_grad", ["atan(alpha=3)", "sigmoid(slope=25)"])
def test_snntorch_leaky_surrogates(spike_grad, reset_mechanism, backend):
    """spike_grad=surrogate.atan(alpha=a) / sigmoid(slope=k): fastsnn's "atan" with beta=a / "sigmoid" with
    beta=k. In float64: snnTorch writes the sigmoid's as k exp(-kx) / (exp(-kx) + 1)^2, which in float32 is
    NaN once k x < -88 (fastsnn's gives 0 there)."""
    snntorch()
    from snntorch import surrogate

    name, value = ("atan", 3.0) if spike_grad.startswith("atan") else ("sigmoid", 25.0)
    fn = surrogate.atan(alpha=value) if name == "atan" else surrogate.sigmoid(slope=value)
    layer = leaky("random", torch.float64, reset_mechanism, spike_grad=fn)
    options = {**snntorch_options(reset_mechanism=reset_mechanism, threshold=SNN_THRESHOLD["random"]),
               "surrogate": name, "beta": value}
    alpha = float(layer.beta)
    assert_same(lambda h: run_snntorch(layer, h), lambda h: fastsnn.lif(h, alpha, backend=backend, **options),
                peer_currents("random", torch.float64), backend)

def leaky_undetached_reset():
    """Leaky whose reset keeps its gradient: snnTorch has no option for it (``mem_reset`` always detaches
    when reset_delay=True), so this subclass overrides that one method without the ``.detach()``."""
    snn = snntorch()

    class LeakyUndetachedReset(snn.Leaky):
        def mem_reset(self, mem):
            return self.spike_grad(mem - self.threshold)

    return LeakyUndetachedReset


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("reset_mechanism", SNN_RESETS)
def test_snntorch_leaky_undetached_reset(reset_mechanism, backend, dtype, kind):
    """The same with the reset's gradient kept (a subclass, see above): fastsnn's detach_reset=False."""
    layer = leaky(kind, dtype, reset_mechanism, cls=leaky_undetached_reset())
    options = snntorch_options(reset_mechanism=reset_mechanism, threshold=SNN_THRESHOLD[kind], detach_reset=False)
    alpha = float(layer.beta)
    assert_same(lambda h: run_snntorch(layer, h), lambda h: fastsnn.lif(h, alpha, backend=backend, **options),
                peer_currents(kind, dtype), backend)


@pytest.mark.parametrize("kind", ["bounded", "bounded_ties"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("reset_mechanism", SNN_RESETS)
def test_snntorch_leaky_no_reset_delay(reset_mechanism, backend, dtype, kind):
    """Leaky(reset_delay=False): the reset at the spike step, its gradient kept: fastsnn's same-step "zero" /
    "subtract" with detach_reset=False. Exact for "zero" always; for "subtract" while no reset leaves the
    membrane above the threshold, as with these currents in [0, 1) (beyond: the next test)."""
    layer = leaky(kind, dtype, reset_mechanism, reset_delay=False)
    options = snntorch_options(reset_mechanism=reset_mechanism, reset_delay=False)
    alpha = float(layer.beta)
    assert_same(lambda h: run_snntorch(layer, h), lambda h: fastsnn.lif(h, alpha, backend=backend, **options),
                peer_currents(kind, dtype), backend)


@pytest.mark.parametrize("reset_mechanism", SNN_RESETS)
def test_snntorch_leaky_no_reset_delay_large_currents(reset_mechanism):
    """Leaky(reset_delay=False) on currents that leave the membrane above threshold after a subtraction.

    "zero" still equals fastsnn. "subtract" follows docs/peers.md's equations, with which no fastsnn option
    agrees: ``r_t = H(v_{t-1} - theta)`` (detached), ``m_t = beta v_{t-1} + x_t - theta r_t``,
    ``s_t = H(m_t - theta)``, ``v_t = m_t - theta (s_t - r_t)``: the spike test at t is shifted by theta
    whenever the membrane after step t-1 still exceeded the threshold.
    """
    layer = leaky("random", torch.float64, reset_mechanism, reset_delay=False)
    h = peer_currents("random", torch.float64) * 2
    with torch.no_grad():
        peer = run_snntorch(layer, h).double()
        ours = fastsnn.lif(h, 0.8, backend="reference",
                           **snntorch_options(reset_mechanism=reset_mechanism, threshold=0.75, reset_delay=False))
    if reset_mechanism == "zero":
        assert torch.equal(peer, ours)
        return
    theta, v, spikes = 0.75, torch.zeros_like(h[:, 0]), []
    for x in h.unbind(1):
        r = (v > theta).double()
        m = 0.8 * v + x - theta * r
        s = (m > theta).double()
        v = m - theta * (s - r)
        spikes.append(s)
    assert torch.equal(peer, torch.stack(spikes, 1))
    assert not torch.equal(peer, ours)


# --- the spike test --------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["sj-hard", "sj-soft", "snntorch-zero", "snntorch-subtract"])
def test_fire_test_decides_at_ties(config):
    """The peer's spike test (SpikingJelly ">=", snnTorch ">") is the one fastsnn option that matches it:
    on integer currents (the membrane often equals the threshold) the other choice gives other spikes; on
    random float currents (ties have probability ~0) both give the peer's."""
    peer, reset = config.split("-")
    results = {}
    for kind in ("ties", "random"):
        h = peer_currents(kind, torch.float64)
        if peer == "sj":
            neuron = spikingjelly()
            v_reset = 0.0 if reset == "hard" else None
            node = neuron.LIFNode(tau=SJ_TAU[kind], decay_input=False, v_threshold=SJ_THRESHOLD[kind],
                                  v_reset=v_reset, step_mode="m")
            alpha = 1 - 1 / SJ_TAU[kind]
            options = sj_options(v_reset=v_reset, detach_reset=False, v_threshold=SJ_THRESHOLD[kind])
            with torch.no_grad():
                expected = run_spikingjelly(node, h)
        else:
            layer = leaky(kind, torch.float64, reset)
            alpha, options = SNN_BETA[kind], snntorch_options(reset_mechanism=reset, threshold=SNN_THRESHOLD[kind])
            with torch.no_grad():
                expected = run_snntorch(layer, h).double()
        other = ">" if options["fire"] == ">=" else ">="
        with torch.no_grad():
            right = fastsnn.lif(h, alpha, backend="cpu", **options)
            wrong = fastsnn.lif(h, alpha, backend="cpu", **{**options, "fire": other})
        results[kind] = (torch.equal(right, expected), torch.equal(wrong, expected))
    assert results["ties"] == (True, False), results
    assert results["random"] == (True, True), results
