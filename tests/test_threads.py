"""fastsnn.cpu.threads: the automatic thread count follows the free cores, and a run's numbers do not
depend on its thread count (so following the load changes nothing but speed)."""

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from fastsnn.experiment.config import RunConfig
from fastsnn.cpu import threads
from fastsnn.experiment.run import build_model, dataset, generator
from fastsnn.experiment.training import batch_loss

STAT = """cpu  300 0 100 1000 50 0 0 0 0 0
cpu0 100 0 50 500 25 0 0 7 0 0
cpu1 {user} 0 50 500 25 0 0 0 0 0
intr 12345
"""


def test_busy_seconds_reads_the_cpus_asked_for(tmp_path):
    path = tmp_path / "stat"
    path.write_text(STAT.format(user=200))
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert threads.busy_seconds([0], str(path)) == pytest.approx((100 + 50 + 7) * tick)  # steal counts as busy
    assert threads.busy_seconds([0, 1], str(path)) == pytest.approx((157 + 250) * tick)
    assert threads.busy_seconds([0], str(tmp_path / "missing")) is None


class Scripted(threads.AutoThreads):
    """AutoThreads on 4 CPUs whose readings are (seconds, cores other processes keep busy) pairs."""

    def __init__(self, loads):
        self.loads = iter(loads)
        self.clock = self.busy = 0.0
        super().__init__(interval=0.0)
        self.cpus, self.share, self.maximum, self.threads = [0, 1, 2, 3], 1.0, 4, 4

    def _reading(self):
        seconds, others = next(self.loads, (1.0, 0.0))
        self.clock += seconds
        self.busy += seconds * others
        return self.clock, self.busy, 0.0


def test_auto_threads_drops_at_once_and_rises_when_two_readings_agree():
    before = torch.get_num_threads()
    try:
        auto = Scripted([(1, 0), (1, 2.2), (1, 3.0), (1, 0.0), (1, 3.0), (1, 1.0), (1, 1.0), (1, 0.2), (1, 0.2)])
        seen = [auto.poll() for _ in range(8)]
        # free cores 1.8 -> 2; 1 -> 1; 4 once (no rise); 1; 3, 3 -> rises on the second; 3.8, 3.8 -> 4
        assert seen == [2, 1, 1, 1, 1, 3, 3, 4]
        assert torch.get_num_threads() == 4 and auto.lowest == 1
    finally:
        torch.set_num_threads(before)


def test_using_threads_restores_the_count_and_mode():
    before = torch.get_num_threads()
    with threads.using_threads(1):
        assert torch.get_num_threads() == 1 and threads.auto_threads() is None
        with threads.using_threads("auto") as auto:
            assert threads.auto_threads() is auto and auto.maximum == 1
        assert threads.auto_threads() is None
    assert torch.get_num_threads() == before
    cpus = len(threads._cores())
    for bad in (0, cpus + 1, 100000, True, 2.0):
        with pytest.raises(ValueError, match=rf"^threads must be 'auto' or an integer from 1 to {cpus} \(the CPUs this "
                                             rf"process may run on\), got {bad!r}$"):
            threads.set_threads(bad)
    assert torch.get_num_threads() == before


def test_auto_threads_leaves_cores_that_other_processes_keep_busy():
    """With every CPU of this process kept busy by spinning processes, the automatic count falls to 1."""
    code = ("import time, torch; torch.set_num_threads(2); from fastsnn.cpu import threads\n"
            "threads.set_threads('auto'); auto = threads.auto_threads(); auto.interval = 0.1\n"
            "end = time.monotonic() + 20\n"
            "while auto.poll() > 1 and time.monotonic() < end: time.sleep(0.02)\n"
            "print(auto.maximum, auto.threads, torch.get_num_threads())")
    cpus = len(threads._cores())
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(0.5)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert out.returncode == 0, out.stderr
    maximum, now, torch_threads = map(int, out.stdout.split())
    assert (now, torch_threads) == (1, 1), f"{maximum} threads at most, {now} with all CPUs busy"


VARIANTS = {"seed": {}, "dale": dict(dales_law=True), "hidden-128": dict(hidden=128), "alif": dict(neuron="alif"),
            "delays": dict(max_delay=8), "spiking-readout": dict(readout="spiking")}


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_steps_are_the_same_bits_with_1_and_2_threads(variant):
    """Losses and every gradient of four training steps of the CPU backend, at 1 and at 2 threads."""
    model = replace(RunConfig().model, backend="cpu", **VARIANTS[variant])
    config = replace(RunConfig(), model=model, train=replace(RunConfig().train, train_samples=256))

    if len(threads._cores()) < 2:
        pytest.skip("needs 2 CPUs")

    def steps(n_threads):
        with threads.using_threads(n_threads):
            net = build_model(config, torch.device("cpu"))
            opt = torch.optim.Adam(net.parameters(), lr=5e-3)
            stream = generator(0, "train")
            out = []
            for batch in dataset(config, "train", 0).batches(64, stream):
                loss = batch_loss(net, batch.x, batch.labels, 1.0)
                opt.zero_grad()
                loss.backward()
                out.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
                opt.step()
            return out

    for step, ((loss1, grads1), (loss2, grads2)) in enumerate(zip(steps(1), steps(2))):
        assert torch.equal(loss1, loss2), f"step {step}: loss {loss1.item()} with 1 thread, {loss2.item()} with 2"
        for i, (g1, g2) in enumerate(zip(grads1, grads2)):
            assert torch.equal(g1, g2), f"step {step}, parameter {i}: max difference {(g1 - g2).abs().max()}"
