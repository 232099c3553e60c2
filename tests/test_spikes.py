"""spike_matmul: x @ w for 0/1 spikes, keeping x as bits for the backward."""

import pytest
import torch

from fastsnn.ops.spikes import (pack_spikes, pack_spikes_torch, spike_matmul, unpack_spikes,
                                unpack_spikes_torch)


def spikes(*shape, p=0.3, seed=0):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p).float()


@pytest.mark.parametrize("m,k", [(1, 1), (5, 7), (3, 8), (17, 9), (64, 200)])
def test_pack_round_trip_and_both_paths_agree(m, k):
    x = spikes(m, k)
    bits = pack_spikes(x)
    assert bits.shape == (-(-m // 8), k) and bits.dtype == torch.uint8
    assert torch.equal(bits, pack_spikes_torch(x))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert torch.equal(unpack_spikes(bits, m, dtype), x.to(dtype))
        assert torch.equal(unpack_spikes_torch(bits, m, dtype), x.to(dtype))


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
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=0)
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
    assert sorted(t.numel() * t.element_size() for t in saved) == [8 * 50 // 8 * 200, 200 * 30 * 4]


def test_pack_ops_pass_opcheck():
    torch.library.opcheck(torch.ops.fastsnn.pack_spikes.default, (spikes(6, 13),))
    torch.library.opcheck(torch.ops.fastsnn.unpack_spikes.default, (pack_spikes(spikes(13, 6)), 13, torch.float32))


@pytest.mark.parametrize("m,k,chunk_bytes", [(77, 13, 8 * 13 * 4), (77, 13, 24 * 13 * 4), (64, 5, 1 << 20), (9, 3, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blockwise_weight_gradient_equals_the_whole_product(m, k, chunk_bytes, dtype):
    """The CPU weight gradient unpacks x in row blocks (ragged last block, one block, blocks of 8 rows)."""
    from fastsnn.cpu.spikes import spike_weight_grad_cpu

    x = spikes(m, k, seed=3).to(dtype)
    g = torch.randn(m, 6, generator=torch.Generator().manual_seed(4), dtype=dtype)
    torch.testing.assert_close(spike_weight_grad_cpu(pack_spikes(x), g, chunk_bytes), g.t() @ x)
