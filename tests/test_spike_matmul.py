"""spike_matmul (``fastsnn.ops.spikes``): x @ w for 0/1 spikes, keeping x as bits for the backward; its pack/unpack
custom ops, the CPU kernels of ``fastsnn/ops/spikes/cpu.py`` and the event-driven paths (CPU and
``fastsnn/kernels/spikes.py``) against the float64 product."""

import pytest
import torch
from conftest import FAST, assert_close, backends

import fastsnn.ops.spikes as spikes_op
from fastsnn.ops.spikes import event_pays, pack_spikes, spike_matmul, spike_project, spike_weight_grad, unpack_spikes
from fastsnn.ops.spikes.reference import pack_spikes_ref, unpack_spikes_ref


def spikes(*shape, p=0.3, seed=0):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p).float()


@pytest.mark.parametrize("m,k", [(1, 1), (5, 7), (3, 8), (17, 9), (64, 200)])
def test_pack_round_trip_and_both_paths_agree(m, k):
    x = spikes(m, k)
    bits = pack_spikes(x)
    assert bits.shape == (-(-m // 8), k) and bits.dtype == torch.uint8
    assert torch.equal(bits, pack_spikes_ref(x))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert torch.equal(unpack_spikes(bits, m, dtype), x.to(dtype))
        assert torch.equal(unpack_spikes_ref(bits, m, dtype), x.to(dtype))


def test_bit_order():
    x = torch.zeros(10, 1)
    x[0, 0] = x[3, 0] = x[9, 0] = 1
    assert pack_spikes(x).tolist() == [[0b00001001], [0b00000010]]


@pytest.mark.parametrize("shape", [(4, 11, 13), (2, 3, 200), (7, 1)])
def test_spike_matmul_matches_matmul(shape):
    x = spikes(*shape).requires_grad_()
    w = torch.randn(shape[-1], 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = spike_matmul(x, w)
    ref = x.detach().requires_grad_() @ w.detach().clone().requires_grad_()
    torch.testing.assert_close(out, ref.detach())  # events add in another order than the GEMM
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    dx, dw = torch.autograd.grad(out, [x, w], g)
    x2, w2 = x.detach().requires_grad_(), w.detach().requires_grad_()
    dx_ref, dw_ref = torch.autograd.grad(x2 @ w2, [x2, w2], g)
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(dw, dw_ref)


def test_spike_matmul_saves_bits():
    x = spikes(8, 50, 200)
    w = torch.randn(200, 30, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        spike_matmul(x, w)
    assert sorted(t.numel() * t.element_size() for t in saved) == [8, 8 * 50 // 8 * 200, 200 * 30 * 4]  # + count


def test_pack_ops_pass_opcheck():
    torch.library.opcheck(torch.ops.fastsnn.pack_spikes.default, (spikes(6, 13),))
    torch.library.opcheck(torch.ops.fastsnn.unpack_spikes.default, (pack_spikes(spikes(13, 6)), 13, torch.float32))


@pytest.mark.parametrize("m,k,chunk_bytes", [(77, 13, 8 * 13 * 4), (77, 13, 24 * 13 * 4), (64, 5, 1 << 20), (9, 3, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blockwise_weight_gradient_equals_the_whole_product(m, k, chunk_bytes, dtype):
    """The CPU weight gradient unpacks x in row blocks (ragged last block, one block, blocks of 8 rows)."""
    from fastsnn.ops.spikes.cpu import spike_weight_grad_cpu

    x = spikes(m, k, seed=3).to(dtype)
    g = torch.randn(m, 6, generator=torch.Generator().manual_seed(4), dtype=dtype)
    torch.testing.assert_close(spike_weight_grad_cpu(pack_spikes(x), g, chunk_bytes), g.t() @ x)


# --- event-driven projections ----------------------------------------------------------------------------
# The event paths add the rows of w (forward) and dh (weight gradient) that spikes select, in another
# order than the GEMM: results equal the float64 product up to float32 (float64) rounding. Awkward
# shapes: M = 37 rows (a partial group of 8), K = 203 inputs (a partial 64-bit word), N = 31 columns
# (a partial vector register).

DENSITIES = [0.0, 1e-3, 0.05, 0.22, 0.5, 1.0]
TOL = {torch.float32: 2e-6, torch.float64: 1e-13}  # relative to the largest |value| of the product


def spikes_at(shape, density, seed=0, dtype=torch.float32):
    if density >= 1:
        return torch.ones(shape, dtype=dtype)
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density).to(dtype)


def assert_product(name, actual, expected, dtype):
    """actual against a float64 product, within TOL of the product's scale (zero for a zero product)."""
    scale = max(expected.abs().max().item(), 1.0)
    assert_close(name, actual, expected, rtol=0, atol=TOL[dtype] * scale * 8)


def project_and_grads(x, w, backend, path, device, seed=1):
    x = x.to(device).requires_grad_()
    w = w.to(device).requires_grad_()
    out = spike_matmul(x, w, backend=backend, path=path)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.dtype)
    dx, dw = torch.autograd.grad(out, [x, w], g.to(device))
    return out.cpu(), dx.cpu(), dw.cpu(), g


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("path", ["event", "auto", "dense"])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_paths_equal_the_product(backend, device, path, density, dtype):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("the Triton kernels are tested in float32")
    x = spikes_at((37, 203), density, dtype=dtype)
    w = torch.randn(203, 31, generator=torch.Generator().manual_seed(2), dtype=dtype)
    out, dx, dw, g = project_and_grads(x, w, backend, path, device)
    xd, wd, gd = x.double(), w.double(), g.double()
    assert_product("h", out, (xd @ wd).to(dtype), dtype)
    assert_product("dw", dw, (xd.t() @ gd).to(dtype), dtype)
    assert_product("dx", dx, (gd @ wd.t()).to(dtype), dtype)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(2, 5, 70), (1, 64), (8, 1), (9, 65), (3, 4, 7, 128)], ids=str)
def test_event_path_any_leading_shape(backend, device, shape):
    x = spikes_at(shape, 0.3)
    w = torch.randn(shape[-1], 17, generator=torch.Generator().manual_seed(3))
    out, dx, dw, g = project_and_grads(x, w, backend, "event", device)
    assert out.shape == (*shape[:-1], 17)
    x2, g2 = x.reshape(-1, shape[-1]).double(), g.reshape(-1, 17).double()
    assert_product("h", out, (x.double() @ w.double()).float(), torch.float32)
    assert_product("dw", dw, (x2.t() @ g2).float(), torch.float32)


@pytest.mark.parametrize("m,k,n", [(37, 203, 300), (200, 700, 129), (5, 64, 1), (16, 65, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cpu_event_kernels_in_tiles(m, k, n, dtype):
    """Wide outputs in several column chunks, inputs in several tiles of w, rows in several lanes."""
    from fastsnn.ops.spikes.cpu import event_matmul_cpu, event_weight_grad_cpu, pack_count_cpu

    x = spikes_at((m, k), 0.2, dtype=dtype)
    w = torch.randn(k, n, generator=torch.Generator().manual_seed(4), dtype=dtype)
    dh = torch.randn(m, n, generator=torch.Generator().manual_seed(5), dtype=dtype)
    bits, counts = pack_count_cpu(x)
    assert counts[:, 0].sum() == x.count_nonzero() and counts[:, 1].sum() == 0
    expected = (x.double() @ w.double()).to(dtype)
    for rows, tile in [(8, 64 * 64 * 4), (64, 256 << 10), (1 << 20, 1)]:
        h = event_matmul_cpu(bits, counts[:, 0].contiguous(), w, m, rows, tile)
        assert_product(f"h rows={rows} tile={tile}", h, expected, dtype)
    for slabs in (1, 4):
        expected = (x.double().t() @ dh.double()).to(dtype)
        assert_product(f"dw slabs={slabs}", event_weight_grad_cpu(bits, dh, slabs), expected, dtype)


def test_cpu_weight_gradient_split_over_threads():
    """Two threads: rows split into two private copies of dw (small dw), inputs split (large dw)."""
    from fastsnn.ops.spikes.cpu import event_weight_grad_cpu, pack_spikes_cpu

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for k, n in [(50, 7), (300, 300)]:
            x = spikes_at((77, k), 0.3)
            dh = torch.randn(77, n, generator=torch.Generator().manual_seed(6))
            expected = (x.double().t() @ dh.double()).float()
            assert_product(f"dw k={k}", event_weight_grad_cpu(pack_spikes_cpu(x), dh), expected, torch.float32)
    finally:
        torch.set_num_threads(threads)


def test_cpu_int32_lists_beyond_65536_inputs():
    """Spike lists hold uint16 indices up to 65536 inputs, int32 beyond."""
    k = 65600
    x = torch.zeros(9, k)
    x[0, [0, 65535, 65536, 65599]] = 1
    x[8, 65590] = 1
    w = torch.randn(k, 3, generator=torch.Generator().manual_seed(7))
    out, _, dw, g = project_and_grads(x, w, "cpu", "event", "cpu")
    assert_product("h", out, (x.double() @ w.double()).float(), torch.float32)
    assert_product("dw", dw, (x.double().t() @ g.double()).float(), torch.float32)


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_pack_counts_and_matches_cpu(backend, device):
    from fastsnn.kernels.spikes import event_weight_grad, pack_count

    x = spikes_at((37, 203), 0.22)
    bits, count = pack_count(x.to(device))
    assert torch.equal(bits.cpu(), pack_spikes(x)) and count.item() == x.count_nonzero()
    dh = torch.randn(37, 31, generator=torch.Generator().manual_seed(8))
    expected = (x.double().t() @ dh.double()).float()
    for programs in (1, 2, 1024):  # rows in one split, two, one per tile of 32 rows
        assert_product(f"dw programs={programs}", event_weight_grad(bits, dh.to(device), programs).cpu(), expected,
                       torch.float32)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (6, 0, 3), (6, 5, 0)])
def test_empty_shapes(backend, device, m, k, n):
    x = spikes_at((m, k), 0.5)
    w = torch.randn(k, n, generator=torch.Generator().manual_seed(10))
    out, dx, dw, _ = project_and_grads(x, w, backend, "event", device)
    assert out.shape == (m, n) and not out.abs().sum() and dx.shape == (m, k) and not dw.abs().sum()


def test_non_binary_x_takes_the_exact_dense_forward():
    x = spikes_at((20, 30), 0.3)
    x[3, 4], x[7, 1] = 0.5, float("nan")
    w = torch.randn(30, 6, generator=torch.Generator().manual_seed(9), requires_grad=True)
    out = spike_matmul(x, w)
    assert torch.equal(out.isnan(), (x @ w).isnan()) and out[7].isnan().all()
    torch.testing.assert_close(out[:7], (x @ w)[:7])
    with pytest.raises(ValueError, match="0/1"):
        spike_matmul(x, w, path="event")


@pytest.mark.parametrize("path", ["auto", "dense"])
@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan")])
def test_non_binary_x_refuses_the_weight_gradient_on_the_cpu(path, value):
    """The bits counted a nonzero entry as 1: a silently wrong weight gradient (x's stays exact)."""
    x = spikes_at((20, 30), 0.3)
    x[3, 4] = value
    x.requires_grad_()
    w = torch.randn(30, 6, generator=torch.Generator().manual_seed(9))
    g = torch.randn(20, 6, generator=torch.Generator().manual_seed(1))
    (dx,) = torch.autograd.grad(spike_matmul(x, w, backend="cpu", path=path), x, g)  # w fixed: only x's gradient
    torch.testing.assert_close(dx, g @ w.t())
    out = spike_matmul(x, w.requires_grad_(), backend="cpu", path=path)
    with pytest.raises(ValueError, match=r"^spike_matmul: x held values other than 0 and 1 \(or NaN\), whose weight "
                                         r"gradient its bits cannot give; pass 0/1 spikes, or use x @ w$"):
        out.backward(g)


def test_bad_inputs():
    x, w = spikes_at((4, 6), 0.5), torch.randn(6, 3)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        spike_matmul(x.numpy(), w)
    with pytest.raises(ValueError, match=r"w must have shape \(K, N\)"):
        spike_matmul(x, w[:, 0])
    with pytest.raises(ValueError, match="K = w.shape"):
        spike_matmul(x[:, :5], w)
    with pytest.raises(TypeError, match="one dtype"):
        spike_matmul(x.double(), w)
    with pytest.raises(TypeError, match="float32"):
        spike_matmul(x.int(), w.int())
    with pytest.raises(ValueError, match="path must be"):
        spike_matmul(x, w, path="sparse")
    with pytest.raises(ValueError, match="backend must be"):
        spike_matmul(x, w, backend="numba")


def test_reference_backend_is_the_plain_product():
    x, w = spikes_at((5, 6), 0.5), torch.randn(6, 3, requires_grad=True)
    out = spike_matmul(x, w, backend="reference")
    assert out.grad_fn.name() == "MmBackward0" and torch.equal(out, x @ w)


def test_event_pays_follows_the_measured_crossover():
    for op, table in spikes_op.CPU_CROSSOVER.items():
        for max_n, density in table:
            n = max_n if max_n is not None else 10 ** 6
            assert event_pays(op, density, n)
            assert density >= 1 or not event_pays(op, density + 1e-3, n)


def test_event_ops_pass_opcheck():
    x, w = spikes_at((13, 70), 0.3), torch.randn(70, 5)
    torch.library.opcheck(torch.ops.fastsnn.spike_project.default, (x, w, "cpu", "auto"))
    _, bits, count = spike_project(x, w, "cpu", "auto")
    torch.library.opcheck(torch.ops.fastsnn.spike_weight_grad.default, (bits, torch.randn(13, 5), count, "cpu", "auto"))
    assert spike_weight_grad(bits, torch.randn(13, 5), count, "cpu", "event").shape == (70, 5)


def test_no_gradient_needed_still_projects_by_events():
    x, w = spikes_at((3, 11, 40), 0.1), torch.randn(40, 9)
    with torch.no_grad():
        out = spike_matmul(x, w.requires_grad_(), path="event")
    assert not out.requires_grad
    assert_product("h", out, (x.double() @ w.double()).float(), torch.float32)
    assert spike_matmul(x, w.detach(), path="event").grad_fn is None


# --- spikes that arrive as bits (SpikeBits) ----------------------------------------------------------------

@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(4, 11, 13), (3, 100, 200), (7, 1), (1, 1, 1)], ids=str)
@pytest.mark.parametrize("path", ["auto", "event", "dense"])
def test_spike_bits_project_as_the_tensor_does(backend, device, shape, path):
    """Same forward bits, same saved bits and count, same weight gradient as x itself: only the packing pass is gone."""
    x = spikes(*shape, seed=3).to(device)
    w = torch.randn(shape[-1], 9, generator=torch.Generator().manual_seed(4)).to(device)
    g = torch.randn(*shape[:-1], 9, generator=torch.Generator().manual_seed(5)).to(device)
    packed = spikes_op.SpikeBits.pack(x)
    assert packed.shape == x.shape and packed.ndim == x.ndim and torch.equal(packed.unpack(), x)
    outs = []
    for given in (x, packed):
        wg = w.clone().requires_grad_()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = spike_matmul(given, wg, backend=backend, path=path)
        out.backward(g)
        with torch.no_grad():
            plain = spike_matmul(given, w, backend=backend, path=path)
        outs.append((out.detach(), wg.grad, plain, [s for s in saved if s.dtype == torch.uint8]))
    (out, dw, plain, bits), (out_b, dw_b, plain_b, bits_b) = outs
    assert torch.equal(out, out_b) and torch.equal(dw, dw_b) and torch.equal(plain, plain_b)
    assert len(bits) == len(bits_b) == 1 and torch.equal(bits[0], bits_b[0])


def test_spike_bits_counts_and_checks():
    x = spikes(5, 13, 7, seed=6)
    packed = spikes_op.SpikeBits.pack(x)
    expected = x.reshape(-1, 7)
    expected = torch.cat([expected, expected.new_zeros(-len(expected) % 8, 7)]).view(-1, 8, 7).sum((1, 2)).long()
    assert torch.equal(packed.counts, expected)
    uncounted = spikes_op.SpikeBits(packed.bits, x.shape)
    assert torch.equal(uncounted.group_counts(), expected)
    assert torch.equal(spike_matmul(uncounted, torch.ones(7, 2)), x @ torch.ones(7, 2))
    with pytest.raises(ValueError, match="0/1"):
        spikes_op.SpikeBits.pack(x * 0.5)
    with pytest.raises(ValueError, match=r"bits must be uint8 of shape \(9, 7\)"):
        spikes_op.SpikeBits(packed.bits[1:], x.shape)
    with pytest.raises(ValueError, match="counts must be int64 of shape"):
        spikes_op.SpikeBits(packed.bits, x.shape, packed.counts[1:])
    with pytest.raises(ValueError, match="K = w.shape"):
        spike_matmul(packed, torch.ones(6, 2))
    with pytest.raises(TypeError, match="one dtype"):
        spike_matmul(packed, torch.ones(7, 2, dtype=torch.float64))
    assert torch.equal(spike_matmul(packed, torch.ones(7, 2), backend="reference"), x @ torch.ones(7, 2))


def test_layers_take_spike_bits():
    """The LIF layer projects SpikeBits by events, other projections (delays, the readout's time
    contraction, the reference backend) unpack them: every output and gradient equals x's."""
    from fastsnn.nn import LIF, LeakyReadout

    x = spikes(3, 20, 16, seed=7)
    packed = spikes_op.SpikeBits.pack(x)
    for make in (lambda: LIF(16, 5, binary_input=True, generator=torch.Generator().manual_seed(0)),
                 lambda: LIF(16, 5, backend="reference", generator=torch.Generator().manual_seed(0)),
                 lambda: LIF(16, 5, binary_input=True, max_delay=3, generator=torch.Generator().manual_seed(0)),
                 lambda: LeakyReadout(16, 4, binary_input=True, generator=torch.Generator().manual_seed(0))):
        results = []
        for given in (x, packed):
            layer = make()
            out = layer.time_sum(given) if isinstance(layer, LeakyReadout) else layer(given)
            out.sum().backward()
            results.append((out.detach(), layer.weight.grad))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
