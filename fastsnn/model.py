"""The seed network: Poisson inputs -> LIF hidden layer -> leaky readout, scored by the time sum."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig, StimulusConfig
from .nn import ALIF, LIF, LeakyReadout


class IPDNetwork(nn.Module):
    """x (B, T, 2 * anf_per_ear) spikes -> class scores (B, num_classes) = sum_t of the readout membrane."""

    def __init__(self, stimulus: StimulusConfig, model: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        common = dict(dt_ms=stimulus.dt_ms, learn_tau=model.learn_tau, dales_law=model.dales_law,
                      ie_ratio=model.ie_ratio, dale_mask=model.dale_mask, backend=model.backend,
                      binary_input=_binary_input(model.backend), generator=generator)
        neuron = dict(tau_ms=model.tau_ms, threshold=model.threshold, beta=model.beta,
                      detach_reset=model.detach_reset, spike=model.spike, reset=model.reset, surrogate=model.surrogate)
        neuron["max_delay"] = model.max_delay  # learnable delays on the input projection (0: none)
        if model.neuron == "alif":
            self.hidden = ALIF(stimulus.inputs, model.hidden, tau_adapt_ms=model.tau_adapt_ms, adapt=model.adapt,
                               **neuron, **common)
        else:
            self.hidden = LIF(stimulus.inputs, model.hidden, **neuron, **common)
        readout_tau = model.readout_tau_ms if model.readout_tau_ms is not None else model.tau_ms
        self.readout = LeakyReadout(model.hidden, stimulus.num_classes, tau_ms=readout_tau, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.readout.time_weights(x.shape[1], x.dtype, x.device)
        if weights is None:
            return self.readout.time_sum(self.hidden(x))
        # sum_t u_t = (sum_k c_k s_k) @ W2: the LIF kernel accumulates the weighted spike count itself,
        # so neither the (B, T, hidden) spikes nor their gradient is ever stored
        return self.hidden.time_sum(x, weights) @ self.readout.effective_weight()

    def set_backend(self, backend: str) -> None:
        """Run both layers on ``backend`` (the weights are unchanged)."""
        for layer in (self.hidden, self.readout):
            layer.backend, layer.binary_input = backend, _binary_input(backend)


def _binary_input(backend: str) -> bool:
    """Both layers take spikes (the Poisson fibres, then the LIF output), so the fast backends keep
    them as bits for the backward; the reference stays the plain autograd transcription."""
    return backend != "reference"
