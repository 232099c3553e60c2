"""A/B of the seed network's training step: this working tree against a git revision, side by side.

    python -m bench.ab_step --base HEAD~3 [--work REV] [--rounds 8 --steps 20 --threads 2]

Exports ``--base`` (and ``--work``, else this working tree is used) into a temporary folder, then alternates fresh processes of the two trees, one
per round each (numba's on-disk cache makes every round after the first start warm); each process
times ``--steps`` training steps (forward, backward, Adam) of the seed network on seed-density
Poisson input after two untimed ones and prints its median. Prints the median over rounds of each
tree and their ratio, with the CPU's name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .common import cpu_name

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, statistics
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[3]))
from fastsnn.experiment.config import ModelConfig, StimulusConfig
from fastsnn.experiment.model import IPDNetwork
stimulus, model = StimulusConfig(), ModelConfig(backend="cpu")
g = torch.Generator().manual_seed(0)
net = IPDNetwork(stimulus, model, generator=g)
opt = torch.optim.Adam(net.parameters(), lr=5e-3)
x = (torch.rand(64, stimulus.steps, stimulus.inputs, generator=g) < 0.22).float()
y = torch.randint(0, stimulus.num_classes, (64,), generator=g)
def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(0.01 * net(x), y)
    loss.backward()
    opt.step()
for _ in range(2):
    step()
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
print(json.dumps({"fastsnn": __import__("fastsnn").__file__, "median_ms": 1e3 * statistics.median(times)}))
"""


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` (fastsnn/ with kernels/ as fastsnn/kernels, as the package installs it) under ``into``."""
    into.mkdir(parents=True)
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "fastsnn", "kernels"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (into / "kernels").rename(into / "fastsnn" / "kernels")
    return into


def run(tree: Path, steps: int, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(steps), str(threads)], check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["fastsnn"].startswith(str(tree)):
        raise RuntimeError(f"imported {result['fastsnn']}, not the tree under test {tree}")
    return result["median_ms"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD, HEAD~3)")
    p.add_argument("--work", default=None, help="git revision to measure (default: this working tree)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": export(args.base, Path(tmp) / "base"),
                 "work": export(args.work, Path(tmp) / "work") if args.work else ROOT}
        times = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                times[name].append(run(tree, args.steps, args.threads))
    base, work = statistics.median(times["base"]), statistics.median(times["work"])
    print(f"CPU: {cpu_name()}, {args.threads} threads; seed training step, median of {args.rounds} rounds x "
          f"{args.steps} steps")
    print(f"base ({args.base}): {base:.3f} ms  {[round(t, 3) for t in times['base']]}")
    print(f"work ({args.work or 'this tree'}): {work:.3f} ms  {[round(t, 3) for t in times['work']]}")
    print(f"work / base = {work / base:.3f}")


if __name__ == "__main__":
    main()
