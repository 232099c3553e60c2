"""Every Triton kernel of the package compiles for sm_80 and sm_90, without a GPU.

The interpreter (TRITON_INTERPRET=1, which the rest of the suite runs under) checks the kernels'
arithmetic, not that Triton can compile them. Here ``tests/gpu_compile.py`` records, through the
launchers themselves, every specialization they can launch and compiles it offline for both
architectures (every flag pattern x neuron variant x input dtype through Triton's front end and
down to a cubin, and every block shape), in a subprocess without the interpreter. A test fails on a compile error, a register spill, an FMA in a time loop's forward
kernel (they launch with ``enable_fp_fusion=False``: ``docs/kernel_contract.md``, Floating-point
contraction on the GPU), a launch that leaves FP fusion to Triton's default (which changes in
Triton 3.10), a kernel no launch reaches, or a specialized T.

Cost, measured on the 2 shared cores this was written on (load average 7-9 from other work):
without ``slow`` (the default set, ~70 kernels) ~45 s from a cold Triton cache; the whole module
(the full set, which contains the default set: one subprocess) ~2 min 50 s cold, ~25 s warm.
The Triton cache (``TRITON_CACHE_DIR`` or ``~/.triton/cache``) persists between runs; a front-end
pass is cached with it, an error is not. ``python tests/gpu_compile.py`` regenerates the
committed table ``tests/gpu-compile.md`` from the full set.
"""

import json
import os

import pytest
import torch

pytest.importorskip("triton")

import gpu_compile  # noqa: E402  (tests/gpu_compile.py: pytest puts tests/ on sys.path)

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and torch.cuda.is_available(),
    reason="on a GPU (bench/gpu_check) the kernels run for real; this offline check is for machines without one")

JOBS = max(1, min(os.cpu_count() or 1, 8))


@pytest.fixture(scope="module")
def compiled(request):
    """One subprocess: the full set when a slow test of this module runs (it contains the default set),
    else the default set."""
    slow = any(item.module is request.module and item.get_closest_marker("slow") for item in request.session.items)
    return gpu_compile.compile_in_subprocess("full" if slow else "default", jobs=JOBS)


@pytest.fixture(scope="module")
def default_set(compiled):
    return gpu_compile.subset(compiled, "default")


@pytest.fixture(scope="module")
def full_set(compiled):
    return compiled if compiled["set"] == "full" else gpu_compile.compile_in_subprocess("full", jobs=JOBS)


def report(problems):
    return f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def test_default_set_compiles_without_spills(default_set):
    rows = default_set["rows"]
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}
    problems = gpu_compile.problems(default_set)
    assert not problems, report(problems)


def test_every_kernel_is_reached_and_T_is_not_specialized(default_set):
    """A kernel added to kernels/ without a launch in gpu_compile.LAUNCHERS fails here; so does a
    kernel that would compile once per T (do_not_specialize=["T"] missing, or T turned constexpr)."""
    assert default_set["kernels_in_package"], "no @triton.jit kernel found in fastsnn.kernels"
    assert default_set["kernels_reached"] == default_set["kernels_in_package"]
    assert default_set["T_not_do_not_specialize"] == []
    assert default_set["record_problems"] == []


UNFUSED, FUSED = set(gpu_compile.UNFUSED), set(gpu_compile.FUSED)  # docs/kernel_contract.md
SINE_FMA = set(gpu_compile.SINE_FMA)  # kernels of UNFUSED whose FMAs are tl.sin's own (libdevice, as torch's sin)


def test_time_loop_forwards_do_not_contract_to_fma(default_set):
    """The time loops' forward kernels launch with enable_fp_fusion=False, so alpha * v + h rounds as the
    reference's separate multiply and add: no fma.f32 in their PTX nor FFMA in their SASS (sampled); the
    stimulus kernel launches so too, its only FMAs being its sine's. Their backward kernels launch fused; that their PTX has fma shows that the check can see one.
    (gpu_compile.problems has the same check on the full set, and that every launch passes the option.)"""
    ok = [r for r in default_set["rows"] if "error" not in r]
    fwd = [r for r in ok if r["kernel"] in UNFUSED]
    bwd = [r for r in ok if r["kernel"] in FUSED]
    assert {r["kernel"] for r in fwd} == UNFUSED and {r["kernel"] for r in bwd} == FUSED, "kernels missing (errors?)"
    assert all(not r["enable_fp_fusion"] for r in fwd) and all(r["enable_fp_fusion"] for r in bwd)
    fused = [f"{r['kernel']} [{r['constexprs']}] {r['dtype']} {r['block']} {r['arch']}: {r['ptx_fma']} fma"
             for r in fwd if (r["ptx_fma"] or r["sass_ffma"]) and r["kernel"] not in SINE_FMA]
    assert not fused, "\n".join(fused)
    assert {(r["kernel"], r["arch"]) for r in fwd if r["sass_ffma"] is not None} == \
        {(k, a) for k in UNFUSED for a in ("sm_80", "sm_90")}, "a forward kernel's SASS was not checked"
    assert any(r["ptx_fma"] for r in bwd), "no fma in any backward PTX: is the PTX check blind?"


@pytest.mark.slow
def test_full_set_compiles_without_spills(full_set):
    """Every flag pattern x neuron variant x dtype through the front end and to cubin, the tiled kernels at
    every block shape with every pattern, the time loops' block shapes with their longest code path, for
    sm_80 and sm_90 (see tests/gpu_compile.py)."""
    assert full_set["frontend"]["checked"] and full_set["rows"]
    problems = gpu_compile.problems(full_set)
    assert not problems, report(problems)


@pytest.mark.slow
def test_committed_table_is_current(full_set):
    """tests/gpu-compile.json lists the specializations the full set compiles now (same triton)."""
    committed = json.loads(gpu_compile.TABLE.with_suffix(".json").read_text())
    if committed["triton"] != full_set["triton"]:
        pytest.skip(f"table made with triton {committed['triton']}, this is {full_set['triton']}")

    def keys(payload):
        return sorted(tuple(r[k] for k in gpu_compile.ROW_KEY) for r in payload["rows"])

    stale = "tests/gpu-compile.* is stale ({}): run python tests/gpu_compile.py"
    assert committed["frontend"]["checked"] == full_set["frontend"]["checked"], stale.format("front-end count")
    assert committed["frontend"]["sha256"] == full_set["frontend"]["sha256"], stale.format("front-end specializations")
    assert keys(committed) == keys(full_set), stale.format("cubin specializations")
    assert gpu_compile.problems(committed) == gpu_compile.problems(full_set), stale.format("problems")
