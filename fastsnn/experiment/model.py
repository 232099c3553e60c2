"""The seed network: Poisson inputs -> LIF hidden layer -> leaky readout, scored by the time sum
(or by another readout: the mean or max of the readout membrane over time, or a spiking output layer's
spike counts)."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig, StimulusConfig, TrainConfig
from fastsnn.nn import ALIF, LIF, DendriticFilter, LeakyReadout, anneal_delays, clamp_delays_, delay_param_groups


class IPDNetwork(nn.Module):
    """x (B, T, 2 * anf_per_ear) spikes -> class scores (B, num_classes): the readout membrane u's sum over
    time (the seed), mean or max over time, or the spiking readout's spike counts (``model.readout``)."""

    def __init__(self, stimulus: StimulusConfig, model: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        common = dict(dt_ms=stimulus.dt_ms, learn_tau=model.learn_tau, dales_law=model.dales_law,
                      ie_ratio=model.ie_ratio, dale_mask=model.dale_mask, backend=model.backend,
                      binary_input=_binary_input(model.backend), generator=generator, weight_init=model.weight_init)
        neuron = dict(tau_ms=model.tau_ms, threshold=model.threshold, beta=model.beta,
                      detach_reset=model.detach_reset, spike=model.spike, reset=model.reset, surrogate=model.surrogate)
        if model.neuron == "alif":
            neuron.update(tau_adapt_ms=model.tau_adapt_ms, adapt=model.adapt)
        layer = ALIF if model.neuron == "alif" else LIF
        dendrites = None
        if model.segments:
            dendrites = DendriticFilter.random(model.hidden, model.segments, (model.rise_ms_min, model.rise_ms_max),
                                               (model.decay_ms_min, model.decay_ms_max), stimulus.dt_ms, generator)
        self.hidden = layer(stimulus.inputs, model.hidden, **neuron, **common, dendrites=dendrites,
                            max_delay=model.max_delay, delay_init=model.delay_init)
        readout_tau = model.readout_tau_ms if model.readout_tau_ms is not None else model.tau_ms
        delays = dict(max_delay=model.readout_max_delay, delay_init=model.delay_init)
        if model.readout == "spiking":
            self.readout = layer(model.hidden, stimulus.num_classes, **{**neuron, "tau_ms": readout_tau}, **common,
                                 **delays)
        else:
            self.readout = LeakyReadout(model.hidden, stimulus.num_classes, tau_ms=readout_tau, **common, **delays)
        self.readout_kind = model.readout
        self.spike_dropout = model.spike_dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class scores (B, num_classes). In training mode with spike dropout, ``generator`` draws the masks."""
        if self.readout_kind in ("sum", "mean") and not self._dropping():
            weights = self.readout.time_weights(x.shape[1], x.dtype, x.device)
            if weights is not None:
                # sum_t u_t = (sum_k c_k s_k) @ W2: the LIF kernel accumulates the weighted spike count itself,
                # so neither the (B, T, hidden) spikes nor their gradient is ever stored
                if self.readout_kind == "mean":
                    weights = weights / x.shape[1]
                return self.hidden.time_sum(x, weights) @ self.readout.effective_weight()
        return self.forward_with_spikes(x, generator)[0]

    def forward_with_spikes(self, x: torch.Tensor, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B, num_classes), hidden spikes (B, T, hidden)): the hidden layer's spikes, then the readout
        (the spikes before dropout)."""
        spikes = self.hidden(x)
        kept, scale = spikes, 1.0
        if self._dropping():
            p = self.spike_dropout
            mask = torch.rand(spikes.shape, generator=generator, dtype=spikes.dtype) >= p
            kept, scale = spikes * mask.to(spikes.device), 1 / (1 - p)
        return self._score(kept, scale), spikes

    def _score(self, spikes: torch.Tensor, scale: float) -> torch.Tensor:
        """The readout's scores of (B, T, hidden) 0/1 spikes whose projection is multiplied by ``scale``."""
        if self.readout_kind == "spiking":
            counts = torch.ones(spikes.shape[1], dtype=spikes.dtype, device=spikes.device)
            return self.readout.time_sum(spikes, counts, scale)
        if self.readout_kind == "max":
            scores = self.readout(spikes).amax(1)
        else:
            scores = self.readout.time_sum(spikes)
            if self.readout_kind == "mean":
                scores = scores / spikes.shape[1]
        return scores if scale == 1 else scores * scale  # the leaky readout is linear in its input

    def _dropping(self) -> bool:
        return self.training and self.spike_dropout > 0

    # the training loop's hooks (fastsnn.experiment.training)
    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        """Everything but the delays at ``cfg.lr`` under ``cfg.lr_schedule``, the delays (if any) at ``cfg.delay_lr``
        under ``cfg.delay_lr_schedule``."""
        groups = delay_param_groups(self, cfg.lr, cfg.delay_lr)
        for group, schedule in zip(groups, (cfg.lr_schedule, cfg.delay_lr_schedule)):
            group["schedule"] = schedule
        return groups

    def start_epoch(self, epoch: int, cfg: TrainConfig) -> None:
        """The delay kernels' width for training epoch ``epoch``."""
        anneal_delays(self, epoch, cfg.sigma_anneal_epochs, cfg.sigma_start, cfg.sigma_end)

    def after_step(self) -> None:
        """Delays stay in [0, max_delay]."""
        clamp_delays_(self)

    def set_backend(self, backend: str) -> None:
        """Run both layers on ``backend`` (the weights are unchanged)."""
        for layer in (self.hidden, self.readout):
            layer.backend, layer.binary_input = backend, _binary_input(backend)


def _binary_input(backend: str) -> bool:
    """Both layers take spikes (the Poisson fibres, then the LIF output), so the fast backends keep
    them as bits for the backward; the reference stays the plain autograd transcription."""
    return backend != "reference"
