"""The LIF family's static options, validated once and handed to every backend as one tuple.

The kernels (numba and Triton) read the fields by name; they specialise on the structural ones
(``same_step``, ``reset``, ``adaptive``) and take the rest as arguments.
"""

from __future__ import annotations

import inspect
import itertools
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
    """The keyword options of :func:`fastsnn.ops.neurons.reference.lif_ref` that give neuron ``n``."""
    return dict(threshold=n.threshold, adapt=n.adapt, beta=n.beta, surrogate=SURROGATES[n.surrogate],
                fire=FIRES[n.fire_ge], detach_reset=n.detach_reset, spike=SPIKES[n.same_step], reset=RESETS[n.reset])


def family() -> list[Neuron]:
    """Every member of the family :func:`neuron` accepts: each option with a tuple of choices
    (``SPIKES`` for ``spike``, ...) or a bool takes all its values, a number its default, and
    ``adaptive`` both (what the kernels specialise on, for tests and compile checks to cover)."""
    defaults = Neuron._field_defaults
    axes = {}
    for name, p in inspect.signature(neuron).parameters.items():
        choices = globals().get(name.upper() + "S")
        if isinstance(choices, tuple):
            axes[name] = choices
        elif p.annotation in (bool, "bool") or isinstance(p.default, bool):
            axes[name] = (False, True)
        elif isinstance(defaults.get(name), float):
            axes[name] = (defaults[name],)  # a kernel argument, not a specialisation
        else:
            raise TypeError(f"neuron() option {name!r} has no choice tuple {name.upper()}S and is no bool or number")
    members = []
    for values in itertools.product(*axes.values()):
        try:
            members.append(neuron(**dict(zip(axes, values))))
        except ValueError:  # an invalid pairing (subtract_next with delayed spikes)
            continue
    return members


def describe(n: Neuron) -> str:
    """The fields of ``n`` that differ from the seed's neuron, e.g. ``(same_step=1,reset=1)``; ``seed`` if none."""
    diff = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in n._asdict().items() if v != Neuron._field_defaults[k]]
    return "(" + ",".join(diff) + ")" if diff else "seed"
