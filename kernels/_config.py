"""Launch configuration for every kernel in this folder, in one place.

All kernels here run a recurrence over time on independent (batch, neuron) lanes: each
program owns a BLOCK_B x BLOCK_N tile of lanes of a contiguous (B, T, N) tensor and loops
over T inside the kernel, one lane per thread. The tile fills whole neuron rows first
(coalesced loads) and stacks batch rows when N is small (e.g. a 12-class readout).
"""

import triton

LANES = 128  # lanes per program: 4 warps of 32 threads

# Launch options. A forward kernel rounds alpha * v + h as the reference does (a multiply, then an
# add: no FMA contraction), so spikes, which jump at the threshold, match it bit for bit on a GPU
# too; a backward kernel is smooth in its rounding and may fuse. Explicit, as Triton's default changes.
FWD_OPTIONS = {"enable_fp_fusion": False}
BWD_OPTIONS = {"enable_fp_fusion": True}


def lane_tile(B: int, N: int) -> tuple[tuple[int, int], int, int, int]:
    """(grid, BLOCK_B, BLOCK_N, num_warps) for a (B, N) plane of lanes,
    grid = (cdiv(B, BLOCK_B), cdiv(N, BLOCK_N)): batch on axis 0, which has no 65535 limit."""
    block_n = min(triton.next_power_of_2(N), LANES)
    block_b = min(triton.next_power_of_2(B), LANES // block_n)
    grid = (triton.cdiv(B, block_b), triton.cdiv(N, block_n))
    return grid, block_b, block_n, max(1, block_b * block_n // 32)


def dot_block(n: int, cap: int = 64) -> int:
    """A block size for one dimension of a ``tl.dot`` tile: n rounded up to a power of 2, in [16, cap]
    (``tl.dot`` takes no dimension under 16)."""
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))
