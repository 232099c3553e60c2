"""Triton kernels for fastsnn, shipped as ``fastsnn.kernels``.

Each module holds one op: its forward and backward ``@triton.jit`` kernels and
their host launchers. Nothing here is imported by ``import fastsnn``; the
dispatcher in :mod:`fastsnn.ops` imports it on first use of the Triton backend.
"""
