"""A pack: runs whose networks have parameters of the same shapes, trained together in one process as one
stacked model (how ``fastsnn sweep`` trains the runs of a grid, :mod:`fastsnn.experiment.sweeps`).

The members' parameters are stacked, (R, ...) for R members, under one Adam. Adam works element by
element, so one optimizer over the stack makes exactly the updates of R optimizers as long as every
member steps: the members share the learning rates and, having started together, the step count, and a
member that stops leaves the stack (its rows and their Adam moments are sliced out: it costs nothing
more). Members of one seed and stimulus read one data stream (:func:`stream_key`): their batches, phase
offsets and spikes are drawn and computed once.

Each member stays its own run. Its network is built as a solo run builds it (the same initial weights);
it keeps its losses, best-epoch snapshot, early-stopping verdict, random streams, epoch checkpoints and
run folder, written by :class:`~fastsnn.experiment.run.RunFolder` as for ``fastsnn train``, so
``fastsnn evaluate`` and ``--resume`` work on it. A killed pack continues every member from its last
finished epoch. Only the timings differ from a solo run's (a member is charged an equal share of each
epoch of the pack it trained in, ``docs/sweeps.md``).

A step is computed in one of two ways:

- per member (the default on the CPU): each member's own network runs on its slice of the stack
  (``torch.func.functional_call``), the same operations on the same numbers as its solo run, so every
  weight, loss and metric equals the solo run's bit for bit. The pack saves the stimulus of the members
  of a stream, the optimizer calls and each run's start-up.
- wide (the default on CUDA, for the members :func:`wide_ok` accepts): one spike projection per stream
  with the members' weights side by side, (K, n x hidden); one LIF call over R x hidden neurons with
  per-neuron decays; the readouts and losses as batched products: a few kernel launches a step
  whatever R. Its sums run in another order than a solo run's, so losses and gradients agree with the
  solo run's within float rounding, and trained weights drift apart over the epochs as any change of
  summation order makes them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fastsnn import alif, lif, spike_matmul
from fastsnn.cpu.threads import using_threads
from fastsnn.nn import delay_layers
from fastsnn.ops import readout_time_weights, resolve_backend

from .config import RunConfig
from .model import IPDNetwork
from .run import RunFolder, build_model, check_run, dataset, generator, no_space_is_one_line, thread_setting
from .stimulus import Batch, IPDDataset
from .training import (FitResult, StateMismatch, batch_loss, build_optimizer, check_finite, load_state,
                       record_epoch, schedule_epoch)

__all__ = ["PackedNetwork", "train_pack", "pack_key", "stream_key", "wide_ok"]


def _layout(config: RunConfig) -> tuple:
    """The names and shapes of the network's parameters and its optimizer's groups (their parameters, learning
    rates and schedules), from a network built on the CPU."""
    net = IPDNetwork(config.stimulus, config.model, torch.Generator())
    names = {id(p): name for name, p in net.named_parameters()}
    groups = tuple((tuple(names[id(p)] for p in g["params"]), g.get("lr"), g.get("schedule"))
                   for g in net.param_groups(config.train))
    return tuple((name, tuple(p.shape)) for name, p in net.named_parameters()), groups


def pack_key(config: RunConfig) -> tuple:
    """Runs with equal keys can train in one pack: the same parameters (names and shapes) and optimizer
    groups (learning rates and their schedules included, and the epochs a schedule spans), the same batches per
    pass (batch size, set sizes, steps, validation), device, backend and threads. Anything else may differ
    between members: seed, stimulus, time constants, the neuron and its options, Dale's law, readout, dropout,
    loss, epochs (where the learning rates are constant), early stopping."""
    t = config.train
    layout = _layout(config)
    scheduled = any(schedule not in (None, "constant") for _, _, schedule in layout[1])
    return (layout, config.stimulus.steps, t.batch_size, t.train_samples, t.valid_samples, t.test_samples,
            t.validation, t.device, t.threads, config.model.backend, t.epochs if scheduled else None)


def stream_key(config: RunConfig) -> tuple:
    """Members of a pack with equal keys read one data stream: the same seed and stimulus, and alike in
    whether their training forward draws from the stream (spike dropout's masks)."""
    return config.train.seed, config.stimulus, config.model.spike_dropout > 0


# the model fields every member of a wide pack shares (the LIF call's options, the readout's form)
_WIDE_SHARED = ("neuron", "spike", "reset", "surrogate", "threshold", "beta", "detach_reset", "adapt", "dales_law",
                "readout", "backend")


def wide_ok(configs: list[RunConfig]) -> bool:
    """Whether the wide computation covers these members: LIF or ALIF hidden units with the same options and
    Dale's law or not, a sum or mean readout, and no learnt time constants, dendritic segments, delays,
    spike dropout or rate penalty (time constants, seeds and stimuli may differ)."""
    first = configs[0].model
    return all(c.model.readout in ("sum", "mean") and not c.model.learn_tau and not c.model.segments
               and not c.model.max_delay and not c.model.readout_max_delay and c.model.spike_dropout == 0 and c.train.rate_weight == 0
               and all(getattr(c.model, name) == getattr(first, name) for name in _WIDE_SHARED) for c in configs)


class _Bound(nn.Module):
    """A member's network, for ``functional_call``: ``forward(fn, *args)`` is ``fn(net, *args)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, fn, *args):
        return fn(self.net, *args)


def _after_step(net: nn.Module) -> None:
    net.after_step()


class PackedNetwork(nn.Module):
    """R networks with parameters of the same shapes, trained as one: ``stacked[i]`` holds parameter
    ``names[i]`` of every member, (R, ...).

    ``nets``: the members' networks, built as their solo runs build them (their parameters give the stack's
    first values; buffers, such as Dale's signs, stay theirs). ``configs``: the members' runs. ``streams[r]``:
    the data stream member r reads, an index into the batches :meth:`losses` takes; wide packs need each
    stream's members next to each other. ``wide``: compute the members together (module docstring; needs
    :func:`wide_ok`), else member by member.
    """

    def __init__(self, nets: list[IPDNetwork], configs: list[RunConfig], streams: list[int], wide: bool = False):
        super().__init__()
        if not (len(nets) == len(configs) == len(streams) >= 1):
            raise ValueError(f"nets, configs and streams must be as many (>= 1), got {len(nets)}, {len(configs)} "
                             f"and {len(streams)}")
        if wide and not wide_ok(configs):
            raise ValueError("wide=True needs members that wide_ok accepts")
        self.names = [name for name, _ in nets[0].named_parameters()]
        layout = [(name, p.shape) for name, p in nets[0].named_parameters()]
        for net in nets[1:]:
            if [(name, p.shape) for name, p in net.named_parameters()] != layout:
                raise ValueError(f"a pack's networks must have the same parameters, got {layout} and "
                                 f"{[(name, p.shape) for name, p in net.named_parameters()]}")
        self.stacked = nn.ParameterList(torch.stack([dict(net.named_parameters())[name].detach() for net in nets])
                                        for name in self.names)
        self.wide = wide
        self._set_members(list(nets), list(configs), list(streams))

    def _set_members(self, nets: list[IPDNetwork], configs: list[RunConfig], streams: list[int]) -> None:
        self.nets, self.configs, self.streams = nets, configs, streams
        self._bound = [_Bound(net) for net in nets]  # a plain list: their own parameters are not the pack's
        self._stepped = [r for r, net in enumerate(nets) if delay_layers(net)]  # whose after_step clamps delays
        if self.wide:
            self._wide_setup()

    def train(self, mode: bool = True) -> "PackedNetwork":
        super().train(mode)
        for net in self.nets:
            net.train(mode)
        return self

    def param_groups(self, cfg) -> list[dict]:
        """The optimizer groups of a member's solo run (``nets[0].param_groups(cfg)``) over the stack, in the
        same order, so that the pack's optimizer state indexes parameters as each member's would."""
        names = {id(p): name for name, p in self.nets[0].named_parameters()}
        stacked = dict(zip(self.names, self.stacked))
        return [{**group, "params": [stacked[names[id(p)]] for p in group["params"]]}
                for group in self.nets[0].param_groups(cfg)]

    def member_state_dict(self, r: int) -> dict:
        """Member r's ``state_dict`` as its solo network's (same keys, order and values; copies)."""
        own = dict(zip(self.names, self.stacked))
        return {key: (own[key][r] if key in own else value).detach().clone()
                for key, value in self.nets[r].state_dict().items()}

    def _views(self, r: int, tensors: list[torch.Tensor]) -> dict:
        return {f"net.{name}": t[r] for name, t in zip(self.names, tensors)}

    def losses(self, batches: list[Batch], generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """The members' losses on ``batches`` (one per stream), (R,): with ``generators`` (one per stream) the
        training loss of :func:`~fastsnn.experiment.training.batch_loss` (rate penalty, dropout masks drawn from
        the member's stream), without them the plain loss (validation)."""
        if self.wide:
            return self._wide_losses(batches)
        views = [p.unbind(0) for p in self.stacked]  # one UnbindBackward, not R full-size SelectBackwards
        out, before = [], {}
        for r, (bound, config, s) in enumerate(zip(self._bound, self.configs, self.streams)):
            b = batches[s]
            args = (b.x, b.labels, config.loss_scale)
            if generators is not None:
                g = generators[s]
                if self.training and config.model.spike_dropout:  # every member draws its masks from the
                    if s not in before:  # stream's state before the batch, as its solo run does
                        before[s] = g.get_state()
                    g.set_state(before[s])
                args += (g, config.train.rate_target_hz, config.train.rate_weight)
            out.append(functional_call(bound, self._views(r, views), (batch_loss, *args)))
        return torch.stack(out)

    @torch.no_grad()
    def after_step(self) -> None:
        """Each member's ``after_step`` (the delays' clamp) on its slice of the stack."""
        for r in self._stepped:
            functional_call(self._bound[r], self._views(r, list(self.stacked)), (_after_step,))

    def keep(self, rows: list[int]) -> None:
        """Keep only members ``rows`` (in that order), in new stacked parameters."""
        self.stacked = nn.ParameterList(p.detach()[rows].clone() for p in self.stacked)
        renumber = {s: i for i, s in enumerate(dict.fromkeys(self.streams[r] for r in rows))}
        self._set_members([self.nets[r] for r in rows], [self.configs[r] for r in rows],
                          [renumber[self.streams[r]] for r in rows])

    # the wide computation ------------------------------------------------------------------------------

    def _wide_setup(self) -> None:
        """Per-member constants as tensors: decays per neuron, readout time weights, loss scales, labels' streams."""
        first = self.configs[0]
        steps, hidden = first.stimulus.steps, first.model.hidden
        device = self.stacked[0].device

        def decay(c: RunConfig, tau_ms: float) -> float:
            return math.exp(-c.stimulus.dt_ms / tau_ms)

        self._alpha = torch.tensor([decay(c, c.model.tau_ms) for c in self.configs]).repeat_interleave(hidden)
        self._rho = torch.tensor([decay(c, c.model.tau_adapt_ms) for c in self.configs]).repeat_interleave(hidden)
        readout = [decay(c, c.model.readout_tau_ms or c.model.tau_ms) for c in self.configs]
        if len(set(readout)) == 1:  # (T,): the LIF kernel sums the spikes with them; else (R, T)
            self._time_weights = torch.tensor(readout_time_weights(readout[0], steps))
        else:
            self._time_weights = torch.tensor([readout_time_weights(a, steps) for a in readout])
        if first.model.readout == "mean":
            self._time_weights = self._time_weights / steps
        self._scale = torch.tensor([c.loss_scale for c in self.configs]).view(-1, 1, 1)
        self._label_stream = torch.tensor(self.streams)
        self._ranges = [(s, self.streams.index(s), len(self.streams) - self.streams[::-1].index(s))
                        for s in dict.fromkeys(self.streams)]
        if any(self.streams[r0:r1] != [s] * (r1 - r0) for s, r0, r1 in self._ranges):
            raise ValueError("a wide pack needs each stream's members next to each other")
        self._signs = None
        if first.model.dales_law:
            self._signs = [torch.stack([getattr(net, layer).sign for net in self.nets]) for layer in ("hidden", "readout")]
        for name in ("_alpha", "_rho", "_time_weights", "_scale", "_label_stream"):
            setattr(self, name, getattr(self, name).to(device))
        m = first.model
        self._options = dict(threshold=m.threshold, beta=m.beta, detach_reset=m.detach_reset, spike=m.spike,
                             reset=m.reset, surrogate=m.surrogate, backend=m.backend)
        self._adaptive, self._adapt = m.neuron == "alif", m.adapt
        self._weights = [self.names.index("hidden.weight"), self.names.index("readout.weight")]

    def _wide_losses(self, batches: list[Batch]) -> torch.Tensor:
        w1, w2 = (self.stacked[i] for i in self._weights)  # (R, K, H), (R, H, C)
        if self._signs is not None:
            w1, w2 = w1.abs() * self._signs[0], w2.abs() * self._signs[1]
        members, inputs, hidden = w1.shape
        h = torch.cat([spike_matmul(batches[s].x, w1[r0:r1].transpose(0, 1).reshape(inputs, (r1 - r0) * hidden),
                                    backend=self._options["backend"]) for s, r0, r1 in self._ranges], dim=2)
        batch, steps = h.shape[:2]
        summed = self._time_weights.ndim == 1  # one readout decay: the kernel sums the spikes with its weights
        neuron = dict(self._options, time_weights=self._time_weights if summed else None)
        if self._adaptive:
            out = alif(h, self._alpha, self._rho, adapt=self._adapt, **neuron)
        else:
            out = lif(h, self._alpha, **neuron)
        if summed:
            z = out.view(batch, members, hidden)
        else:  # sum_t c_{r,t} s_t per member r
            z = torch.einsum("btrh,rt->brh", out.view(batch, steps, members, hidden), self._time_weights)
        scores = torch.bmm(z.transpose(0, 1), w2) * self._scale  # (R, B, C)
        labels = torch.stack([b.labels for b in batches])[self._label_stream]  # (R, B)
        losses = F.cross_entropy(scores.flatten(0, 1), labels.flatten(), reduction="none")
        return losses.view(members, batch).mean(1)


# training a pack ------------------------------------------------------------------------------------------

class _Replay:
    """A data set whose batches are drawn at the first pass and handed out again after: the evaluation
    sets of a stream, which every member evaluates from a fresh generator of the same seed."""

    def __init__(self, data: IPDDataset):
        self.data, self.config, self._batches = data, data.config, None

    def batches(self, batch_size: int, generator: torch.Generator, shuffle: bool = True) -> Iterator[Batch]:
        if self._batches is None:
            self._batches = list(self.data.batches(batch_size, generator, shuffle))
        return iter(self._batches)


@dataclass
class _Stream:
    """The data one or more members read: their sets, and the generator of their ``train`` stream."""

    train: IPDDataset
    valid: IPDDataset | None
    generator: torch.Generator
    evaluation: tuple[_Replay, _Replay]
    inputs: Path | None = None  # the first finished member's inputs.png, the same file for the others


@dataclass
class _Member:
    index: int  # in the caller's list
    config: RunConfig
    folder: RunFolder
    net: IPDNetwork | None = None
    result: FitResult = field(default_factory=FitResult)
    optimizer: dict | None = None  # the resumed optimizer state, a solo run's
    stream: _Stream | None = None
    seconds: float = 0.0  # charged so far, earlier sessions included

    @property
    def done(self) -> bool:
        return self.result.stopped_early or self.result.epochs_run >= self.config.train.epochs


def train_pack(configs: list[RunConfig], outs: list[Path], wide: bool | None = None
               ) -> Iterator[tuple[int, dict | Exception]]:
    """Train runs ``configs`` (of one :func:`pack_key`) into their run folders ``outs`` as one pack, each
    resumed from its last finished epoch (a finished one is not trained again); yield ``(i, metrics)`` as
    run i finishes, or ``(i, error)`` where it failed (a resume file that does not fit, a non-finite loss, a
    full disk): the others go on. ``wide``: the wide computation (default: on CUDA, where :func:`wide_ok`).

    Members resumed at different epochs train as consecutive packs, one per epoch they start from.
    """
    if len({pack_key(c) for c in configs}) > 1:
        raise ValueError("a pack's runs must have one pack_key (parameters, batches, device, backend, threads)")
    with ExitStack() as stack:
        stack.enter_context(using_threads(thread_setting(configs[0].train.threads)))
        members = []
        for i, (config, out) in enumerate(zip(configs, outs)):
            try:
                check_run(config)
                with no_space_is_one_line(out):
                    folder = RunFolder(out, config, stack, resume=True)
            except (ValueError, OSError) as err:
                yield i, err
                continue
            if folder.metrics is not None:
                yield i, folder.metrics
            else:
                members.append(_Member(i, config, folder, seconds=folder.before))
        for _, group in itertools.groupby(sorted(members, key=_epochs_done), key=_epochs_done):
            group = list(group)
            yield from _Pack(group, check_run(group[0].config), wide).run()


def _epochs_done(member: _Member) -> int:
    return len(member.folder.state["result"]["history"]) if member.folder.state is not None else 0


def _stream_identity(member: _Member) -> tuple:
    """A member's stream: its :func:`stream_key` and the state its ``train`` generator resumes from."""
    state = member.folder.state
    saved = None if state is None else hashlib.sha1(state["generator"].numpy().tobytes()).hexdigest()
    return stream_key(member.config), saved


class _Pack:
    """Members at one epoch, trained together until each stops; :meth:`run` yields them as they finish."""

    def __init__(self, members: list[_Member], device: torch.device, wide: bool | None):
        self.members, self.device, self.wide = members, device, wide
        self.backend = resolve_backend(members[0].config.model.backend, device)
        self.clock = time.perf_counter()

    def run(self) -> Iterator[tuple[int, dict | Exception]]:
        ready = []
        for m in self.members:
            try:
                self._load(m)
            except StateMismatch as err:
                yield m.index, m.folder.mismatch(err)
            else:
                ready.append(m)
        streams: dict[tuple, list[_Member]] = {}
        for m in ready:
            streams.setdefault(_stream_identity(m), []).append(m)
        self.members = [m for group in streams.values() for m in group]  # each stream's members together
        for group in streams.values():
            self._open_stream(group)
        yield from self._finish([m for m in self.members if m.done])
        self.members = [m for m in self.members if not m.done]
        if not self.members:
            return
        self._tick()
        wide = self.device.type == "cuda" if self.wide is None else self.wide
        configs = [m.config for m in self.members]
        self.net = PackedNetwork([m.net for m in self.members], configs, self._stream_indices(),
                                 wide and wide_ok(configs))
        self.optimizer, self.schedules = build_optimizer(self.net, self.members[0].config.train)
        if self.members[0].optimizer is not None:
            self.optimizer.load_state_dict(_stacked_optimizer_state([m.optimizer for m in self.members]))
        for epoch in itertools.count(self.members[0].result.epochs_run):
            ended = yield from self._epoch(epoch)
            if ended:
                self._drop(ended)
            if not self.members:
                return

    def _load(self, m: _Member) -> None:
        """Build member m's network as its solo run does, and load its resumed state."""
        m.net = build_model(m.config, self.device)
        if m.folder.state is None:
            return
        probe, _ = build_optimizer(m.net, m.config.train)
        m.result = load_state(m.folder.state, m.net, probe, torch.Generator())  # raises as a solo run would
        m.optimizer = probe.state_dict()

    def _open_stream(self, members: list[_Member]) -> None:
        c = members[0].config
        tc, state = c.train, members[0].folder.state
        train, valid, test = (dataset(c, which, tc.seed, self.device) if which != "valid" or tc.validation else None
                              for which in ("train", "valid", "test"))
        g = generator(tc.seed, "train")
        if state is not None:
            g.set_state(state["generator"])
        stream = _Stream(train, valid, g, (_Replay(train), _Replay(test)))
        for m in members:
            m.stream = stream

    def _streams(self) -> list[_Stream]:
        return list({id(m.stream): m.stream for m in self.members}.values())

    def _stream_indices(self) -> list[int]:
        index = {id(s): i for i, s in enumerate(self._streams())}
        return [index[id(m.stream)] for m in self.members]

    def _tick(self) -> None:
        """Charge the time since the last tick to the members in training, in equal shares."""
        now = time.perf_counter()
        for m in self.members:
            m.seconds += (now - self.clock) / len(self.members)
        self.clock = now

    def _pass(self, training: bool) -> list[float]:
        """One pass of every stream over its training (or validation) set: the members' mean batch losses."""
        streams = self._streams()
        tc = self.members[0].config.train
        sets = [s.train if training else s.valid for s in streams]
        per_batch = []
        for batches in zip(*(data.batches(tc.batch_size, s.generator) for data, s in zip(sets, streams)), strict=True):
            if training:
                losses = self.net.losses(list(batches), [s.generator for s in streams])
                self.optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                self.optimizer.step()
                self.net.after_step()
            else:
                with torch.no_grad():
                    losses = self.net.losses(list(batches))
            per_batch.append(losses.detach())
        table = torch.stack(per_batch)  # (batches, R); a column is what a solo run's _pass averages
        return [table[:, r].contiguous().mean().item() for r in range(len(self.members))]

    def _epoch(self, epoch: int):
        """Train every member one epoch, record and save it; yield the members that end; return them."""
        start = time.perf_counter()
        schedule_epoch(self.optimizer, self.schedules, epoch, self.members[0].config.train.epochs)
        for m in self.members:
            m.net.start_epoch(epoch, m.config.train)
        self.net.train()
        losses = self._pass(training=True)
        self.net.eval()
        validation = self.members[0].config.train.validation
        val_losses = self._pass(training=False) if validation else [None] * len(self.members)
        seconds = (time.perf_counter() - start) / len(self.members)
        failed = {}
        for r, m in enumerate(self.members):
            try:
                check_finite(epoch, losses[r], val_losses[r])
            except FloatingPointError as err:
                failed[r] = err
                continue
            record_epoch(m.result, m.config.train, epoch, losses[r], val_losses[r], seconds,
                         lambda r=r: self.net.member_state_dict(r))
        self._tick()
        optimizer = self.optimizer.state_dict()
        for r, m in enumerate(self.members):
            if r in failed:
                continue
            state = {"model": self.net.member_state_dict(r), "optimizer": _member_optimizer_state(optimizer, r),
                     "generator": m.stream.generator.get_state(), "result": vars(m.result)}
            try:
                with no_space_is_one_line(m.folder.out):
                    m.folder.save_epoch(state, m.seconds)
            except ValueError as err:
                failed[r] = err
        ended = [r for r, m in enumerate(self.members) if r in failed or m.done]
        for r in ended:
            if r in failed:
                yield self.members[r].index, failed[r]
        yield from self._finish([self.members[r] for r in ended if r not in failed], rows=True)
        return ended

    def _finish(self, members: list[_Member], rows: bool = False) -> Iterator[tuple[int, dict | Exception]]:
        """Restore each member's kept weights into its network, evaluate it and write its run folder."""
        for m in members:
            if rows:  # its final weights, from the stack
                m.net.load_state_dict(self.net.member_state_dict(self.members.index(m)))
            result = m.result
            if result.best_state is not None:
                m.net.load_state_dict(result.best_state)
                result.restored_best = True
            start, train_seconds = time.perf_counter(), m.seconds
            train_set, test_set = m.stream.evaluation
            try:
                with no_space_is_one_line(m.folder.out):
                    metrics = m.folder.finish(m.net, result, self.device, self.backend, train_seconds,
                                              lambda t=train_seconds, s=start: t + time.perf_counter() - s,
                                              train_set, test_set, m.stream.inputs)
            except ValueError as err:
                yield m.index, err
                continue
            m.stream.inputs = m.stream.inputs or m.folder.out / "inputs.png"
            self.clock += time.perf_counter() - start  # a member's finish is its own time, not the pack's
            yield m.index, metrics

    def _drop(self, rows: list[int]) -> None:
        """Take members ``rows`` out of the stack and the optimizer (their Adam moments with them)."""
        keep = [r for r in range(len(self.members)) if r not in rows]
        self.members = [self.members[r] for r in keep]
        if not keep:
            return
        old = self.optimizer
        self.net.keep(keep)
        self.optimizer, _ = build_optimizer(self.net, self.members[0].config.train)
        for before, after in zip([p for g in old.param_groups for p in g["params"]],
                                 [p for g in self.optimizer.param_groups for p in g["params"]]):
            self.optimizer.state[after] = {key: value if key == "step" else value[keep].clone()
                                           for key, value in old.state[before].items()}


def _member_optimizer_state(state: dict, r: int) -> dict:
    """Member r's part of the pack's optimizer ``state_dict``: a solo run's (each moment's row r)."""
    return {"state": {i: {key: value.clone() if key == "step" else value[r].clone() for key, value in s.items()}
                      for i, s in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


def _stacked_optimizer_state(states: list[dict]) -> dict:
    """The pack's optimizer ``state_dict`` from its members' (solo runs' ones, of one step count)."""
    first = states[0]
    stacked = {}
    for i, s in first["state"].items():
        steps = {float(other["state"][i]["step"]) for other in states}
        if len(steps) > 1:
            raise StateMismatch(f"members resumed at different optimizer steps {sorted(steps)}")
        stacked[i] = {key: value.clone() if key == "step" else torch.stack([other["state"][i][key] for other in states])
                      for key, value in s.items()}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}
