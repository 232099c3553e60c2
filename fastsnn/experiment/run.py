"""A whole run: build data and model from a config, train, evaluate, write the run folder.

A run folder holds ``config.json`` from its start and, while it trains, ``resume.pt``: the epoch
checkpoint (weights, optimizer, random stream, history, best snapshot, early-stopping verdict),
replaced after every epoch. A finished run adds ``checkpoint.pt``, ``history.csv``, the PNG figures
``inputs.png``, ``loss.png``, ``ipd_hist_{train,test}.png``, ``confusion_{train,test}.png`` and, last,
``metrics.json``, then drops ``resume.pt``. Every file is written under a temporary name and renamed
into place (:mod:`fastsnn.experiment.files`), so at any moment the folder holds whole files of the one run that
``config.json`` describes, and a killed run continues from its last finished epoch with ``resume=True``.
The process that writes a run folder holds its lock throughout.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import itertools
import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Iterator

import torch

from fastsnn import __version__
from fastsnn.cpu.cache import module_cached, persistent
from fastsnn.cpu.threads import auto_threads, check_threads, using_threads
from fastsnn.ops import cpu_kernels_cached, resolve_backend

from .config import RunConfig
from .evaluate import Evaluation, evaluate
from .files import TMP_PREFIX, atomic_write, locked, replacing
from .model import IPDNetwork
from .stimulus import IPDDataset
from .training import FitResult, StateMismatch, fit

# The named random streams of a run. Each data set has its own: `evaluate --seed S` redraws exactly
# the test set (and its phase offset) of the run trained with --seed S, and shares no stream with
# the sets of any other seed.
STREAMS = ("model", "train_set", "valid_set", "test_set", "train", "eval_train", "eval_test", "figures")
RESUME = "resume.pt"
# Files a run (or `fastsnn evaluate` into its folder) writes: the finished marker first, config.json last.
_OWN_FILES = ("metrics.json", "evaluate-seed*.json", "checkpoint.pt", "history.csv", "*.png", RESUME, "config.json")


def generator(seed: int, stream: str) -> torch.Generator:
    """The CPU generator of one named stream of a run, seeded with 64 bits of BLAKE2b(stream, seed)."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    digest = hashlib.blake2b(f"{stream}/{seed}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def dataset(config: RunConfig, which: str, seed: int, device: torch.device | str = "cpu") -> IPDDataset:
    """The ``which`` set ("train", "valid" or "test") of a run with ``seed``, drawn from its own stream
    (a fixed phase included), with its phase jitter."""
    samples = getattr(config.train, f"{which}_samples")
    return IPDDataset.random(samples, config.stimulus, generator(seed, f"{which}_set"), device,
                             config.stimulus.jitter(which))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


# memory ------------------------------------------------------------------------------------------------

# The sizes a user sets, each with the flag that sets it (steps and num_classes: config fields, --grid keys).
_SIZE_FLAGS = {"hidden": "--hidden", "anf_per_ear": "--anf-per-ear", "batch_size": "--batch-size",
               "train_samples": "--train-batches", "valid_samples": "--train-batches",
               "test_samples": "--test-batches", "segments": "--segments", "max_delay": "--max-delay",
               "steps": "steps (a config field)", "num_classes": "num_classes (a config field)"}


def _sizes(config: RunConfig) -> dict[str, int]:
    flat = {**asdict(config.stimulus), **asdict(config.model), **asdict(config.train)}
    return {key: flat[key] for key in _SIZE_FLAGS}


def memory_estimate(hidden: int, anf_per_ear: int, batch_size: int, train_samples: int, valid_samples: int,
                    test_samples: int, segments: int, max_delay: int, steps: int, num_classes: int) -> int:
    """Bytes a run holds at its peak, roughly: float32 weights five times (value, gradient, Adam's two
    moments, best snapshot; one hidden weight column per dendritic segment, and a delay per synapse), the
    delays' (inputs, max_delay + 1, columns) kernel three times, one batch's float32 (steps, inputs) spikes
    and (steps, hidden) and (steps, num_classes) activations twice (measured: 1.7 times at batch 4096, 256
    hidden units), the segments' currents and filter states eight times and the delays' input gradient
    four (measured: 7 and 2.5 times at batch 256, 16 segments and max_delay 50), the float64 confusion
    matrix three times, and 40 bytes per data set sample. The estimate is the growth above the ~0.7 GB a
    process starts with (torch, numba, the figures)."""
    inputs = 2 * anf_per_ear
    columns = hidden * max(segments, 1)
    weights = 5 * 4 * (inputs * columns * (2 if max_delay else 1) + hidden * num_classes)
    kernel = 3 * 4 * inputs * (max_delay + 1) * columns if max_delay else 0
    per_step = inputs + hidden + num_classes + (4 * columns if segments else 0) + (2 * inputs if max_delay else 0)
    batch = 2 * 4 * batch_size * steps * per_step
    confusion = 3 * 8 * num_classes ** 2
    samples = 40 * (train_samples + valid_samples + test_samples)
    return weights + kernel + batch + confusion + samples


