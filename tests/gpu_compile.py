"""Compile every Triton kernel of fastsnn for real GPUs (sm_80, sm_90) on a machine without one.

    python tests/gpu_compile.py [--set full|default] [--arch 80,90] [--jobs 2] [--cache DIR]

With the defaults (the full set, an empty Triton cache so the compile times are real) it writes
``tests/gpu-compile.md`` and ``.json``: every kernel compiled to a cubin with its
registers, spills, shared memory, FMA count and compile time. ``tests/test_gpu_compile.py`` runs
the same code (``compile_in_subprocess``) and fails on whatever ``problems`` reports.

Which specializations exist is not written down here: the launchers in ``kernels/`` are called
with CPU tensors for every argument pattern the ops in ``fastsnn.ops`` hand them (``LAUNCHERS``:
input dtypes, save / sum / need-gradient flags, every neuron variant ``fastsnn.ops.neurons.neuron``
accepts, shapes for every block the launcher can choose), while a stand-in Triton driver reports
the target GPU and Triton's ``jit_cache_hook`` records what each launch would compile and skips
it. Signature, constexprs (the launchers' and their ``@triton.heuristics``' alike), the
integer arguments' specialization (== 1, multiple of 16), ``num_warps`` and ``enable_fp_fusion``
are therefore those of Triton's own binder on a GPU. Each distinct record is compiled through
``JITFunction.preload`` (Triton's path for compiling a recorded specialization) in worker
processes (``--jobs``). Registers and local memory come from the bundled ``cuobjdump -res-usage``
of the cubin (ptxas keeps spilled registers in the stack frame, so stack + local bytes > 0 counts
as a spill; these kernels have no local arrays or calls), shared memory from the kernel's
metadata, FMAs from its PTX (and, for one default specialization per ``UNFUSED`` kernel and arch,
its SASS: disassembling costs ~0.4 CPU s a kernel).

What the two sets compile. Every flag pattern x neuron variant x input dtype is ~1 500
specializations per arch at one shape; times every block shape it is ~23 000, at ~0.1 CPU s each
to a cubin. The shape axis matters where a kernel's per-thread work depends on it, and only there
is it multiplied out:

- the time loops (``lif_*``, ``leaky_readout_*``) give each thread one lane (``lane_tile``:
  ``num_warps = BLOCK_B * BLOCK_N / 32``, at most one lane a thread when the block is smaller),
  so a thread's code and registers are those of the flag pattern, whatever the block: their
  block shapes are compiled with the longest code path only;
- the tiled kernels (spike projections, delays: ``tl.dot`` and bit tiles) hold a tile a program,
  so their registers grow with the block: every flag pattern x dtype x block shape.

- ``full`` (the table; ``@pytest.mark.slow``, which CI runs):
  1. *Every* flag pattern x neuron variant x input dtype, at the seed's shapes, through Triton's
     front end (AST -> Triton IR and its passes, ~0.02 CPU s each): a name, type or constexpr
     error in any combination fails here. Triton IR does not depend on the target for these
     kernels (the same text for sm_80 and sm_90), so this runs once, for sm_90; a pass is
     remembered in Triton's cache.
  2. To cubin, per arch: *every* specialization of 1, and the ``default`` set.
  3. To cubin, per arch: the tiled kernels' every flag pattern x dtype x shape of the launcher's
     ``shapes`` (``SPIKE_SHAPES``, ``DELAY_SHAPES``: every block they can choose, with the integer
     specializations), and the time loops' every shape of ``lane_shapes`` (each BLOCK_N that
     ``lane_tile`` returns with BLOCK_B at both ends, B == 1 and N == 1 specialized) with, per
     kernel, the specialization of 2 that has the most PTX instructions (its longest code path).
- ``default`` (every test run; part of ``full``): the seed's neuron and the richest one (adaptive,
  same-step, subtract-next, atan, >=) with the other flags all off and all on, float32, at the
  seed's shapes; the all-on pattern also at the smallest and the largest block and in bfloat16;
  the other launchers with each of their flags likewise. Its launches also run at every T in
  ``T_STEPS``: a specialization that changes with T (``do_not_specialize=["T"]`` lost) is a problem.

Run outside the Triton interpreter: under ``TRITON_INTERPRET=1`` (the test suite's setting)
``@triton.jit`` makes interpreted functions, which do not compile, so ``main`` and
``compile_in_subprocess`` start a fresh Python without the variable.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import itertools
import json
import multiprocessing
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastsnn.ops.neurons.neuron import Neuron, family, neuron
from fastsnn.ops.neurons.neuron import describe as describe_neuron

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "gpu-compile"  # .md and .json
ARCHS = (80, 90)
DTYPES = ("fp32", "bf16", "fp16")  # what the time-loop ops take (float64 runs on the CPU kernels only)
T_STEPS = (1, 16, 17)  # do_not_specialize=["T"]: every T must give the same specialization
# docs/kernel_contract.md, "Floating-point contraction on the GPU": these launch with enable_fp_fusion=False
# and must have no FMA (their spikes equal the reference's bit for bit; the stimulus' equal torch's); their
# backward kernels launch fused
# launchers whose kernels hold a tile a program (registers grow with the block): every shape x every flag pattern
TILED = ("spikes", "delays")
TIME_UNFUSED = ("lif_fwd_kernel", "leaky_readout_fwd_kernel", "leaky_readout_sum_fwd_kernel")
UNFUSED = TIME_UNFUSED + ("stimulus_bits_kernel",)
# kernels of UNFUSED whose only FMAs are their sine's (tl.sin: libdevice's __nv_sinf, the function torch's CUDA
# sin calls, so the same rounding as torch's; compiled with tl.sin taken out, stimulus_bits_kernel has no FMA):
# they must still launch with enable_fp_fusion=False, and bench/gpu_check.py compares their bits with torch's
SINE_FMA = ("stimulus_bits_kernel",)
FUSED = ("lif_bwd_kernel", "leaky_readout_bwd_kernel", "leaky_readout_sum_bwd_kernel")
# the time loops (one lane a thread at every block): their block shapes
# compile with the longest code path only, which problems() accepts while each of their specializations stays
# under LANE_REGS_MAX registers a thread (half of the 255 a thread may use; at most 4 warps a program, so the
# block never lowers that limit)
LANE_KERNELS = TIME_UNFUSED + FUSED
LANE_REGS_MAX = 128
# (M, K, N) of a spike projection x (M, K) @ w (K, N): every BLOCK_N of kernels/spikes.py's _block_n
# (16, 32, 64), N == 1 and M == K == 1 specialized, N a multiple of 16 and not
SPIKE_SHAPES = [(M, K, N) for N in (1, 17, 32, 64) for M, K in ((1, 1), (6400, 200))]
SPIKE_EXTREMES = [(1, 1, 1), (6400, 200, 64)]
# (B, T, I, O) of a delayed projection x (B, T, I) -> h (B, T, O): each of T, I, O at 1 (== 1
# specialized, block 16), 17 (block 32, not a multiple of 16) and 64 (block 32, a multiple of 16; the
# reduced dimension's block is always 16), so every block kernels/delays.py can choose; B == 1 with T == 1
DELAY_SHAPES = [(1 if T == 1 else 3, T, I, O) for T in (1, 17, 64) for I in (1, 17, 64) for O in (1, 17, 64)]
DELAY_EXTREMES = [(1, 1, 1, 1), (3, 64, 64, 64)]
DELAY_TAPS = 26  # K = max_delay + 1 of the README's delay runs (--max-delay 25)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def lane_shapes() -> list:
    """(B, N) planes for kernels/_config.py's lane_tile: N every power of two up to LANES, B 1 or large,
    so every BLOCK_N with BLOCK_B at both ends, and B == 1, N == 1 specialized as the runtime does."""
    from fastsnn.kernels._config import LANES

    return [(B, N) for N in (2 ** k for k in range(LANES.bit_length())) for B in (1, 32 * LANES)]


def lane_extremes() -> list:
    """The smallest and the largest block."""
    from fastsnn.kernels._config import LANES

    return [(1, 1), (32 * LANES, LANES)]


# --- launch patterns ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """One call of a launcher: its flags (everything but the input dtype and the shape)."""

    launcher: str
    flags: tuple  # ((name, value), ...)
    dtype: str
    shape: tuple  # (B, N) for the time loops, (M, K, N) for the spike projections

    def label(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.flags)

    def describe(self) -> str:
        return f"{self.launcher}({self.label()}) {self.dtype} shape={'x'.join(map(str, self.shape))}"


def _short(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, Neuron):
        return describe_neuron(v)
    return str(v)


def _richest_neuron():
    d = Neuron._field_defaults
    return neuron(spike="same_step", reset="subtract_next", surrogate="atan", fire=">=", detach_reset=False,
                     threshold=d["threshold"], beta=d["beta"], adapt=d["adapt"], adaptive=True)


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}[name]


def _lif_fwd(launch: Launch, T: int) -> None:
    import torch

    from fastsnn.kernels.neurons import lif_fwd

    f, (B, N) = dict(launch.flags), launch.shape
    n = f["neuron"]
    lif_fwd(torch.empty(B, T, N, dtype=_torch_dtype(launch.dtype)), torch.empty(N),
            torch.empty(N) if n.adaptive else None, n, f["save"], torch.empty(T) if f["sum"] else None)


def _lif_bwd(launch: Launch, T: int) -> None:
    import torch

    from fastsnn.kernels.neurons import lif_bwd

    f, (B, N) = dict(launch.flags), launch.shape
    n = f["neuron"]
    grad = torch.empty(B, N) if f["sum"] else torch.empty(B, T, N)
    lif_bwd(grad, torch.empty(B, T, N), torch.empty(B, T, N, dtype=torch.uint8),
            torch.empty(B, T, N) if n.adaptive else None, torch.empty(N), torch.empty(N) if n.adaptive else None,
            n, f["need_dalpha"], f["need_drho"], torch.empty(T) if f["sum"] else None)


def _readout_fwd(launch: Launch, T: int) -> None:
    import torch

    from fastsnn.kernels.readout import leaky_readout_fwd, leaky_readout_sum_fwd

    B, N = launch.shape
    fn = leaky_readout_sum_fwd if dict(launch.flags)["sum"] else leaky_readout_fwd
    fn(torch.empty(B, T, N, dtype=_torch_dtype(launch.dtype)), torch.empty(N))


def _readout_bwd(launch: Launch, T: int) -> None:
    import torch

    from fastsnn.kernels.readout import leaky_readout_bwd, leaky_readout_sum_bwd

    f, (B, N) = dict(launch.flags), launch.shape
    if f["sum"]:  # grad_m in the state dtype; the saved h (read for dalpha only) in its own
        h = torch.empty(B, T, N, dtype=_torch_dtype(launch.dtype)) if f["need_dalpha"] else None
        leaky_readout_sum_bwd(torch.empty(B, N), h, torch.empty(N), T, f["need_dalpha"])
    else:  # grad_u and u as the op hands them over: .to(alpha.dtype), float32
        leaky_readout_bwd(torch.empty(B, T, N), torch.empty(B, T, N) if f["need_dalpha"] else None,
                          torch.empty(N), f["need_dalpha"])


def _spikes(launch: Launch, T: int) -> None:
    """fastsnn.ops.spikes' Triton path: pack_count(x) of x in its own dtype, event_matmul(bits, w) and
    event_weight_grad(bits, grad) in the work dtype (float32, or float64 for float64)."""
    import torch

    from fastsnn.kernels.spikes import event_matmul, event_weight_grad, pack_count

    M, K, N = launch.shape
    part = dict(launch.flags)["part"]
    bits = torch.empty(-(-M // 8), K, dtype=torch.uint8)
    if part == "pack":
        pack_count(torch.empty(M, K, dtype=_torch_dtype(launch.dtype)))
    elif part == "matmul":
        event_matmul(bits, torch.empty(K, N, dtype=_torch_dtype(launch.dtype)), M)
    else:
        event_weight_grad(bits, torch.empty(M, N, dtype=_torch_dtype(launch.dtype)))


def _delays(launch: Launch, T: int) -> None:
    """fastsnn.ops.delays' Triton path: the forward and each half of the backward (the input gradient,
    the kernel gradient) for x in its own dtype. The launcher picks BLOCK_T from T, so the shape holds T
    and the T of the call is not used."""
    import torch

    from fastsnn.kernels.delays import delays_bwd, delays_fwd

    B, T, I, O = launch.shape
    part = dict(launch.flags)["part"]
    x, wk = torch.empty(B, T, I, dtype=_torch_dtype(launch.dtype)), torch.empty(I, DELAY_TAPS, O)
    if part == "fwd":
        delays_fwd(x, wk)
    else:
        delays_bwd(torch.empty(B, T, O), x, wk, part == "dx", part == "dwk")


def _stimulus(launch: Launch, T: int) -> None:
    """The experiment's stimulus kernel (fastsnn.experiment.stimulus_triton): n samples of T steps and
    I = 2 A fibres, for each envelope power it takes."""
    import torch

    from fastsnn.experiment.stimulus_triton import stimulus_bits

    n, I = launch.shape
    stimulus_bits(torch.empty(n, dtype=torch.int32), torch.empty(n), torch.empty(T, I, dtype=torch.int32),
                  torch.empty(T), torch.empty(2, I // 2), 0.6, dict(launch.flags)["power"])


# (n, I) of a batch's stimulus: one block whatever the shape (the kernel's tile is fixed), so the shapes
# only vary the integer arguments' specialization (I == 2, a multiple of 16 or neither)
STIMULUS_SHAPES = [(1, 2), (64, 200), (5, 74)]
STIMULUS_EXTREMES = [(1, 2), (64, 200)]


@dataclass(frozen=True)
class Launcher:
    call: object  # (Launch, T) -> None: calls the launcher
    dtypes: tuple  # the input dtypes the ops hand it
    axes: object  # () -> {flag: values}
    seed: tuple  # the seed network's shape (bench/workloads.py, "seed")
    shapes: object  # () -> shapes that give every block the launcher can choose
    extremes: object  # () -> its smallest and largest block


LAUNCHERS = {
    "lif_fwd": Launcher(_lif_fwd, DTYPES,
                        lambda: {"neuron": family(), "save": (False, True), "sum": (False, True)},
                        (64, 30), lane_shapes, lane_extremes),
    # float32 whatever h was: the op casts the gradient to the saved u's dtype
    "lif_bwd": Launcher(_lif_bwd, ("fp32",),
                        lambda: {"neuron": family(), "need_dalpha": (False, True),
                                 "need_drho": (False, True), "sum": (False, True)},
                        (64, 30), lane_shapes, lane_extremes),
    "readout_fwd": Launcher(_readout_fwd, DTYPES, lambda: {"sum": (False, True)}, (64, 12), lane_shapes,
                            lane_extremes),
    "readout_bwd": Launcher(_readout_bwd, DTYPES, lambda: {"sum": (False, True), "need_dalpha": (False, True)},
                            (64, 12), lane_shapes, lane_extremes),
    # x @ w of the seed's hidden layer: x (B * T, inputs) = (6400, 200), w (200, 30)
    "spikes": Launcher(_spikes, (*DTYPES, "fp64"), lambda: {"part": ("pack", "matmul", "wgrad")},
                       (6400, 200, 30), lambda: SPIKE_SHAPES, lambda: SPIKE_EXTREMES),
    # the seed's hidden layer with delays: x (64, 100, 200), W (200, 30)
    "delays": Launcher(_delays, DTYPES, lambda: {"part": ("fwd", "dx", "dwk")}, (64, 100, 200, 30),
                       lambda: DELAY_SHAPES, lambda: DELAY_EXTREMES),
    # a seed batch: 64 samples x 100 steps x 200 fibres; float32 only (the stimulus' own dtype)
    "stimulus": Launcher(_stimulus, ("fp32",), lambda: {"power": (1, 2, 3)}, (64, 200),
                         lambda: STIMULUS_SHAPES, lambda: STIMULUS_EXTREMES),
}


def _valid(launcher: str, flags: dict, dtype: str) -> bool:
    """Only the patterns the ops produce."""
    if launcher == "lif_bwd" and flags["need_drho"] and not flags["neuron"].adaptive:
        return False  # rho is an op input only for adaptive neurons
    if launcher == "readout_bwd" and dtype != "fp32" and not (flags["sum"] and flags["need_dalpha"]):
        return False  # only leaky_readout_sum's saved h keeps a 16-bit dtype
    if launcher == "spikes" and flags["part"] != "pack" and dtype not in ("fp32", "fp64"):
        return False  # the products run in the work dtype
    if launcher == "delays" and flags["part"] == "dx" and dtype != "fp32":
        return False  # the input gradient reads only the (float32) gradient and kernel
    return True


def flag_patterns(launcher: str) -> list[dict]:
    axes = LAUNCHERS[launcher].axes()
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def launches(launcher: str, patterns, dtypes, shapes) -> list[Launch]:
    return [Launch(launcher, tuple(f.items()), d, shape) for f, d, shape in itertools.product(patterns, dtypes, shapes)
            if _valid(launcher, f, d)]


def all_flag_launches() -> list[Launch]:
    """Every flag pattern x input dtype of every launcher, at the seed's shape."""
    return [x for name, spec in LAUNCHERS.items()
            for x in launches(name, flag_patterns(name), spec.dtypes, [spec.seed])]


