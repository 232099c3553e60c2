"""Public ops: ``lif``, ``leaky_readout``, ``leaky_readout_sum``.

Each validates its input, picks a backend and runs it:

- ``"reference"``: the plain autograd loop (:mod:`fastsnn.ops.reference`), any device.
- ``"cpu"``: compiled CPU kernels (numba, :mod:`fastsnn.cpu`), CPU tensors.
- ``"triton"``: fused Triton kernels (:mod:`fastsnn.kernels`), CUDA tensors, or CPU
  tensors when ``TRITON_INTERPRET=1`` was set before Triton was imported.
- ``"auto"``: ``"triton"`` for CUDA tensors, ``"cpu"`` otherwise.

NaN in ``h`` propagates: from the first step whose membrane is NaN, every later
spike of that neuron is NaN (the seed's ``v > 1`` would silently turn it into
no spikes), so a NaN input shows up in the loss instead of vanishing.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch

from .reference import leaky_readout_ref, leaky_readout_sum_ref, lif_ref, lif_sum_ref

BACKENDS = ("auto", "reference", "cpu", "triton")
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

__all__ = ["lif", "lif_sum", "leaky_readout", "leaky_readout_sum", "lif_ref", "lif_sum_ref", "leaky_readout_ref",
           "leaky_readout_sum_ref", "resolve_backend", "BACKENDS"]


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every backend keeps its state and gradients in: float64 for float64 input, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``backend`` means for tensors on ``device``; raises if it cannot run there."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "cpu"
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' runs on CPU tensors, got tensors on {device}; use 'triton' or 'auto'")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' needs the triton package (pip install triton; Linux x86-64)")
        if device.type == "cpu" and not _interpreting():
            raise ValueError("backend 'triton' runs on CUDA tensors; for CPU tensors set TRITON_INTERPRET=1 "
                             "before importing triton, or use backend 'cpu'")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'triton' runs on CUDA tensors, got tensors on {device}")
    return backend


def _check_h(name: str, h) -> None:
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, T, N), got {type(h).__name__}")
    if h.ndim != 3:
        raise ValueError(f"{name} must have shape (B, T, N) (3 dims), got shape {tuple(h.shape)}")
    if h.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {h.dtype}")


def _check_scalar(name: str, value, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and value <= lo:
        raise ValueError(f"{name} must be > {lo}, got {value!r}")
    return float(value)


def _alpha_tensor(alpha, h: torch.Tensor) -> torch.Tensor:
    """Validate ``alpha`` (float in [0, 1] or (N,) tensor) and return it as an (N,) state-dtype tensor."""
    n = h.shape[2]
    state = state_dtype(h.dtype)
    if isinstance(alpha, torch.Tensor):
        if alpha.shape != (n,):
            raise ValueError(f"alpha must be a float or a tensor of shape (N,) = ({n},), got shape {tuple(alpha.shape)}")
        if not alpha.is_floating_point():
            raise TypeError(f"alpha must be a floating-point tensor, got {alpha.dtype}")
        if alpha.device != h.device:
            raise ValueError(f"alpha is on {alpha.device} but h is on {h.device}; put both on one device")
        return alpha.to(state).contiguous()
    value = _check_scalar("alpha", alpha)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (alpha = exp(-dt/tau)), got {value!r}")
    return torch.full((n,), value, dtype=state, device=h.device)


def readout_time_weights(alpha: float, steps: int) -> tuple[float, ...]:
    """c_k with sum_t u_t = sum_k c_k h_k for the leaky readout: c_{T-1} = 0, c_k = 1 + alpha c_{k+1}."""
    c = [0.0] * steps
    for k in range(steps - 2, -1, -1):
        c[k] = 1.0 + alpha * c[k + 1]
    return tuple(c)


def _upcast(h: torch.Tensor) -> torch.Tensor:
    """16-bit inputs run the reference in float32, like the kernels' float32 state."""
    return h.float() if h.dtype in (torch.bfloat16, torch.float16) else h


def _ref_alpha(alpha):
    return alpha if isinstance(alpha, torch.Tensor) else float(alpha)


