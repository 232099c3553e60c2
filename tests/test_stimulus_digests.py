"""The stimulus' spikes are the same bits across versions: digests of whole passes, committed.

``tests/stimulus-digests.json`` holds, for a range of stimulus configurations (every phase-offset mode,
phase jitter, fibre counts, step counts and sizes, every envelope power the fast kernels take and one
they do not, angles beyond the sine's short range reduction, partial last batches) and seeds, the
SHA-256 of two passes of ``IPDDataset.batches``: every batch's 0/1 spikes (as bytes) and labels.
They were written by the torch implementation that every later one must equal (the spikes of
fastsnn 0.1.0, before the fused kernels); the kernels (``"auto"``: numba on the CPU) and the torch
definition (``"reference"``) are both checked against them, at 1 and 2 threads. A change of the
spikes fails here unless the file is rewritten on purpose, with a note saying why. Written by
``python tests/test_stimulus_digests.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset

DIGESTS = Path(__file__).with_name("stimulus-digests.json")

# name: (stimulus config, samples, batch size)
CASES = {
    "default": ({}, 200, 64),
    "per_batch-jitter": (dict(phase_offset="per_batch", phase_jitter=0.3, anf_per_ear=37, steps=50, dt_ms=0.5),
                         100, 32),
    "fixed-power3": (dict(phase_offset="fixed", phase_jitter=0.1, envelope_power=3.0, anf_per_ear=8, steps=21,
                          tone_hz=35.0), 50, 7),
    "power1.5": (dict(envelope_power=1.5, steps=33, dt_ms=2.0, rate_max_hz=400.0), 40, 16),
    "power0.5": (dict(envelope_power=0.5, anf_per_ear=5, rate_max_hz=900.0), 30, 8),
    "power1": (dict(envelope_power=1.0, anf_per_ear=3, steps=7), 30, 9),
    "long-angles": (dict(steps=400, tone_hz=90.0, anf_per_ear=4), 20, 6),
}
SEEDS = (0, 1, 2)


def digest(name: str, seed: int, backend: str = "auto") -> str:
    """SHA-256 of two passes over the case's set (its own stream ``seed``, the passes' stream ``seed + 100``)."""
    config, samples, batch_size = CASES[name]
    data = IPDDataset.random(samples, StimulusConfig(**config), torch.Generator().manual_seed(seed), backend=backend)
    generator = torch.Generator().manual_seed(seed + 100)
    h = hashlib.sha256()
    for _ in range(2):
        for batch in data.batches(batch_size, generator):
            h.update(batch.x.unpack().to(torch.uint8).numpy().tobytes())
            h.update(batch.labels.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_spikes_are_the_committed_bits(name, backend, threads):
    expected = json.loads(DIGESTS.read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = {str(seed): digest(name, seed, backend) for seed in SEEDS}
    finally:
        torch.set_num_threads(before)
    assert got == expected[name]


if __name__ == "__main__":
    DIGESTS.write_text(json.dumps({name: {str(seed): digest(name, seed) for seed in SEEDS} for name in CASES},
                                  indent=1) + "\n")
    print(f"wrote {DIGESTS}")