def memory_capacity(device: torch.device) -> int:
    """Bytes of memory on ``device``: the GPU's, or the machine's RAM (capped by a cgroup v2 limit)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def memory_need(config: RunConfig) -> int:
    """Bytes a run of ``config`` holds at its peak, roughly (:func:`memory_estimate` of its sizes)."""
    return memory_estimate(**_sizes(config))


def _check_memory(config: RunConfig, device: torch.device) -> None:
    sizes = _sizes(config)
    need, have = memory_need(config), memory_capacity(device)
    if need <= have:
        return
    defaults = _sizes(RunConfig())

    def if_default(key: str) -> int:
        return memory_estimate(**{**sizes, key: min(sizes[key], defaults[key])})

    culprit = min(_SIZE_FLAGS, key=if_default)
    where = "this machine's RAM" if device.type == "cpu" else str(device)
    raise ValueError(f"this run needs about {_bytes(need)} of memory, more than the {_bytes(have)} of {where}; "
                     f"lower {_SIZE_FLAGS[culprit]}")


def _bytes(n: int) -> str:
    """``n`` bytes in decimal units: '3.2 GB', '107 TB'."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000


def check_run(config: RunConfig) -> torch.device:
    """Fail before any work when ``config`` cannot run here (device, backend, :func:`check_size`); return its
    device."""
    device = resolve_device(config.train.device)
    resolve_backend(config.model.backend, device)
    check_size(config, device)
    return device


def check_size(config: RunConfig, device: torch.device) -> None:
    """Fail when ``config`` asks for more threads than this process's CPUs or more memory than ``device`` has."""
    check_threads(thread_setting(config.train.threads))
    _check_memory(config, device)


def thread_setting(threads: int | None) -> int | str:
    """A config's ``threads`` as :func:`fastsnn.cpu.threads.set_threads` takes it (None: "auto")."""
    return threads if threads is not None else "auto"


# the run folder ----------------------------------------------------------------------------------------

def new_run_dir(root: Path = Path("runs")) -> Path:
    """Create and return a new ``root/<timestamp>`` (``-2``, ``-3``, ... when taken). ``mkdir`` is atomic,
    so two runs started in the same second never share a folder."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        path = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def load_run_config(out: Path) -> RunConfig:
    """The configuration of the run in folder ``out`` (raises ValueError when it holds none)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise ValueError(f"{out} is not a fastsnn run folder: it has no config.json")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a fastsnn run configuration: {err}") from None


def _claim(out: Path, stack: ExitStack, holder: str = "a fastsnn run") -> None:
    """Create ``out`` if needed and hold its lock until ``stack`` closes (``holder``: what this process is,
    for the message another one gets)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(locked(out, holder))
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _clear(out: Path) -> None:
    """Remove what a run left in ``out``: the finished marker first, config.json last."""
    for pattern in (*_OWN_FILES, TMP_PREFIX + "*"):
        for path in sorted(out.glob(pattern)):
            path.unlink()


def _start(out: Path, config: RunConfig, overwrite: bool) -> None:
    """Begin a run in the claimed folder ``out``: refuse another run's files unless ``overwrite``."""
    taken = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if taken:
        if not (out / "config.json").is_file():
            raise ValueError(f"--out {out} is not empty and holds no fastsnn run ({', '.join(taken[:3])}, ...); "
                             "choose another --out")
        load_run_config(out)  # only ever delete a folder that really holds a run
        if not overwrite:
            raise ValueError(f"--out {out} already holds a run; pass --overwrite to replace it, "
                             f"or `fastsnn train --resume {out}` to continue it")
    _clear(out)
    atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")


