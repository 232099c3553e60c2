"""Regenerating the 4096-sample training set once (one epoch's worth): the seed's numpy code vs fastsnn.

    python -m bench.stimulus [--repeats 5] [--anf-per-ear 100]
    python -m bench.stimulus --check-sine

The seed rebuilds a float64 (samples, T, inputs) phase array and converts the
spikes to a torch tensor every epoch; fastsnn regenerates each batch from
per-sample noise keys. Prints medians and writes OUT/stimulus-anf<N>-cpu.json (``--out``, default runs/bench).

``--check-sine``: the exhaustive check behind the CPU stimulus kernel's band
(:func:`fastsnn.experiment.stimulus_cpu.margin`): for every float32 x with |x| <= 2^24 (2.5 billion
values), torch's sine (MKL's ``vmsSin``, the function torch calls) against float64's. Prints the largest
error in units of 2^-24 (the band allows ``_SINE_ULPS``) and writes OUT/sine-error-<cpu>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

from fastsnn.cpu import torch_sin
from fastsnn.cpu.torch_sin import mkl_local_threads, vsin
from fastsnn.experiment import stimulus_cpu
from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset

from . import seed_baseline
from .common import add_out_option, alternate, cpu_name, machine, save, slug


@njit(parallel=True)
def _largest_error(first: int, count: int, lanes: int) -> float:
    """The largest ``|torch.sin(x) - sin(x)|`` over the float32 x of bit patterns first .. first + count - 1."""
    per = -(-count // lanes)
    worst = np.zeros(lanes)
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
            worst[lane] = max(worst[lane], abs(np.float64(sine[i]) - np.sin(np.float64(x[i]))))
    return worst.max()


def check_sine(out: Path, chunk: int = 1 << 26) -> dict:
    """Every float32 of [-2^24, 2^24], both signs, through :func:`_largest_error`."""
    top = int(np.float32(2.0**24).view(np.int32)) + 1  # bit patterns 0 .. top - 1: [0, 2^24]
    start, worst, checked = time.perf_counter(), 0.0, 0
    for sign in (0, -2**31):
        for first in range(0, top, chunk):
            count = min(chunk, top - first)
            worst = max(worst, float(_largest_error(first | sign, count, 64)))
            checked += count
        print(f"sign {'-' if sign else '+'}: {checked} values checked, largest error {worst / 2.0**-24:.3f} x 2^-24",
              flush=True)
    allowed = stimulus_cpu._SINE_ULPS
    result = {"range": 2.0**24, "values": checked, "largest_error_units": worst / 2.0**-24, "allowed_units": allowed,
              "seconds": time.perf_counter() - start, "machine": machine()}
    print(f"torch's sine vs float64's over {checked} float32 in [-2^24, 2^24]: largest error {worst / 2.0**-24:.3f} "
          f"x 2^-24 (the stimulus kernel's band allows {allowed:g})")
    save(out, f"sine-error-{slug(cpu_name())}", result)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--anf-per-ear", type=int, default=100)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--check-sine", action="store_true", help="only the exhaustive check of the sine's error")
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