def default_launches() -> list[Launch]:
    seed, richest = Neuron(), _richest_neuron()
    out = []
    for name, spec in LAUNCHERS.items():
        patterns = flag_patterns(name)
        if "neuron" in patterns[0]:  # the seed's and the richest neuron, the other flags all off or all on
            patterns = [p for p in patterns if p["neuron"] in (seed, richest)
                        and len({v for k, v in p.items() if k != "neuron"}) == 1]
        # everything on: the richest neuron, every bool flag True (every value of another flag)
        rich = [p for p in patterns if all(v is True for v in p.values() if isinstance(v, bool))
                and p.get("neuron", richest) == richest]
        out += launches(name, patterns, ["fp32"], [spec.seed])
        out += launches(name, rich, ["fp32"], spec.extremes())
        out += launches(name, rich, [d for d in spec.dtypes if d == "bf16"], [spec.seed])
    return out


# --- recording what the launchers would compile ---------------------------------------------------------

class OfflineDriver:
    """As much of a Triton driver as binding arguments and compiling for ``GPUTarget("cuda", arch, 32)``
    needs. The device index is the arch, so each arch gets its own per-device JIT caches."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return self.target.arch

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


@contextlib.contextmanager
def offline(arch: int):
    from triton.runtime.driver import driver

    previous = driver._active
    driver.set_active(OfflineDriver(arch))
    try:
        yield
    finally:
        driver._active = previous


@dataclass
class Spec:
    """One specialization a launch would compile, as the runtime records it."""

    kernel: str  # module:qualname
    arch: int
    key: str  # the runtime's in-memory cache key (specialization + options)
    data: str  # its specialization data (JSON): what JITFunction.preload compiles
    launches: list  # the Launch objects that map to it
    fp_fusion_default: bool = False  # the launch left enable_fp_fusion to Triton's default (changes in 3.10)

    @property
    def id(self):
        return (self.kernel, self.arch, self.key)


@contextlib.contextmanager
def recording(found: list):
    """While active, a Triton launch appends (JITFunction, key, compile kwargs, whether the launch left
    enable_fp_fusion to Triton's default) to ``found`` and neither compiles nor launches."""
    from triton import knobs

    language = type(knobs.language)
    fp_fusion_enabled = language.fp_fusion_enabled  # the backend's parse_options asks it, just before the hook
    implicit = []

    def spy(self, requested):
        implicit.append(requested is None)
        return fp_fusion_enabled(self, requested)

    def hook(**kw):  # key, repr, fn, compile, is_manual_warmup, already_compiled
        found.append((kw["fn"].jit_function, kw["key"], kw["compile"], bool(implicit and implicit[-1])))
        implicit.clear()
        return True

    previous = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    language.fp_fusion_enabled = spy
    try:
        yield
    finally:
        knobs.runtime.jit_cache_hook = previous
        language.fp_fusion_enabled = fp_fusion_enabled


def _kernel_id(jit_fn) -> str:
    return f"{jit_fn.fn.__module__}:{jit_fn.fn.__qualname__}"


def record(todo: list[Launch], archs, check_T: bool = False) -> tuple[dict, list[str]]:
    """({spec id: Spec}, problems): what ``todo`` would compile on each arch. With ``check_T`` each
    launch runs at every T in ``T_STEPS``, and a specialization that changes with T is a problem."""
    specs, bad = {}, []
    for arch in archs:
        with offline(arch):
            for launch in todo:
                per_T = []
                for T in T_STEPS if check_T else T_STEPS[-1:]:
                    found = []
                    with recording(found):
                        LAUNCHERS[launch.launcher].call(launch, T)
                    per_T.append([(_kernel_id(fn), key) for fn, key, *_ in found])
                    for fn, key, kw, implicit in found:
                        kid = _kernel_id(fn)
                        spec = specs.setdefault((kid, arch, key), Spec(kid, arch, key, kw["specialization_data"], [],
                                                                       implicit))
                        if launch not in spec.launches:
                            spec.launches.append(launch)
                if any(p != per_T[0] for p in per_T):
                    bad.append(f"specialized on T: {launch.describe()} sm_{arch} compiles differently for "
                               f"T in {T_STEPS}")
    return specs, bad


KERNEL_MODULES = ("fastsnn.experiment.stimulus_triton",)  # Triton kernels outside fastsnn.kernels


def package_kernels() -> dict:
    """{module:qualname: JITFunction} of every ``*_kernel`` in fastsnn.kernels and ``KERNEL_MODULES``."""
    import fastsnn.kernels as pkg
    from triton.runtime.autotuner import Heuristics
    from triton.runtime.jit import JITFunction

    out = {}
    names = [f"{pkg.__name__}.{info.name}" for info in pkgutil.iter_modules(pkg.__path__)] + list(KERNEL_MODULES)
    for module in names:
        mod = importlib.import_module(module)
        for name, obj in vars(mod).items():
            while isinstance(obj, Heuristics):
                obj = obj.fn
            if isinstance(obj, JITFunction) and name.endswith("_kernel") and obj.fn.__module__ == mod.__name__:
                out[_kernel_id(obj)] = obj
    return out


def _kernel_object(kernel_id: str):
    from triton.runtime.autotuner import Heuristics

    module, qualname = kernel_id.split(":")
    obj = getattr(importlib.import_module(module), qualname)
    while isinstance(obj, Heuristics):
        obj = obj.fn
    return obj


# --- compiling (worker processes) -------------------------------------------------------------------------

RES_RE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
PTX_FMA_RE = re.compile(r"^\s*(?:@!?%p\d+\s+)?fma\.[\w.]*f32\b", re.M)
SASS_FFMA_RE = re.compile(r"\bFFMA\b")
PTX_INSTRUCTION_RE = re.compile(r"^\s*(?:@!?%p\d+\s+)?[a-z][\w.]*\s[^;]*;", re.M)


def _tool(name: str) -> str:
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def _resources(kernel, sass: bool) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
        sass_text = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                                   check=True).stdout if sass else None
    m = RES_RE.search(res)
    if m is None:
        raise RuntimeError(f"unreadable cuobjdump -res-usage output:\n{res}")
    regs, stack, _static_shared, local = map(int, m.groups())
    return {"regs": regs, "spills": stack + local, "stack_bytes": stack, "local_bytes": local,
            "shared": int(kernel.metadata.shared), "num_warps": int(kernel.metadata.num_warps),
            "enable_fp_fusion": bool(kernel.metadata.enable_fp_fusion),
            "ptx_fma": len(PTX_FMA_RE.findall(kernel.asm["ptx"])),
            "ptx_instructions": len(PTX_INSTRUCTION_RE.findall(kernel.asm["ptx"])),
            "sass_ffma": None if sass_text is None else len(SASS_FFMA_RE.findall(sass_text))}