def _resume_state(out: Path, config: RunConfig) -> dict | None:
    """The epoch checkpoint of the run in ``out`` (which must be of ``config``), or None to start afresh."""
    if not (out / "config.json").is_file():
        _start(out, config, overwrite=False)
        return None
    if load_run_config(out) != config:
        raise ValueError(f"{out} holds a run of another configuration; resume it with its own flags, "
                         "or choose another --out")
    if not (out / RESUME).is_file():  # killed before its first epoch ended
        _start(out, config, overwrite=True)
        return None
    return _load(out / RESUME, "model", "optimizer", "generator", "result", "seconds")


def _save(out: Path, name: str, write) -> None:
    """Write ``out/name`` atomically: ``write`` receives the temporary path."""
    with replacing(out / name) as tmp:
        write(tmp)


def _save_torch(obj, path: Path) -> None:
    """``torch.save`` through a Python file, whose write errors keep their errno (torch's own writer turns a
    full disk into "unexpected pos")."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _save_epoch(out: Path, state: dict) -> None:
    _save(out, RESUME, lambda path: _save_torch(state, path))


def _write_history(path: Path, history: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_loss", "seconds"])
        writer.writeheader()
        writer.writerows(history)


def _figure_names(label: str) -> tuple[str, str]:
    """The files of an evaluation's figures: its IPD histograms and its confusion matrix."""
    return f"ipd_hist_{label}.png", f"confusion_{label}.png"


def _figures(out: Path, label: str, result: Evaluation, num_classes: int) -> None:
    from . import plots  # matplotlib (~1 s to import) only once a run draws, not before its first epoch

    hist, confusion = _figure_names(label)
    _save(out, hist, lambda path: plots.ipd_histogram(result, num_classes, path, label))
    _save(out, confusion, lambda path: plots.confusion_matrix(result, path, label))


def run_title(out: Path, config: RunConfig) -> str:
    """A run's identity for its figures: "hidden64: seed 0, hidden=64, lr=0.01" (the settings away from the
    seed network's defaults, the CPU thread count aside: it does not change the results)."""
    changed = {key: value for key, value in config.changes().items() if key not in ("seed", "threads")}
    settings = ", ".join(f"{key}={value}" for key, value in changed.items()) or "the seed network's defaults"
    return f"{out.name}: seed {config.train.seed}, {settings}"


def _run_figures(out: Path, config: RunConfig, history: list[dict], inputs: Path | None) -> None:
    """``inputs.png`` (drawn from the run's ``figures`` stream: the same file for every run of one seed and
    stimulus, so ``inputs``, such a run's, is copied where given) and ``loss.png``."""
    from . import plots

    if inputs is None:
        figures = generator(config.train.seed, "figures")
        _save(out, "inputs.png", lambda path: plots.input_rasters(config.stimulus, path, figures))
    else:
        _save(out, "inputs.png", lambda path: path.write_bytes(inputs.read_bytes()))
    _save(out, "loss.png", lambda path: plots.loss_curves(history, path, run_title(out, config)))


def _kernels_cached(backend: str, delays: bool = False) -> bool:
    """Whether numba's disk cache holds the CPU kernels this run calls (False on a first run, where
    compiling them takes ~30 s). ``delays``: the run has learnable delays (their kernels too)."""
    from . import stimulus_cpu

    return module_cached(stimulus_cpu) and (backend != "cpu" or cpu_kernels_cached(delays))


def _threads_used() -> dict:
    """``threads``: the run's CPU thread count (with ``threads_auto``, the most it used, and
    ``threads_lowest`` the fewest: :mod:`fastsnn.cpu.threads`)."""
    auto = auto_threads()
    if auto is None:
        return {"threads": torch.get_num_threads(), "threads_auto": False}
    return {"threads": auto.maximum, "threads_auto": True, "threads_lowest": auto.lowest}


