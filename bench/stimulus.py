"""Regenerating the 4096-sample training set once (one epoch's worth): the seed's numpy code vs fastsnn.

    python -m bench.stimulus [--repeats 5] [--anf-per-ear 100]

The seed rebuilds a float64 (samples, T, inputs) phase array and converts the
spikes to a torch tensor every epoch; fastsnn regenerates each batch from
per-sample noise keys. Prints medians and writes OUT/stimulus-anf<N>-cpu.json (``--out``, default runs/bench).
"""

from __future__ import annotations

import argparse

import torch

from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset

from . import seed_baseline
from .common import add_out_option, alternate, machine, save


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--anf-per-ear", type=int, default=100)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-seed", action="store_true",
                   help="fastsnn only (the seed's code needs ~3 x 6.5 GB of float64 at 1000 fibres per ear)")
    seed_baseline.add_option(p)
    add_out_option(p, "stimulus-anf<N>-cpu.json")
    args = p.parse_args(argv)

    config = StimulusConfig(anf_per_ear=args.anf_per_ear)
    data = IPDDataset.random(args.samples, config, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)

    def fastsnn_pass():
        for batch in data.batches(args.batch_size, gen):
            batch.x.sum()  # touch the data

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