def _parsed(kernel_id: str, data: str):
    """(JITFunction, ASTSource, backend, options, target) of a specialization, as preload builds them."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    d = json.loads(data)
    fn = _kernel_object(kernel_id)
    target = GPUTarget(**d["target"])
    backend = make_backend(target)
    options = backend.parse_options({k: tuple(v) if isinstance(v, list) else v for k, v in d["options"].items()})
    constexprs = {tuple(k): v for k, v in zip(d["constant_keys"], d["constant_vals"])}
    attrs = {tuple(k): v for k, v in zip(d["attrs_keys"], d["attrs_vals"])}
    return fn, ASTSource(fn, d["signature"], constexprs, attrs), backend, options, target


def lower_to_ttir(kernel_id: str, data: str) -> None:
    """Triton's front end (AST -> Triton IR, then its ``ttir`` passes), as ``triton.compile`` runs it
    first; a pass is remembered in Triton's cache under the compile's own key."""
    from triton._C.libtriton import get_cache_invalidating_env_vars, ir
    from triton.runtime.cache import get_cache_key, get_cache_manager

    fn, src, backend, options, target = _parsed(kernel_id, data)
    key = get_cache_key(src, backend, options, get_cache_invalidating_env_vars())
    cache = get_cache_manager(hashlib.sha256(key.encode()).hexdigest())
    name = f"{src.name}.frontend-ok"
    if cache.get_file(name) is not None:
        return
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(target, options, backend.get_codegen_implementation(options), backend.get_module_map(),
                         context)
    stages = {}
    try:
        from triton.backends.compiler import Language

        backend.add_stages(stages, options, Language.TRITON)
    except (ImportError, TypeError):  # an older triton: add_stages(stages, options)
        backend.add_stages(stages, options)
    stages["ttir"](module, {})
    cache.put(b"", name, binary=True)


def work(job) -> dict:
    """One job in a worker: ("ttir" | "cubin", kernel id, arch, specialization data, sass?). Never raises."""
    mode, kernel_id, arch, data, sass = job
    from triton import knobs

    knobs.runtime.jit_cache_hook = None
    hits = []
    knobs.compilation.listener = lambda *, cache_hit, **_: hits.append(cache_hit)
    out = {}
    start, cpu = time.perf_counter(), _cpu_seconds()
    try:
        with offline(arch):
            if mode == "ttir":
                lower_to_ttir(kernel_id, data)
            else:
                kernel = _kernel_object(kernel_id).preload(data)
                out["compile_s"] = time.perf_counter() - start
                out["cache_hit"] = bool(hits and hits[-1])
                out.update(_resources(kernel, sass))
    except Exception as e:  # a compile error is a result
        out["error"] = f"{type(e).__name__}: {e}"
    out.setdefault("compile_s", time.perf_counter() - start)
    out["compile_s"] = round(out["compile_s"], 3)
    out["cpu_s"] = round(_cpu_seconds() - cpu, 3)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas, cuobjdump)."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def describe(spec: Spec) -> dict:
    """The table's fields of a specialization: constexprs set (None pointers and False left out), dtype
    (the floating-point pointer element types other than fp32), block, warps, the integer arguments'
    specialization."""
    d = json.loads(spec.data)
    names = _kernel_object(spec.kernel).arg_names
    consts = {names[k[0]]: v for k, v in zip(d["constant_keys"], d["constant_vals"]) if len(k) == 1}
    attrs = {names[k[0]]: v for k, v in zip(d["attrs_keys"], d["attrs_vals"]) if len(k) == 1}
    sig = d["signature"]
    flags, ints, blocks = [], [], []
    for name in names:
        if sig[name] in ("i32", "i64"):
            if name != "T":
                ints.append(f"{name}%16" if ["tt.divisibility", 16] in attrs.get(name, []) else name)
        elif sig[name] == "constexpr" and consts.get(name) is not None:
            value = consts[name]
            if name.startswith("BLOCK_"):
                blocks.append(str(value))
            elif name not in [p.name for p in _kernel_object(spec.kernel).params if p.is_constexpr]:
                ints.append(f"{name}={value}")  # an integer argument the runtime specialized (== 1)
            elif value is True:
                flags.append(name)
            elif value is not False:
                flags.append(f"{name}={value}")
    floats = sorted({t[1:] for t in sig.values() if t.startswith(("*fp", "*bf")) and t != "*fp32"})
    return {"kernel": spec.kernel.split(":")[1], "arch": f"sm_{spec.arch}", "constexprs": " ".join(flags) or "-",
            "dtype": "+".join(floats) or "fp32", "block": "x".join(blocks), "ints": " ".join(ints),
            "num_warps": d["options"]["num_warps"], "enable_fp_fusion": d["options"]["enable_fp_fusion"]}


# --- choosing what goes to cubin ----------------------------------------------------------------------------

def richest(rows_specs) -> dict:
    """{arch: launches}: per kernel and arch, a launch of the specialization with the most PTX
    instructions (the longest code path; of those the most registers, then shared memory; the first of equals)."""
    picked = {}
    groups = {}
    for row, spec in rows_specs:
        if "error" not in row:
            groups.setdefault((spec.kernel, spec.arch), []).append((row, spec))
    for (_, arch), members in sorted(groups.items()):
        row, spec = max(members, key=lambda m: (m[0]["ptx_instructions"], m[0]["regs"], m[0]["shared"]))
        if spec.launches[0] not in picked.setdefault(arch, []):  # max() keeps the first of equals
            picked[arch].append(spec.launches[0])
    return picked


# --- running a set ------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, archs, jobs: int, log):
        self.archs, self.jobs, self.log = tuple(archs), jobs, log
        self.rows = {}  # spec id -> (row, Spec), cubin compiles
        self.frontend = []  # (row fields, result) of the ttir stage
        self.problems = []
        self.error_texts = {}  # short error -> its full text (source excerpt included), once
        # compiles run in worker processes even with one job: a compile in this process would fill the
        # kernels' in-process caches, and a later recording of the same specialization would try to launch it
        self.pool = multiprocessing.get_context("fork").Pool(max(1, jobs))

    def map(self, jobs):
        results = self.pool.map(work, jobs, chunksize=4 if jobs and jobs[0][0] == "ttir" else 1)
        for res in results:  # rows keep one line; the full text once per message
            if "error" in res:
                full, res["error"] = res["error"], short_error(res["error"])
                self.error_texts.setdefault(res["error"], full)
        return results

    def record(self, todo: list[Launch], archs=None, check_T=False) -> list[Spec]:
        t = time.perf_counter()
        archs = self.archs if archs is None else archs
        specs, bad = record(todo, archs, check_T)
        self.log(f"recorded {len(todo)} launches x {len(archs)} archs{f' x {len(T_STEPS)} T' if check_T else ''}: "
                 f"{len(specs)} specializations in {time.perf_counter() - t:.1f} s")
        self.problems += [b for b in bad if b not in self.problems]
        for s in specs.values():  # keep every launch that maps to a spec already compiled
            if s.id in self.rows:
                old = self.rows[s.id][1]
                old.launches += [x for x in s.launches if x not in old.launches]
        return list(specs.values())

    def ttir(self, specs: list[Spec], stage: str):
        t = time.perf_counter()
        results = self.map([("ttir", s.kernel, s.arch, s.data, False) for s in specs])
        for s, res in zip(specs, results):
            row = describe(s)
            self.frontend.append({k: row[k] for k in ROW_KEY} | ({"error": res["error"]} if "error" in res else {}))
        n_err = sum("error" in r for r in results)
        self.log(f"{stage}: {len(specs)} specializations to Triton IR in {time.perf_counter() - t:.1f} s "
                 f"({sum(r['cpu_s'] for r in results):.1f} CPU s), {n_err} errors")

    def cubin(self, specs: list[Spec], stage: str, sass=lambda s: False):
        new = [s for s in dict((s.id, s) for s in specs).values() if s.id not in self.rows]
        t = time.perf_counter()
        results = self.map([("cubin", s.kernel, s.arch, s.data, sass(s)) for s in new])
        for s, res in zip(new, results):
            self.rows[s.id] = ({**describe(s), "fp_fusion_default": s.fp_fusion_default, **res}, s)
        n_err = sum("error" in r for r in results)
        self.log(f"{stage}: {len(new)} specializations to cubin in {time.perf_counter() - t:.1f} s "
                 f"({sum(r['cpu_s'] for r in results):.1f} CPU s), {n_err} errors")

    def close(self):
        self.pool.close()
        self.pool.join()


def _seed_fp32(spec: Spec) -> bool:
    return any(x.dtype == "fp32" and x.shape == LAUNCHERS[x.launcher].seed for x in spec.launches)


def run(which: str, archs=ARCHS, jobs: int = 2, log=print) -> dict:
    """Record and compile set ``which`` ("default" or "full"); the JSON payload."""
    if _interpreting():
        raise RuntimeError("TRITON_INTERPRET=1 makes @triton.jit kernels uncompilable: use compile_in_subprocess")
    from triton import __version__ as triton_version

    t0 = time.perf_counter()
    r = Runner(archs, jobs, log)
    try:
        default = r.record(default_launches(), check_T=True)
        # a sample of SASS: per UNFUSED kernel and arch, its first default spec at the seed's shape
        sass_sample = {}
        for s in default:
            if describe(s)["kernel"] in UNFUSED and _seed_fp32(s):
                sass_sample.setdefault((s.kernel, s.arch), s.id)
        sass_sample = set(sass_sample.values())
        default_ids = {s.id for s in default}
        if which == "full":
            flags = r.record(all_flag_launches())
            # Triton IR does not depend on the target here (identical for sm_80 and sm_90): once, for the newest
            r.ttir([s for s in flags if s.arch == max(archs)], "1 every flag pattern x dtype")
            r.cubin(default + flags, "2 every flag pattern x dtype + default set", sass=lambda s: s.id in sass_sample)
            tiles = r.record([x for name in TILED for x in launches(name, flag_patterns(name), LAUNCHERS[name].dtypes,
                                                                    LAUNCHERS[name].shapes())])
            r.cubin(tiles, "3 tiled kernels: every flag pattern x dtype x block shape")
            shapes = []
            for arch, picks in richest([rs for rs in r.rows.values() if rs[1].launches[0].launcher not in TILED]).items():
                shapes += r.record([dataclasses.replace(x, shape=shape) for x in picks
                                    for shape in LAUNCHERS[x.launcher].shapes()], [arch])
            r.cubin(shapes, "3 time loops: every block shape, richest specialization")
        else:
            r.cubin(default, "default set", sass=lambda s: s.id in sass_sample)
    finally:
        r.close()
    rows = []
    for row, spec in r.rows.values():
        rows.append({**row, "kernel_id": spec.kernel, "default": spec.id in default_ids,
                     "launches": [x.describe() for x in spec.launches]})
    kernels = package_kernels()
    return {
        "set": which, "archs": [f"sm_{a}" for a in archs], "triton": triton_version, "jobs": jobs,
        "seconds": time.perf_counter() - t0,
        "kernels_in_package": sorted(kernels),
        "kernels_reached": sorted({s.kernel for _, s in r.rows.values()}),
        "T_not_do_not_specialize": sorted(k for k, fn in kernels.items()  # kernels with a time loop over T
                                          if any(p.name == "T" and not p.do_not_specialize for p in fn.params)),
        "record_problems": r.problems,
        "error_texts": r.error_texts,
        "frontend": {"checked": {a: n for a in (f"sm_{x}" for x in archs)
                                 if (n := sum(f["arch"] == a for f in r.frontend))},
                     "sha256": _digest(r.frontend), "errors": [f for f in r.frontend if "error" in f]},
        "rows": rows,
    }


def subset(payload: dict, which: str = "default") -> dict:
    """The ``default`` set's part of a ``full`` payload (it contains it), as ``run("default")`` returns it."""
    if payload["set"] == which:
        return payload
    rows = [r for r in payload["rows"] if r["default"]]
    return {**payload, "set": which, "frontend": {"checked": {}, "sha256": _digest([]), "errors": []}, "rows": rows,
            "kernels_reached": sorted({r["kernel_id"] for r in rows})}


