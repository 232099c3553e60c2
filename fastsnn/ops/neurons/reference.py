"""The LIF family's oracle: a plain autograd transcription of its time loop.

Every fast backend is tested against it (values and gradients), and it is the fallback that
runs on any device. It keeps the seed's values, not its cost: the input is split with
``unbind`` before the loop, so autograd's backward stays O(T) (indexing ``h[:, t]`` in the
loop makes it O(T^2)). Equations: ``docs/semantics.md`` (The LIF family).
"""

from __future__ import annotations

import math

import torch

Decay = float | torch.Tensor

SURROGATES = ("sigmoid", "atan")


class SurrogateSpike(torch.autograd.Function):
    """H(x) forward, 1[x > 0] or with ``fire_ge`` 1[x >= 0], NaN staying NaN; a smooth pseudo-derivative backward:

    - ``"sigmoid"``: ``beta sig(beta x) (1 - sig(beta x))`` (the seed; SpikingJelly's ``Sigmoid(alpha=beta)``)
    - ``"atan"``: ``beta / 2 / (1 + (pi/2 beta x)^2)`` (snnTorch's and SpikingJelly's ``ATan(alpha=beta)``)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float, surrogate: str, fire_ge: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta, ctx.surrogate = beta, surrogate
        fired = x >= 0 if fire_ge else x > 0
        return torch.where(torch.isnan(x), x, fired.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if ctx.surrogate == "atan":
            return grad * (ctx.beta / 2) / (1 + (math.pi / 2 * ctx.beta * x) ** 2), None, None, None
        sig = torch.sigmoid(ctx.beta * x)
        return grad * ctx.beta * sig * (1 - sig), None, None, None


def spike_fn(x: torch.Tensor, beta: float = 5.0, surrogate: str = "sigmoid", fire_ge: bool = False) -> torch.Tensor:
    return SurrogateSpike.apply(x, beta, surrogate, fire_ge)


def lif_ref(
    h: torch.Tensor,
    alpha: Decay,
    rho: Decay | None = None,
    *,
    threshold: float = 1.0,
    adapt: float = 1.0,
    beta: float = 5.0,
    surrogate: str = "sigmoid",
    fire: str = ">",
    detach_reset: bool = False,
    spike: str = "delayed",
    reset: str = "zero",
) -> torch.Tensor:
    """The LIF family: input currents h (B, T, N) -> spikes s (B, T, N).

    ``alpha``: membrane decay per step, float or (N,). With ``rho`` (float or (N,)) the threshold
    adapts: ``theta = threshold + adapt * a``, ``a <- rho a + (1 - rho) s`` (ALIF); without it
    ``theta = threshold``. ``spike="delayed"`` (the seed): s_0 = 0 and, for t = 0 .. T-2,
    ``s_{t+1} = H(v_t - theta_t)``, ``v_{t+1} = reset(alpha v_t + h_t, s_t, theta_t)``.
    ``spike="same_step"``: ``u_t = alpha v_{t-1} + h_t``, ``s_t = H(u_t - theta_t)``,
    ``v_t = reset(u_t, s_t, theta_t)``. ``reset``: ``"zero"`` u (1 - s), ``"subtract"`` u - theta s,
    or (same-step only) ``"subtract_next"``, where theta s is taken from the next step's
    membrane after its decay (snnTorch's subtract). ``detach_reset`` stops the gradient through
    the s of the reset.
    """
    B, _, N = h.shape
    adaptive = rho is not None
    fire_ge = fire == ">="
    v = h.new_zeros(B, N)
    s = h.new_zeros(B, N)
    a = h.new_zeros(B, N)
    out = []

    def theta():
        return threshold + adapt * a if adaptive else threshold

    def after_reset(u, s, th):
        r = s.detach() if detach_reset else s
        if reset == "zero":
            return u * (1 - r), 0
        if reset == "subtract":
            return u - th * r, 0
        return u, th * r  # subtract_next: the membrane keeps u; theta s comes off the next step's

    if spike == "delayed":
        out.append(s)
        for h_t in h.unbind(1)[:-1]:
            th = theta()
            u = alpha * v + h_t
            s_next = spike_fn(v - th, beta, surrogate, fire_ge)
            v, _ = after_reset(u, s, th)
            if adaptive:
                a = rho * a + (1 - rho) * s_next
            s = s_next
            out.append(s)
    else:
        carry = 0
        for h_t in h.unbind(1):
            th = theta()
            u = alpha * v + h_t - carry
            s = spike_fn(u - th, beta, surrogate, fire_ge)
            v, carry = after_reset(u, s, th)
            if adaptive:
                a = rho * a + (1 - rho) * s
            out.append(s)
    if not out:
        return h.new_zeros(h.shape)
    return torch.stack(out, dim=1)[:, : h.shape[1]]  # delayed with T = 0: no s_0 either


def lif_sum_ref(h: torch.Tensor, alpha: Decay, time_weights: torch.Tensor, rho: Decay | None = None,
                **options) -> torch.Tensor:
    """:func:`lif_ref` weighted and summed over time: (B, T, N) -> (B, N) = sum_t time_weights_t s_t."""
    return (lif_ref(h, alpha, rho, **options) * time_weights[:, None]).sum(1)
