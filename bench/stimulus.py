"""Regenerating the 4096-sample training set once (one epoch's worth): the seed's numpy code vs fastsnn.

    python -m bench.stimulus [--repeats 5] [--anf-per-ear 100]
    python -m bench.stimulus --check-sine

The seed rebuilds a float64 (samples, T, inputs) phase array and converts the
spikes to a torch tensor every epoch; fastsnn regenerates each batch from
per-sample noise keys. Prints medians and writes OUT/stimulus-anf<N>-cpu.json (``--out``, default runs/bench).

``--check-sine``: the exhaustive check behind the CPU stimulus kernel's shortcut
(:func:`fastsnn.cpu.torch_sin.bracket`): for every float32 x with |x| <= BRACKETED (2.3 billion
values), torch's sine (MKL's ``vmsSin``, the function torch calls) lies within ``bracket(x)``.
Prints the count outside (must be 0) and writes OUT/sine-bracket-<cpu>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

from fastsnn.cpu import torch_sin
from fastsnn.cpu.torch_sin import bracket, mkl_local_threads, vsin
from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset

from . import seed_baseline
from .common import add_out_option, alternate, cpu_name, machine, save, slug


@njit(parallel=True)
def _outside(first: int, count: int, lanes: int) -> int:
    """How many float32 of bit patterns first .. first + count - 1 have torch's sine outside their bracket."""
    per = -(-count // lanes)
    bad = np.zeros(lanes, np.int64)
    for lane in prange(lanes):
        a = first + lane * per
        b = min(first + count, a + per)
        if b <= a:
            continue
        x = np.arange(a, b).astype(np.int32).view(np.float32)
        sine = np.empty_like(x)
        threads = mkl_local_threads(1)
        vsin(x, sine, 0, b - a)
        mkl_local_threads(threads)
        for i in range(b - a):
            lo, hi = bracket(x[i])
            bad[lane] += not (lo <= sine[i] <= hi)
    return bad.sum()


def check_sine(out: Path, chunk: int = 1 << 26) -> dict:
    """Every float32 of [-BRACKETED, BRACKETED], both signs, through :func:`_outside`."""
    top = int(np.float32(torch_sin.BRACKETED).view(np.int32)) + 1  # bit patterns 0 .. top - 1: [0, BRACKETED]
    start, outside, checked = time.perf_counter(), 0, 0
    for sign in (0, -2**31):
        for first in range(0, top, chunk):
            count = min(chunk, top - first)
            outside += int(_outside(first | sign, count, 64))
            checked += count
        print(f"sign {'-' if sign else '+'}: {checked} values checked, {outside} outside", flush=True)
    result = {"bracketed": float(torch_sin.BRACKETED), "values": checked, "outside": outside,
              "seconds": time.perf_counter() - start, "machine": machine()}
    print(f"torch's sine outside bracket(): {outside} of {checked} float32 in [-{torch_sin.BRACKETED:g}, "
          f"{torch_sin.BRACKETED:g}] (must be 0)")
    save(out, f"sine-bracket-{slug(cpu_name())}", result)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--anf-per-ear", type=int, default=100)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--check-sine", action="store_true", help="only the exhaustive check of the sine's bounds")
    p.add_argument("--no-seed", action="store_true",
                   help="fastsnn only (the seed's code needs ~3 x 6.5 GB of float64 at 1000 fibres per ear)")
    seed_baseline.add_option(p)
    add_out_option(p, "stimulus-anf<N>-cpu.json")
    args = p.parse_args(argv)
    if args.check_sine:
        if not torch_sin.available():
            p.error("--check-sine needs torch with MKL (fastsnn.cpu.torch_sin.available())")
        return check_sine(args.out)

    config = StimulusConfig(anf_per_ear=args.anf_per_ear)
    data = IPDDataset.random(args.samples, config, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)

    def fastsnn_pass():
        for batch in data.batches(args.batch_size, gen):
            batch.x.bits.sum()  # touch the data (the spikes as the network takes them: bits)

    candidates = {"fastsnn": fastsnn_pass}
    if not args.no_seed and seed_baseline.use(p, args.seed_script, "the seed's timing and speedup"):
        seed = seed_baseline.load(ANF_PER_EAR=args.anf_per_ear)
        ipds, poisson = seed.random_ipd_input_signal(args.samples, tensor=False)
        candidates["seed"] = lambda: seed.spikes_from_fixed_idp_input_signal(ipds, poisson)
        seed_bytes = poisson.nbytes
    results = alternate(candidates, args.repeats)
    rows = [f"{'':10s} {'median s':>9s} {'q20':>7s} {'q80':>7s}"]
    for name, r in results.items():
        rows.append(f"{name:10s} {r['median_s']:9.3f} {r['q20_s']:7.3f} {r['q80_s']:7.3f}")
    held = sum(t.numel() * t.element_size() for t in vars(data).values() if isinstance(t, torch.Tensor))
    payload = {"workload": vars(args), "results": results, "machine": machine(), "fastsnn_set_bytes": held}
    if "seed" in results:
        payload["speedup"] = results["seed"]["median_s"] / results["fastsnn"]["median_s"]
        payload["seed_set_bytes"] = seed_bytes
        rows.append(f"speedup (seed / fastsnn medians): {payload['speedup']:.1f}x; memory per set: seed "
                    f"{seed_bytes / 2**20:.0f} MiB of frozen noise, fastsnn {held / 2**20:.2f} MiB")
    print("\n".join(rows))
    save(args.out, f"stimulus-anf{args.anf_per_ear}-cpu", payload)
    return payload


if __name__ == "__main__":
    main()