class RunFolder:
    """The folder of one run while a process trains it: claimed (its lock held until ``stack`` closes),
    then started afresh (``resume`` False: refused if it holds a run, unless ``overwrite``) or resumed.

    After construction ``metrics`` holds a finished run's metrics (resume found it done: nothing to train),
    else ``state`` its epoch checkpoint to continue from (None: from the start) and ``before`` the seconds
    the earlier sessions spent. :meth:`save_epoch` writes ``resume.pt`` after each epoch and :meth:`finish`
    evaluates the trained model and writes the finished run's files. A solo run and each member of a
    pack (:mod:`fastsnn.experiment.pack`) write through it, so the two write the same files.
    """

    def __init__(self, out: Path, config: RunConfig, stack: ExitStack, overwrite: bool = False,
                 resume: bool = False):
        self.out, self.config = Path(out), config
        self.metrics: dict | None = None
        self.state: dict | None = None
        _claim(self.out, stack)
        if not resume:
            _start(self.out, config, overwrite)
        elif (self.out / "metrics.json").is_file() and load_run_config(self.out) == config:  # finished already
            (self.out / RESUME).unlink(missing_ok=True)
            self.metrics = json.loads((self.out / "metrics.json").read_text())
        else:
            self.state = _resume_state(self.out, config)
        self.before = self.state.pop("seconds") if self.state is not None else 0.0

    def save_epoch(self, state: dict, seconds: float) -> None:
        """``resume.pt``: the training state :func:`~.training.fit` gives after an epoch, and the seconds so far."""
        _save_epoch(self.out, {**state, "config": self.config.to_dict(), "seconds": seconds})

    def mismatch(self, err: StateMismatch) -> ValueError:
        """The one-line error for a ``resume.pt`` that training cannot continue from."""
        return ValueError(f"{self.out / RESUME} does not fit the run in {self.out} ({err}); delete it to train the "
                          "run from its first epoch")

    def finish(self, model: torch.nn.Module, result: FitResult, device: torch.device, backend: str,
               train_seconds: float, elapsed, train_set: IPDDataset, test_set: IPDDataset,
               inputs: Path | None = None) -> dict:
        """Evaluate ``model`` (trained, its best weights restored) on the training and test sets, write
        ``checkpoint.pt``, ``history.csv``, the figures and, last, ``metrics.json``, drop ``resume.pt``; return
        the metrics. ``elapsed()``: the run's seconds so far. ``inputs``: an ``inputs.png`` of this seed and
        stimulus to copy instead of drawing it again."""
        out, config, tc = self.out, self.config, self.config.train
        on_train = evaluate(model, train_set, tc.batch_size, generator(tc.seed, "eval_train"))
        on_test = evaluate(model, test_set, tc.batch_size, generator(tc.seed, "eval_test"))
        metrics = {
            **on_test.summary("test"), **on_train.summary("train"),
            "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss if tc.validation else None,
            "stopped_early": result.stopped_early, "restored_best": result.restored_best,
            "train_seconds": train_seconds, "wall_seconds": elapsed(),
            "device": str(device), "backend": backend, **_threads_used(),
            "fastsnn_version": __version__, "torch_version": str(torch.__version__),
        }
        checkpoint = {"config": config.to_dict(), "state_dict": model.state_dict(), "metrics": metrics}
        _save(out, "checkpoint.pt", lambda path: _save_torch(checkpoint, path))
        _save(out, "history.csv", lambda path: _write_history(path, result.history))
        _run_figures(out, config, result.history, inputs)
        _figures(out, "train", on_train, config.stimulus.num_classes)
        _figures(out, "test", on_test, config.stimulus.num_classes)
        metrics["wall_seconds"] = elapsed()
        atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        (out / RESUME).unlink()
        return metrics


def train_run(config: RunConfig, out: Path | None = None, progress: bool = True, overwrite: bool = False,
              resume: bool = False) -> dict:
    """Train and evaluate the seed network as ``config`` says into the run folder ``out`` (default: a new
    ``runs/<timestamp>``); return the metrics.

    ``out`` must be empty or absent, unless ``overwrite`` (a previous run there is removed first) or
    ``resume``: a run killed there continues from its last finished epoch and ends with exactly
    the weights and metrics it would have had uninterrupted; a finished one returns its metrics.
    ``wall_seconds`` and ``train_seconds`` add up the sessions, up to each one's last saved epoch.
    A full disk raises ``ValueError`` saying so (the run stays resumable).
    """
    device = check_run(config)
    out = Path(out) if out is not None else new_run_dir()
    with no_space_is_one_line(out):
        return _train_run(config, device, out, progress, overwrite, resume)