def _needs_state(h: torch.Tensor, alpha: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (h.requires_grad or alpha.requires_grad)


def _lif_arguments(h, alpha, threshold, beta, backend: str) -> tuple[float, float, torch.Tensor, str]:
    """Validate what :func:`lif` and :func:`lif_sum` share: (threshold, beta, alpha as (N,), backend)."""
    _check_h("h", h)
    threshold = _check_scalar("threshold", threshold)
    beta = _check_scalar("beta", beta, lo=0.0)
    return threshold, beta, _alpha_tensor(alpha, h), resolve_backend(backend, h.device)


def lif(h: torch.Tensor, alpha, *, threshold: float = 1.0, beta: float = 5.0, detach_reset: bool = False,
        backend: str = "auto") -> torch.Tensor:
    """The seed's LIF time loop: input currents h (B, T, N) -> spikes (B, T, N), dtype of h.

    ``v_{t+1} = (alpha v_t + h_t)(1 - s_t)``, ``s_{t+1} = H(v_t - threshold)``, ``s_0 = v_0 = 0``;
    the surrogate gradient of H is ``beta sig(beta x)(1 - sig(beta x))``. ``alpha``: float in
    [0, 1] or an (N,) tensor (which then gets a gradient). ``detach_reset`` stops the gradient
    through the reset factor ``(1 - s_t)``.
    """
    threshold, beta, alpha_t, backend = _lif_arguments(h, alpha, threshold, beta, backend)
    if backend == "reference":
        return lif_ref(_upcast(h), _ref_alpha(alpha), threshold=threshold, beta=beta,
                       detach_reset=detach_reset).to(h.dtype)
    from . import registry

    return registry.lif(h.contiguous(), alpha_t, threshold, beta, bool(detach_reset),
                        _needs_state(h, alpha_t), backend)[0]


def lif_sum(h: torch.Tensor, alpha, weights, *, threshold: float = 1.0, beta: float = 5.0,
            detach_reset: bool = False, backend: str = "auto") -> torch.Tensor:
    """:func:`lif` weighted and summed over time: h (B, T, N) -> (B, N) = sum_t weights_t s_t, dtype of h.

    ``weights``: (T,) tensor or sequence of floats, which gets no gradient (all ones
    counts spikes; :meth:`fastsnn.nn.LeakyReadout.time_weights` folds a leaky readout's time
    sum into it). The fast backends never store the (B, T, N) spikes, and their backward
    never builds the (B, T, N) spike gradient: it uses ``weights_t * grad`` in the time loop.
    A NaN or infinite weight propagates into the output, as NaN in h does.
    """
    threshold, beta, alpha_t, backend = _lif_arguments(h, alpha, threshold, beta, backend)
    weights_t = _weights_tensor(weights, h)
    if backend == "reference":
        return lif_sum_ref(_upcast(h), _ref_alpha(alpha), weights_t, threshold=threshold, beta=beta,
                           detach_reset=detach_reset).to(h.dtype)
    from . import registry

    return registry.lif_sum(h.contiguous(), alpha_t, weights_t, threshold, beta, bool(detach_reset),
                            _needs_state(h, alpha_t), backend)[0].to(h.dtype)


def _weights_tensor(weights, h: torch.Tensor) -> torch.Tensor:
    """Validate (T,) time weights and return them as a state-dtype tensor on h's device."""
    if not isinstance(weights, torch.Tensor):
        try:
            weights = torch.tensor(weights, dtype=state_dtype(h.dtype), device=h.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"weights must be a (T,) tensor or a sequence of floats, got {type(weights).__name__}")
    if weights.shape != (h.shape[1],):
        raise ValueError(f"weights must have shape (T,) = ({h.shape[1]},), got shape {tuple(weights.shape)}")
    if not weights.is_floating_point():
        raise TypeError(f"weights must be floating point, got {weights.dtype}")
    if weights.requires_grad:
        raise ValueError("weights get no gradient; pass weights.detach() (or use fastsnn.lif and sum yourself)")
    if weights.device != h.device:
        raise ValueError(f"weights are on {weights.device} but h is on {h.device}; put both on one device")
    return weights.to(state_dtype(h.dtype)).contiguous()


def leaky_readout(h: torch.Tensor, alpha, *, backend: str = "auto") -> torch.Tensor:
    """Leaky integrator: h (B, T, C) -> membrane u (B, T, C), ``u_0 = 0``, ``u_{t+1} = alpha u_t + h_t``."""
    _check_h("h", h)
    alpha_t = _alpha_tensor(alpha, h)
    backend = resolve_backend(backend, h.device)
    if backend == "reference":
        return leaky_readout_ref(_upcast(h), _ref_alpha(alpha)).to(h.dtype)
    from . import registry

    return registry.leaky_readout(h.contiguous(), alpha_t, backend)


def leaky_readout_sum(h: torch.Tensor, alpha, *, backend: str = "auto") -> torch.Tensor:
    """Sum over time of :func:`leaky_readout`: h (B, T, C) -> (B, C), without a (B, T, C) buffer.

    Uses ``sum_t u_t = sum_k c_k h_k`` with ``c_k = (1 - alpha^(T-1-k)) / (1 - alpha)``.
    Returned in h's dtype.
    """
    _check_h("h", h)
    alpha_t = _alpha_tensor(alpha, h)
    backend = resolve_backend(backend, h.device)
    if backend == "reference":
        return leaky_readout_sum_ref(_upcast(h), _ref_alpha(alpha)).to(h.dtype)
    from . import registry

    return registry.leaky_readout_sum(h.contiguous(), alpha_t, backend).to(h.dtype)