ROW_KEY = ("kernel", "constexprs", "dtype", "block", "ints", "arch")  # what identifies a specialization in the table


def _digest(rows) -> str:
    """sha256 of the sorted row keys: the committed table's front-end part in one value."""
    keys = sorted("|".join(str(r[k]) for k in ROW_KEY) for r in rows)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def problems(payload: dict) -> list[str]:
    """What fails CI, one line per kind, kernel and message (with a count and an example): compile errors
    (front end or cubin), spills, fusion or an FMA in an ``UNFUSED`` kernel, a launch that leaves FP
    fusion to Triton's default, a kernel no launch reaches, a T that is specialized."""
    groups = {}

    def add(kind, row, message):
        where = f"[{row['constexprs']}] {row['dtype']} block {row['block']} {row['ints']} {row['arch']}"
        groups.setdefault((kind, row["kernel"], message), []).append(where)

    for row in payload["frontend"]["errors"]:
        add("front-end error", row, row["error"])
    for row in payload["rows"]:
        if "error" in row:
            add("compile error", row, row["error"])
        elif row["spills"]:
            add("spill", row, f"stack {row['stack_bytes']} B, local {row['local_bytes']} B")
        elif row["kernel"] in UNFUSED and (row["enable_fp_fusion"] or (row["kernel"] not in SINE_FMA
                                                                     and (row["ptx_fma"] or row["sass_ffma"]))):
            add("FMA in a forward kernel that must round as the reference", row,
                f"enable_fp_fusion={row['enable_fp_fusion']}, {row['ptx_fma']} fma.f32 in the PTX, "
                f"{row['sass_ffma']} FFMA in the SASS")
        if row.get("fp_fusion_default"):
            add("FP fusion left to Triton's default (it changes in Triton 3.10)", row,
                "its launcher passes no enable_fp_fusion")
    # the time loops' block shapes are compiled with their longest code path only (module docstring): that
    # stands while every pattern stays far under the 255 registers a thread may use at any block they launch
    for row in payload["rows"]:
        if "error" not in row and row["kernel"] in LANE_KERNELS and row["regs"] > LANE_REGS_MAX:
            add(f"more than {LANE_REGS_MAX} registers in a time loop (compile its every pattern at every block)", row,
                f"{row['regs']} registers")
    out = [f"{kind}: {kernel}: {message} ({len(where)} specialization{'s' * (len(where) > 1)}, e.g. {where[0]})"
           for (kind, kernel, message), where in groups.items()]
    out += [f"no launch reaches kernel {k}" for k in sorted(set(payload["kernels_in_package"])
                                                            - set(payload["kernels_reached"]))]
    out += [f"{k}: T is not in do_not_specialize" for k in payload["T_not_do_not_specialize"]]
    return out + payload["record_problems"]


SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def short_error(error: str) -> str:
    """A Triton error in one line: "CompilationError: at 59:24:" (a source excerpt follows in the
    error) and the first sentence of its cause."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    if not lines:
        return error
    if len(lines) > 1 and lines[0].endswith(":"):
        return (lines[0] + " " + SENTENCE_END.split(lines[-1])[0])[:300]
    return lines[0][:300]


def _clean_env() -> dict:
    """The environment without the interpreter and without the switch that lets kernels read plain
    globals (a GPU user has neither; Triton's cache key includes neither)."""
    return {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_ALLOW_NON_CONSTEXPR_GLOBALS")}


def compile_in_subprocess(which: str, jobs: int = 2, timeout: float = 1200) -> dict:
    """``run(which)`` in a fresh Python without ``TRITON_INTERPRET`` (what the tests call). The Triton
    cache is the environment's (``TRITON_CACHE_DIR`` or ``~/.triton/cache``): it persists between runs."""
    env = _clean_env()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "payload.json"
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--set", which, "--jobs", str(jobs),
                               "--cache", "keep", "--json", str(out), "--no-table"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            raise RuntimeError(f"tests/gpu_compile.py failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        payload = json.loads(out.read_text())
    payload["log"] = proc.stdout
    return payload


# --- the table ----------------------------------------------------------------------------------------------

def dumps(payload: dict) -> str:
    """JSON with one row per line."""
    parts = []
    for k, v in payload.items():
        if k == "rows":
            inner = ",\n  ".join(json.dumps(x, separators=(",", ":")) for x in v)
            parts.append(f' "{k}": [\n  {inner}\n ]')
        else:
            parts.append(f" {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _error_section(payload: dict) -> list[str]:
    texts = payload.get("error_texts", {})
    if not texts:
        return []
    out = ["## Compile errors, once per message", ""]
    for short, full in texts.items():
        out += [f"`{short}`", "", "```", *full.splitlines()[:40], "```", ""]
    return out


def markdown(payload: dict, machine: str) -> str:
    rows, front = payload["rows"], payload["frontend"]["checked"]
    archs = payload["archs"]
    count = lambda rs, a: sum(r["arch"] == a for r in rs)  # noqa: E731
    found = problems(payload)
    lines = [
        "# fastsnn's Triton kernels compiled offline for sm_80 and sm_90",
        "",
        f"`python tests/gpu_compile.py` (set `{payload['set']}`, "
        f"{'an empty' if payload.get('cache') == 'fresh' else 'a warm'} Triton cache, {payload['jobs']} processes) on "
        f"{machine}, triton {payload['triton']}: {payload['seconds']:.0f} s. "
        f"Front end (Triton IR, which does not depend on the target here) for every flag pattern x neuron "
        f"variant x input dtype: {sum(front.values())} specializations ({', '.join(front) or 'none'}); to cubin: "
        f"{', '.join(f'{count(rows, a)} for {a}' for a in archs)}. What is chosen and why: the docstring of "
        "`tests/gpu_compile.py`; each row's launches (launcher, flags, dtype, shape): the `.json`.",
        "",
        f"**{len(found)} problems**" + (":" if found else "."),
        "",
        *[f"- {p}" for p in found[:60]],
        *([f"- ... and {len(found) - 60} more (the `.json`)"] if len(found) > 60 else []),
        "",
        "Columns: constexprs that are set (False flags and None pointers left out); dtype: the floating-point "
        "pointer element types other than float32; block: the BLOCK_* constexprs in argument order (BLOCK_B x "
        "BLOCK_N for the time loops); warps; the integer arguments' specialization (`B=1`: the constant 1, "
        "`N%16`: a multiple of 16, `N`: neither; T is never specialized); registers per thread; spilled bytes "
        "(stack + local); shared memory bytes; "
        "`fma.*.f32` in the PTX / `FFMA` in the SASS (SASS for a sample, else `-`); compile seconds, wall "
        "(the machine is shared: noisy) and CPU (the worker's and its ptxas').",
        "",
        *_error_section(payload),
        "## Per kernel and arch (cubin)",
        "",
        "| kernel | arch | compiled | errors | regs min-max | spills | shared max | PTX fma min-max | compile s "
        "| CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (k, a), grp in itertools.groupby(sorted(rows, key=lambda r: (r["kernel"], r["arch"])),
                                         key=lambda r: (r["kernel"], r["arch"])):
        grp = list(grp)
        ok = [r for r in grp if "error" not in r]
        if ok:
            stats = (f"{min(r['regs'] for r in ok)}-{max(r['regs'] for r in ok)} | {sum(r['spills'] for r in ok)} | "
                     f"{max(r['shared'] for r in ok)} | "
                     f"{min(r['ptx_fma'] for r in ok)}-{max(r['ptx_fma'] for r in ok)}")
        else:
            stats = "- | - | - | -"
        lines.append(f"| {k} | {a} | {len(grp)} | {len(grp) - len(ok)} | {stats} | "
                     f"{sum(r['compile_s'] for r in grp):.1f} | {sum(r['cpu_s'] for r in grp):.1f} |")
    lines += ["", "## Every kernel compiled to cubin", "",
              "| kernel | constexprs | dtype | block | warps | ints | arch | regs | spills | shared | fma PTX/SASS "
              "| s | CPU s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["kernel"], r["constexprs"], r["dtype"], r["block"], r["ints"], r["arch"])):
        if "error" in r:
            res = f"error: {r['error'].replace('|', '/')} | | | |"
        else:
            sass = "-" if r["sass_ffma"] is None else r["sass_ffma"]
            res = f"{r['regs']} | {r['spills']} | {r['shared']} | {r['ptx_fma']}/{sass}"
        lines.append(f"| {r['kernel']} | {r['constexprs']} | {r['dtype']} | {r['block']} | {r['num_warps']} | "
                     f"{r['ints']} | {r['arch']} | {res} | {r['compile_s']:.2f} | {r['cpu_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=("full", "default"), default="full")
    p.add_argument("--arch", default=",".join(map(str, ARCHS)), help="compute capabilities, comma-separated")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes")
    p.add_argument("--cache", default="fresh",
                   help="'fresh': an empty Triton cache (real compile times, the default); 'keep': the "
                        "environment's; else a directory")
    p.add_argument("--json", help="payload path (default tests/gpu-compile.json)")
    p.add_argument("--md", help="table path (default tests/gpu-compile.md)")
    p.add_argument("--no-table", action="store_true", help="write no markdown table")
    args = p.parse_args(argv)
    if _clean_env() != dict(os.environ):  # start again without the interpreter
        argv = sys.argv[1:] if argv is None else argv
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=_clean_env(),
                              cwd=ROOT).returncode
    with contextlib.ExitStack() as stack:
        if args.cache == "fresh":
            os.environ["TRITON_CACHE_DIR"] = stack.enter_context(tempfile.TemporaryDirectory())
        elif args.cache != "keep":
            os.environ["TRITON_CACHE_DIR"] = args.cache
        payload = run(args.set, [int(a) for a in args.arch.split(",")], args.jobs)
    payload["cache"] = args.cache if args.cache in ("fresh", "keep") else "dir"
    found = problems(payload)
    json_path = Path(args.json) if args.json else TABLE.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(dumps(payload))
    if not args.no_table:
        sys.path.insert(0, str(ROOT))  # bench/ is not part of the installed package
        from bench.common import cpu_name

        md_path = Path(args.md) if args.md else TABLE.with_suffix(".md")
        md_path.write_text(markdown(payload, f"{cpu_name()} ({os.cpu_count()} cores, shared)"))
    print(f"{sum(payload['frontend']['checked'].values())} front-end checks, {len(payload['rows'])} cubins in "
          f"{payload['seconds']:.0f} s; "
          f"{len(found)} problems")
    for line in found[:40]:
        print("  " + line)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
