"""The LIF family's static options, validated once and handed to every backend as one tuple.

The kernels (numba and Triton) read the fields by name; they specialise on the structural ones
(``same_step``, ``reset``, ``adaptive``) and take the rest as arguments.
"""

from __future__ import annotations

from typing import NamedTuple

from .._common import check_choice, check_scalar

SPIKES = ("delayed", "same_step")
RESETS = ("zero", "subtract", "subtract_next")
SURROGATES = ("sigmoid", "atan")
FIRES = (">", ">=")

ZERO, SUBTRACT, SUBTRACT_NEXT = range(3)
SIGMOID, ATAN = range(2)


class Neuron(NamedTuple):
    """One member of the LIF family (equations: ``docs/semantics.md``, The LIF family)."""

    same_step: bool = False  # spike="same_step": s_t from u_t; else the seed's delayed s_{t+1} from v_t
    reset: int = ZERO  # ZERO, SUBTRACT or SUBTRACT_NEXT
    adaptive: bool = False  # adaptive threshold theta = threshold + adapt * a (the op gets rho)
    fire_ge: bool = False  # spike when v - theta >= 0 (SpikingJelly's test); else > 0 (the seed's)
    surrogate: int = SIGMOID  # SIGMOID: beta sig (1 - sig); ATAN: beta / 2 / (1 + (pi/2 beta x)^2)
    detach_reset: bool = False  # no gradient through the s of the reset
    threshold: float = 1.0
    beta: float = 5.0
    adapt: float = 0.0


def neuron(*, spike: str, reset: str, surrogate: str, fire: str, detach_reset: bool, threshold, beta,
           adapt=0.0, adaptive: bool = False) -> Neuron:
    """Validate the keyword options of :func:`fastsnn.lif` / :func:`fastsnn.alif` into a :class:`Neuron`."""
    check_choice("spike", spike, SPIKES)
    check_choice("reset", reset, RESETS)
    check_choice("surrogate", surrogate, SURROGATES)
    check_choice("fire", fire, FIRES)
    if reset == "subtract_next" and spike != "same_step":
        raise ValueError("reset='subtract_next' (snnTorch's subtract) needs spike='same_step'; with delayed "
                         "spikes reset='subtract' already takes theta off the next step's membrane")
    if not isinstance(detach_reset, bool):
        raise TypeError(f"detach_reset must be True or False, got {detach_reset!r}")
    return Neuron(same_step=spike == "same_step", reset=RESETS.index(reset), adaptive=adaptive,
                  fire_ge=fire == ">=", surrogate=SURROGATES.index(surrogate), detach_reset=detach_reset,
                  threshold=check_scalar("threshold", threshold), beta=check_scalar("beta", beta, lo=0.0),
                  adapt=check_scalar("adapt", adapt))


def reference_options(n: Neuron) -> dict:
    """The keyword options of :func:`fastsnn.ops.lif.reference.lif_ref` that give neuron ``n``."""
    return dict(threshold=n.threshold, adapt=n.adapt, beta=n.beta, surrogate=SURROGATES[n.surrogate],
                fire=FIRES[n.fire_ge], detach_reset=n.detach_reset, spike=SPIKES[n.same_step], reset=RESETS[n.reset])
