"""Learnable synaptic delays: a weight and a delay in [0, max_delay] steps per synapse, trained with Gaussian
kernels and evaluated with the delays rounded to whole steps.

    python docs/examples/delays.py
"""

import torch

import fastsnn
from fastsnn.nn import LIF, anneal_delays

torch.manual_seed(0)
x = (torch.rand(64, 100, 200) < 0.2).float()  # (batch, time, inputs): 0/1 spikes

# The op: x (B, T, 200), weights and delays (200, 30) -> currents (B, T, 30)
w = (0.1 * torch.randn(200, 30)).requires_grad_()
d = (torch.rand(200, 30) * 25).requires_grad_()  # delays in steps
h = fastsnn.delayed_projection(x, w, d, 3.0, max_delay=25)  # training: Gaussian kernels of width sigma = 3 steps
h.sum().backward()  # gradients for the weights and the delays
print("currents", tuple(h.shape), "dL/d(delay)", tuple(d.grad.shape))
h_eval = fastsnn.delayed_projection(x, w, d, max_delay=25)  # evaluation: delays rounded to whole steps

# The layer: a LIF layer whose input projection has a learnable delay per synapse
layer = LIF(200, 30, tau_ms=5, max_delay=25)
anneal_delays(layer, epoch=0, anneal_epochs=20)  # the kernels' width for this epoch (max_delay / 2 + 0.27 at first)
spikes = layer(x)  # training mode: Gaussian kernels
spikes.sum().backward()
print("delays", tuple(layer.delay.shape), "gradient", layer.delay.grad.abs().sum().item() > 0)
layer.eval()  # evaluation mode: rounded delays
print("spikes with rounded delays", layer(x).mean().item())
