"""The LIF family side by side: each member's forward + backward against the seed's LIF, in one run.

    python -m bench.family [--device cpu|cuda] [--repeats 30]

Times ``fastsnn.lif`` / ``fastsnn.alif`` (input gradient, per-neuron alpha and rho gradients) at
(B, T, N) = (64, 100, 30) and (64, 100, 1024), members interleaved round by round
(``bench.common.alternate``), and writes ``OUT/family-<device>-<cpu>.{json,md}`` (``--out``, default runs/bench). The
issue's goal: ALIF fwd+bwd <= 1.5x the LIF's.
"""

from __future__ import annotations

import argparse

import torch

import fastsnn

from .common import add_out_option, alternate, machine, save, slug

SHAPES = ((64, 100, 30), (64, 100, 1024))
MEMBERS = {
    "lif (seed)": dict(),
    "lif same_step subtract": dict(spike="same_step", reset="subtract"),
    "lif same_step subtract_next atan": dict(spike="same_step", reset="subtract_next", surrogate="atan"),
    "alif delayed zero": dict(rho=0.95),
    "alif delayed subtract": dict(rho=0.95, reset="subtract"),
    "alif same_step subtract": dict(rho=0.95, spike="same_step", reset="subtract"),
}


def candidate(shape, options: dict, device: str):
    B, T, N = shape
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(B, T, N, generator=g) * 0.6 + 0.3).to(device).requires_grad_()
    alpha = torch.full((N,), 0.8187, device=device, requires_grad=True)
    rho = options.pop("rho", None)
    rho_t = torch.full((N,), rho, device=device, requires_grad=True) if rho is not None else None
    grad = torch.randn(B, T, N, generator=g).to(device)

    def run():
        h.grad = alpha.grad = None
        if rho_t is not None:
            rho_t.grad = None
        s = fastsnn.alif(h, alpha, rho_t, **options) if rho_t is not None else fastsnn.lif(h, alpha, **options)
        s.backward(grad)
    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=30)
    add_out_option(p, "family-<device>-<cpu>.{json,md}")
    args = p.parse_args(argv)
    info = machine()
    rows = []
    for shape in SHAPES:
        timed = alternate({name: candidate(shape, dict(opts), args.device) for name, opts in MEMBERS.items()},
                          args.repeats, args.device, block=3)
        base = timed["lif (seed)"]["median_s"]
        for name, t in timed.items():
            rows.append({"shape": list(shape), "member": name, "median_ms": 1e3 * t["median_s"],
                         "q20_ms": 1e3 * t["q20_s"], "q80_ms": 1e3 * t["q80_s"], "vs_lif": t["median_s"] / base})
    where = info.get("gpu", info["cpu"])
    lines = [f"# LIF family, forward + backward ({args.device}: {where}; torch {info['torch']}, "
             f"{info['threads']} threads, {info['date']})", "",
             f"`python -m bench.family --device {args.device} --repeats {args.repeats}`; medians of interleaved "
             "rounds (3 calls per round), q20-q80 in brackets.", "",
             "| (B, T, N) | member | median ms | q20-q80 ms | / seed LIF |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {tuple(r['shape'])} | {r['member']} | {r['median_ms']:.3f} | "
                     f"{r['q20_ms']:.3f}-{r['q80_ms']:.3f} | {r['vs_lif']:.2f}x |")
    name = f"family-{args.device}-{slug(where)}"
    save(args.out, name, {"machine": info, "device": args.device, "rows": rows})
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"rows": rows}


if __name__ == "__main__":
    main()
