"""Named workloads and the timed functions, shared by the pytest-benchmark suite and the report.

A *case* is (op, backend) -> a zero-argument callable running one timed unit on prepared
inputs. Ops (each a layer: projection + time loop, so the seed's own functions time the same
work):

- ``lif_fwd``: ``x @ W1`` then the LIF loop (no autograd state)
- ``lif_fwd_bwd``: the same with a gradient for W1 and the backward
- ``readout``: ``s @ W2`` then the readout summed over time, forward + backward
- ``train_step``: the whole seed network, forward + loss + backward (no optimizer step)

Backends: ``seed`` (the notebook's own functions, loaded from shared/seed), ``reference``,
``cpu`` (CPU tensors), ``triton`` (CUDA tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import fastsnn
from fastsnn.experiment.config import ModelConfig, StimulusConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.ops import spike_matmul

from . import seed_baseline

ALPHA = math.exp(-1 / 5)
OPS = ("lif_fwd", "lif_fwd_bwd", "readout", "train_step")


@dataclass(frozen=True)
class Workload:
    name: str
    B: int
    T: int
    inputs: int
    hidden: int
    classes: int = 12

    def describe(self) -> str:
        return f"B={self.B}, T={self.T}, {self.inputs} inputs, {self.hidden} hidden, {self.classes} classes"


WORKLOADS = {w.name: w for w in [
    Workload("seed", 64, 100, 200, 30),
    Workload("wide", 64, 100, 2000, 1000),
    Workload("long", 16, 2000, 200, 256),
    Workload("bigbatch", 1024, 100, 200, 30),
]}


def backends_for(device: torch.device) -> list[str]:
    fast = ["triton"] if device.type == "cuda" else ["cpu"]
    return (["seed"] if seed_baseline.available() else []) + ["reference", *fast]


@dataclass
class Inputs:
    x: torch.Tensor  # (B, T, inputs) float32 0/1 spikes, p = 0.225 as the seed's stimulus
    s: torch.Tensor  # (B, T, hidden) float32 0/1 spikes for the readout
    w1: torch.Tensor  # (inputs, hidden), requires grad
    w2: torch.Tensor  # (hidden, classes), requires grad
    y: torch.Tensor  # (B,) class labels


def make_inputs(w: Workload, device: torch.device, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(w.B, w.T, w.inputs, generator=g) < 0.225).float()
    s = (torch.rand(w.B, w.T, w.hidden, generator=g) < 0.1).float()
    # the seed's init scale, widened so that the hidden layer spikes at any width
    w1 = (torch.rand(w.inputs, w.hidden, generator=g) * 2 - 1) * 3 / math.sqrt(w.inputs)
    w2 = (torch.rand(w.hidden, w.classes, generator=g) * 2 - 1) / math.sqrt(w.classes)
    y = torch.randint(0, w.classes, (w.B,), generator=g)
    return Inputs(x.to(device), s.to(device), w1.to(device).requires_grad_(), w2.to(device).requires_grad_(),
                  y.to(device))


def _seed_module(w: Workload, device: torch.device):
    return seed_baseline.load(NUM_HIDDEN=w.hidden, DURATION_STEPS=w.T, NUM_CLASSES=w.classes, DALES_LAW=False,
                              device=device)


def _network(w: Workload, inp: Inputs, backend: str) -> IPDNetwork:
    stim = StimulusConfig(anf_per_ear=w.inputs // 2, steps=w.T, num_classes=w.classes)
    net = IPDNetwork(stim, ModelConfig(hidden=w.hidden, backend=backend)).to(inp.x.device)
    with torch.no_grad():
        net.hidden.weight.copy_(inp.w1)
        net.readout.weight.copy_(inp.w2)
    return net


def cases(w: Workload, device: torch.device, backends: list[str] | None = None,
          ops: tuple[str, ...] = OPS) -> dict[tuple[str, str], Callable[[], object]]:
    """{(op, backend): fn} for workload ``w`` on ``device``; every fn computes the same values."""
    inp = make_inputs(w, device)
    out: dict[tuple[str, str], Callable[[], object]] = {}
    for backend in backends or backends_for(device):
        if backend == "seed":
            seed = _seed_module(w, device)
            sign1, sign2 = torch.ones_like(inp.w1), torch.ones_like(inp.w2)

            def lif_fwd(seed=seed):
                with torch.no_grad():
                    return seed.layer1(inp.x, inp.w1, 5e-3, sign1)

            def lif_fwd_bwd(seed=seed):
                seed.layer1(inp.x, inp.w1, 5e-3, sign1).sum().backward()

            def readout(seed=seed):
                seed.layer2(inp.s, inp.w2, 5e-3, sign2).sum(1).sum().backward()

            def train_step(seed=seed):
                m = seed.snn(inp.x, inp.w1, inp.w2, (sign1, sign2), tau=5e-3).sum(1) * 0.01
                F.nll_loss(F.log_softmax(m, dim=1), inp.y).backward()
        else:
            net = _network(w, inp, backend)

            # the layers as IPDNetwork runs them: spike inputs kept as bits on the fast backends
            project = torch.matmul if backend == "reference" else spike_matmul

            def lif_fwd(backend=backend, project=project):
                with torch.no_grad():
                    return fastsnn.lif(project(inp.x, inp.w1), ALPHA, backend=backend)

            def lif_fwd_bwd(backend=backend, project=project):
                fastsnn.lif(project(inp.x, inp.w1), ALPHA, backend=backend).sum().backward()

            def readout(backend=backend, project=project):
                fastsnn.leaky_readout_sum(project(inp.s, inp.w2), ALPHA, backend=backend).sum().backward()

            def train_step(net=net):
                F.cross_entropy(net(inp.x) * 0.01, inp.y).backward()

        fns = dict(lif_fwd=lif_fwd, lif_fwd_bwd=lif_fwd_bwd, readout=readout, train_step=train_step)
        for op in ops:
            out[(op, backend)] = fns[op]
    return out


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for the backward while ``fn`` runs its forward.

    ``fn`` runs whole (its backward too): the hook records what was packed, and storages that
    several ops save (an input kept by two ops) count once.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