@contextmanager
def no_space_is_one_line(out: Path) -> Iterator[None]:
    """A full disk while training into ``out`` raises ``ValueError`` saying so and how to continue."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ValueError(f"{err.strerror}; free space there, then `fastsnn train --resume {out}` continues from "
                         "the last saved epoch") from None


def _train_run(config: RunConfig, device: torch.device, out: Path, progress: bool, overwrite: bool,
               resume: bool) -> dict:
    start = time.perf_counter()
    tc = config.train
    with ExitStack() as stack:
        stack.enter_context(using_threads(thread_setting(tc.threads)))
        folder = RunFolder(out, config, stack, overwrite, resume)
        if folder.metrics is not None:
            return folder.metrics

        def elapsed() -> float:
            return folder.before + time.perf_counter() - start

        model = build_model(config, device)
        train_set, valid_set, test_set = (dataset(config, which, tc.seed, device) if which != "valid" or tc.validation
                                          else None for which in ("train", "valid", "test"))
        backend = resolve_backend(config.model.backend, device)
        delays = config.model.max_delay > 0 or config.model.readout_max_delay > 0
        if progress and device.type == "cpu" and not _kernels_cached(backend, delays):
            when = "first run only" if persistent() else "no kernel cache: every run"
            print(f"compiling CPU kernels ({when}, ~30 s)", file=sys.stderr, flush=True)
        try:
            result = fit(model, train_set, valid_set, tc, generator(tc.seed, "train"), progress=progress,
                         state=folder.state, on_epoch=lambda s: folder.save_epoch(s, elapsed()))
        except StateMismatch as err:
            raise folder.mismatch(err) from None
        return folder.finish(model, result, device, backend, elapsed(), elapsed, train_set, test_set)


# checkpoints -------------------------------------------------------------------------------------------

def _load(path: Path, *keys: str) -> dict:
    """A dict saved by fastsnn with at least ``keys``; ValueError "not a fastsnn checkpoint" otherwise."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for empty, truncated or foreign files
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"not a fastsnn checkpoint: {path} cannot be read ({reason})") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        what = "a bare state dict" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise ValueError(f"not a fastsnn checkpoint: {path} holds {what} without {', '.join(missing)}")
    return data


def build_model(config: RunConfig, device: torch.device) -> IPDNetwork:
    resolve_backend(config.model.backend, device)  # fail before any work if it cannot run here
    return IPDNetwork(config.stimulus, config.model, generator(config.train.seed, "model")).to(device)


def load_checkpoint(path: Path, device: torch.device | str = "cpu", backend: str | None = None):
    """(config, model) from a ``checkpoint.pt``; ``backend`` overrides the one it was trained with."""
    data = _load(path, "config", "state_dict")
    try:
        config = RunConfig.from_dict(data["config"])
        if backend is not None:
            config = replace(config, model=replace(config.model, backend=backend))
        model = build_model(config, torch.device(device))
        model.load_state_dict(data["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:  # RuntimeError: weights that do not fit the config
        raise ValueError(f"not a fastsnn checkpoint: {path}: {str(err).splitlines()[0]}") from None
    return config, model


def evaluation_files(checkpoint: Path, seed: int, out: Path | None = None) -> list[Path]:
    """What :func:`evaluate_checkpoint` writes: ``evaluate-seed{seed}.json`` and its two figures, in ``out``
    (default: the checkpoint's folder, the run's)."""
    out = Path(out) if out is not None else Path(checkpoint).parent
    return [out / f"evaluate-seed{seed}.json", *(out / name for name in _figure_names(f"eval-seed{seed}"))]


def evaluate_checkpoint(path: Path, seed: int, out: Path | None = None, device: str = "auto",
                        backend: str | None = None, threads: int | str | None = None) -> dict:
    """Evaluate a checkpoint on the test set of ``seed``: the run's own test set when ``seed`` is its
    training seed (the metrics then equal its ``metrics.json``), a fresh one otherwise. Writes
    ``evaluate-seed{seed}.json`` and its figures to ``out`` (default: the checkpoint's folder).
    ``threads``: CPU threads (an integer or "auto"; default: the run's), which do not change the results."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    dev = resolve_device(device)
    config, model = load_checkpoint(path, dev, backend)
    tc = replace(config.train, seed=seed)  # validates the seed
    if threads is None:
        threads = thread_setting(tc.threads)
        try:
            check_threads(threads)
        except ValueError as err:  # a run of a larger machine, or a hand-edited config
            raise ValueError(f"{path}: the run's {err}; pass --threads") from None
    check_threads(threads)
    json_path = evaluation_files(path, seed, out)[0]
    out = json_path.parent
    with ExitStack() as stack:
        _claim(out, stack, "fastsnn evaluate")  # not while a run trains in its folder
        test_set = dataset(config, "test", seed, dev)
        with using_threads(threads):
            result = evaluate(model, test_set, tc.batch_size, generator(seed, "eval_test"))
        metrics = {**result.summary("test"), "checkpoint": str(path), "seed": seed, "samples": tc.test_samples}
        atomic_write(json_path, json.dumps(metrics, indent=2) + "\n")
        _figures(out, f"eval-seed{seed}", result, config.stimulus.num_classes)
    return metrics
