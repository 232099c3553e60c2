"""fastsnn as a library: a spiking network built from ``fastsnn.nn`` layers, trained a few steps on random
spikes, then the ops themselves. Runs in a few seconds on a CPU:

    python docs/examples/layers.py
"""

import torch
import torch.nn.functional as F

import fastsnn
from fastsnn.nn import ALIF, LIF, LeakyReadout

torch.manual_seed(0)
x = (torch.rand(64, 100, 200) < 0.2).float()  # (batch, time, inputs): 0/1 spikes
labels = torch.randint(0, 12, (64,))

# x @ W, then the LIF time loop as one fused kernel (numba on the CPU, Triton on a GPU); binary_input keeps
# the 0/1 input as bits for the backward
hidden = LIF(200, 30, tau_ms=5, binary_input=True)
readout = LeakyReadout(30, 12, tau_ms=5, binary_input=True)
optimizer = torch.optim.Adam([*hidden.parameters(), *readout.parameters()], lr=0.005)
for step in range(5):
    scores = readout.time_sum(hidden(x))  # (64, 12): the readout's membrane summed over time
    loss = F.cross_entropy(0.01 * scores, labels)
    optimizer.zero_grad()
    loss.backward()  # surrogate gradients through both time loops
    optimizer.step()
    print(f"step {step}: loss {loss.item():.4f}")

# Other members of the LIF family: an adaptive threshold, same-step spikes with a subtractive reset
adaptive = ALIF(200, 30, tau_ms=5, tau_adapt_ms=100, adapt=1.0, reset="subtract")
print("ALIF spikes per neuron and step:", adaptive(x).mean().item())

# The ops: input currents h (batch, time, neurons) -> spikes, differentiable in h and in a per-neuron decay
h = torch.randn(64, 100, 30, requires_grad=True)
alpha = torch.full((30,), 0.8187, requires_grad=True)
spikes = fastsnn.lif(h, alpha, spike="same_step", reset="subtract", surrogate="atan", beta=2.0)
spikes.sum().backward()
print("spikes", tuple(spikes.shape), "dL/dalpha", tuple(alpha.grad.shape))
counts = fastsnn.lif(h, 0.8187, time_weights=torch.ones(100))  # (64, 30) spike counts; spikes never stored
print("spike counts", tuple(counts.shape))
