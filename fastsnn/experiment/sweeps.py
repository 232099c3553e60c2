"""Sweeps: one trained and evaluated model per (grid point, seed), one row each in ``results.csv``.

A sweep folder ``DIR`` holds:

- ``results.csv``: one row per finished (point, seed), in :data:`COLUMNS` order (every config field,
  the test and train metrics, wall time, peak memory, where it ran: host, CPU model, GPU name on CUDA,
  ``status`` ok/failed, ``error``).
  Only the driver writes it, one whole line per ``write`` on an ``O_APPEND`` descriptor followed by
  ``fsync``, so a kill loses at most the runs in flight; a last line cut short is dropped on the next run.
- ``runs/<id>/``: each run's full folder, as ``fastsnn train`` writes it; a run killed in flight
  resumes there from its last finished epoch when the sweep runs again.
- ``sweep.json``: the base configuration, the grid and the seeds of the last invocation.
- ``summary.md``, ``summary.csv`` (:mod:`fastsnn.experiment.sweep_summary`) and figures named for the swept keys
  (:mod:`fastsnn.experiment.sweep_plots`), such as ``accuracy_vs_tau_ms.png``.

A point's ``id`` is a hash of its full configuration, seed included, so rerunning a command skips the
rows already there, a grown grid runs only its new points, and a failed row is retried.

Executors: ``local`` runs in this process (``workers=1``) or in ``workers`` fresh spawned processes with
``cores // workers`` torch threads each, which exit when the driver dies; ``ray`` runs one Ray task per
point (one GPU per task when the cluster has GPUs) on an existing cluster or a local one, which listens on
127.0.0.1 only (Ray's default binds every interface); an ``address`` where nothing answers fails in
:data:`CONNECT_TIMEOUT_S` seconds. On a multi-node cluster every node needs fastsnn installed and ``DIR``
on a file system they all see: the workers write the run folders, the driver writes ``results.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import platform
import socket
import tempfile
import threading
from dataclasses import dataclass, fields, replace
from datetime import datetime
from multiprocessing.connection import wait
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from . import sweep_summary
from .config import ModelConfig, RunConfig, StimulusConfig, TrainConfig
from .files import atomic_write, locked
from .pack import pack_key, stream_key, train_pack
from .run import check_size, memory_capacity, memory_need, resolve_device, train_run

EXECUTORS = ("local", "ray")
_SECTIONS = {"stimulus": StimulusConfig, "model": ModelConfig, "train": TrainConfig}
# field name -> (config section, annotation such as "int" or "float | None")
FIELDS = {f.name: (section, f.type) for section, kind in _SECTIONS.items() for f in fields(kind)}
METRICS = ("test_accuracy", "test_abs_error_deg", "train_accuracy", "train_abs_error_deg", "epochs_run", "best_epoch",
           "wall_seconds", "peak_rss_mib", "peak_cuda_mib", "device_used", "backend_used", "threads_used", "host",
           "cpu_model", "gpu_model", "finished", "status", "error")
COLUMNS = ("id", "name", *FIELDS, *METRICS)
_HEADER = ",".join(COLUMNS) + "\n"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Point:
    """One (grid point, seed): ``id`` names its run folder, ``name`` lists its grid values and seed."""

    id: str
    name: str
    config: RunConfig


# The train flags that are no config field, as grid keys in the flag's own units: (type, the fields they set)
FLAG_KEYS = {"train_batches": ("int", ("train_samples", "valid_samples")), "test_batches": ("int", ("test_samples",)),
             "keep_final": ("bool", ("restore_best",)), "no_validation": ("bool", ("validation",))}


def _flag_fields(key: str, value, batch_size: int) -> dict:
    """The config fields that `fastsnn train --KEY value` sets, at ``batch_size``."""
    kind, names = FLAG_KEYS[key]
    if kind == "bool":
        return {names[0]: not value}
    if value < 1:
        raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    return dict.fromkeys(names, value * batch_size)


def _parse_value(key: str, text: str):
    """``text`` as a value of config field or flag key ``key`` ("" and "none": None, where None is allowed)."""
    kind = FIELDS[key][1] if key in FIELDS else FLAG_KEYS[key][0]
    base = kind.removesuffix(" | None")
    word = text.strip()
    if base != kind and word.lower() in ("none", ""):
        return None
    if base == "bool":
        if word.lower() not in _TRUE + _FALSE:
            raise ValueError(f"--grid {key}: {text!r} is not a boolean; use true/false (or 1/0)")
        return word.lower() in _TRUE
    if base in ("int", "float"):
        try:
            return int(word) if base == "int" else float(word)
        except ValueError:
            raise ValueError(f"--grid {key}: {text!r} is not {'an integer' if base == 'int' else 'a number'}") from None
    return word


def parse_grid(specs: Sequence[str]) -> dict[str, list]:
    """``["hidden=8,16", "dales-law=true,false"]`` -> ``{"hidden": [8, 16], "dales_law": [True, False]}``.

    Keys are config field names (dashes read as underscores) except ``seed``, or the train flags of
    :data:`FLAG_KEYS` in the flag's units (``train-batches=16,32``); values are parsed with the field's
    type. Raises ``ValueError`` naming the bad spec.
    """
    grid: dict[str, list] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. hidden=8,16,32)")
        if key == "seed":
            raise ValueError("--grid seed: the seeds come from --seed (the first) and --seeds N (how many)")
        if key not in FIELDS and key not in FLAG_KEYS:
            valid = ", ".join(sorted((set(FIELDS) | set(FLAG_KEYS)) - {"seed"}))
            raise ValueError(f"--grid {spec!r}: unknown key {key!r}; valid keys: {valid}")
        if key in grid:
            raise ValueError(f"--grid {key} given twice; list all its values in one --grid {key}=V1,V2,...")
        texts = values.split(",")
        if any(not t.strip() for t in texts):
            raise ValueError(f"--grid {spec!r}: empty value; expected {key}=V1,V2,... with no empty item")
        parsed = []
        for text in texts:
            value = _parse_value(key, text)
            if value not in parsed:
                parsed.append(value)
        grid[key] = parsed
    for key in set(grid) & set(FLAG_KEYS):
        for name in set(grid) & set(FLAG_KEYS[key][1]):
            raise ValueError(f"--grid {key} sets {name}: give one of --grid {key} and --grid {name}")
    return grid


# The config fields of the first results.csv format. A field added since is hashed into a point's id
# only when it is set away from its default, so the points of a sweep run before it keep their ids
# (and a rerun skips them), while a point that uses it gets an id of its own.
_FIRST_FIELDS = frozenset((
    "anf_per_ear steps dt_ms rate_max_hz tone_hz envelope_power num_classes phase_offset hidden tau_ms "
    "readout_tau_ms threshold beta detach_reset learn_tau dales_law ie_ratio dale_mask backend epochs lr "
    "batch_size train_samples valid_samples test_samples loss_scale patience min_epochs restore_best seed "
    "device threads").split())


def _identity(config: RunConfig) -> dict:
    """``config`` as a dict of what decides its run: the loss scale the run applies (a default of None
    since version 0.1's first sweeps, which wrote the sum readout's 0.01: both name one run)."""
    data = config.to_dict()
    data["train"]["loss_scale"] = config.loss_scale
    return data


def point_id(config: RunConfig) -> str:
    """12 hex digits of the SHA-1 of the configuration's :func:`_identity` (seed included; later fields only
    when set)."""
    defaults = RunConfig().to_dict()
    data = {section: {key: value for key, value in values.items()
                      if key in _FIRST_FIELDS or value != defaults[section][key]}
            for section, values in _identity(config).items()}
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _row_id(row: dict) -> str:
    """The id this version gives the point of a results row (read back from its config columns): a row of
    an earlier version keeps counting as done when a default's spelling changed since; its stored id
    where its columns do not make a valid configuration now."""
    try:
        return point_id(RunConfig.from_dict({section: {f.name: _parse_value(f.name, row[f.name]) for f in fields(kind)}
                                             for section, kind in _SECTIONS.items()}))
    except (ValueError, TypeError):
        return row["id"]


def _flat(config: dict) -> dict:
    return {key: value for section in config.values() for key, value in section.items()}


def expand(base: RunConfig, grid: dict[str, list], seeds: Sequence[int]) -> list[Point]:
    """The cartesian product of ``grid`` times ``seeds`` as validated points, seed-major (every point of the
    first seed, then of the next), so that a sweep cut short has covered the grid once."""
    points = []
    for seed, values in itertools.product(seeds, itertools.product(*grid.values())):
        overrides = {**dict(zip(grid, values)), "seed": seed}
        name = ",".join(f"{key}={value}" for key, value in overrides.items())
        batch_size = overrides.get("batch_size", base.train.batch_size)
        changes: dict[str, dict] = {section: {} for section in _SECTIONS}
        try:
            for key, value in overrides.items():
                for field, v in (_flag_fields(key, value, batch_size) if key in FLAG_KEYS else {key: value}).items():
                    changes[FIELDS[field][0]][field] = v
            config = RunConfig(**{s: replace(getattr(base, s), **c) for s, c in changes.items()})
        except ValueError as err:
            raise ValueError(f"grid point {name}: {err}") from None
        points.append(Point(point_id(config), name, config))
    return points


def seeds_of(base: RunConfig, count: int) -> list[int]:
    """``count`` seeds starting at the base config's seed."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"--seeds must be an integer >= 1, got {count!r}")
    return list(range(base.train.seed, base.train.seed + count))


# results.csv ------------------------------------------------------------------------------------------

def _whole_lines(path: Path) -> str:
    """The text of ``results.csv`` up to its last newline ("" when absent), in this version's columns.

    A file written before a config field or metric was added (its columns a subset of ours) reads
    with the field's default and an empty metric; any other header is refused.
    """
    text = path.read_text() if path.is_file() else ""
    text = text[: text.rfind("\n") + 1]
    if not text or text.startswith(_HEADER):
        return text
    header = text[: text.find("\n")].split(",")
    if header[:2] != ["id", "name"] or not set(header) <= set(COLUMNS):
        raise ValueError(f"{path} has other columns than this fastsnn version writes; use another --out")
    defaults = _flat(RunConfig().to_dict())
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _rows(text, path):
        writer.writerow({**{k: defaults.get(k, "") for k in COLUMNS if k not in row}, **row})
    return out.getvalue()


def _rows(text: str, path: Path) -> list[dict]:
    """The rows of ``text``, read from ``path``; ValueError naming the line that the csv module refuses."""
    rows: list[dict] = []
    try:
        rows.extend(csv.DictReader(io.StringIO(text)))
    except csv.Error as err:  # e.g. a field over its 128 KiB limit: not a line this module wrote (one per row)
        raise ValueError(f"{path} line {len(rows) + 2}: {err}; fastsnn writes no such line: remove it") from None
    return rows


def read_results(path: Path) -> list[dict]:
    """The rows of a ``results.csv`` (all strings), oldest first; a last line cut short is ignored."""
    return _rows(_whole_lines(Path(path)), Path(path))


def finished(rows: list[dict]) -> list[dict]:
    """The ``status == "ok"`` rows, the latest one per id."""
    return list({row["id"]: row for row in rows if row["status"] == "ok"}.values())


def _prepare_results(path: Path) -> None:
    """Create ``results.csv`` with its header, or drop a last line cut short by a kill."""
    complete = _whole_lines(path) or _HEADER
    if not path.is_file() or complete != path.read_text():
        atomic_write(path, complete)


def _append(path: Path, row: dict) -> None:
    buf = io.StringIO()
    csv.DictWriter(buf, COLUMNS, lineterminator="\n").writerow(row)
    line = buf.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        if os.write(fd, line) != len(line):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


# one point --------------------------------------------------------------------------------------------

def _reset_peak_rss() -> None:
    """Restart the kernel's record of this process's peak resident memory (Linux >= 4.0; else a no-op)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    """Peak resident memory since the last :func:`_reset_peak_rss` (Linux), else since the process began."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # bytes on macOS


def cpu_model() -> str:
    """The CPU's name: ``model name`` in /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _row(point: Point, **values) -> dict:
    return {"id": point.id, "name": point.name, **_flat(point.config.to_dict()), "host": socket.gethostname(),
            "cpu_model": cpu_model(), "finished": datetime.now().isoformat(timespec="seconds"), **values}


def _failed(point: Point, message: str, **values) -> dict:
    """A ``status="failed"`` row; the message on one line, at most 1000 characters."""
    return _row(point, status="failed", error=" ".join(message.split())[:1000], **values)


def run_point(point: Point, runs_dir: str, threads: int | None = None) -> dict:
    """Train and evaluate ``point`` in this process exactly as ``fastsnn train`` would, into
    ``runs_dir/<id>/`` (resuming a run killed there); return its results row. An exception becomes a
    ``status="failed"`` row.

    ``threads`` sets torch's CPU threads first (the point's own ``threads`` field, if set, wins).
    ``peak_rss_mib``: peak resident memory of this process during the run; ``peak_cuda_mib``: peak
    memory torch allocated on the GPU (empty on CPU).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    _reset_peak_rss()
    try:
        device = resolve_device(point.config.train.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        m = train_run(point.config, Path(runs_dir) / point.id, progress=False, resume=True)
    except Exception as err:  # the row records it; the next run of the sweep retries the point
        return _failed(point, f"{type(err).__name__}: {err}", peak_rss_mib=round(_peak_rss_mib(), 1))
    return _finished_row(point, m, device)


def _finished_row(point: Point, m: dict, device: torch.device) -> dict:
    """The row of ``point``, whose run ended with metrics ``m`` on ``device``."""
    cuda_mib = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    return _row(point, **{k: m[k] for k in ("test_accuracy", "test_abs_error_deg", "train_accuracy",
                                            "train_abs_error_deg", "best_epoch")},
                epochs_run=m["epochs"], wall_seconds=round(m["wall_seconds"], 3),
                peak_rss_mib=round(_peak_rss_mib(), 1), peak_cuda_mib=cuda_mib,
                device_used=m["device"], backend_used=m["backend"], threads_used=m["threads"],
                gpu_model=torch.cuda.get_device_name(device) if device.type == "cuda" else "", status="ok", error="")


def run_pack(points: list[Point], runs_dir: str, threads: int | None = None) -> Iterator[dict]:
    """Train ``points`` (of one :func:`~fastsnn.experiment.pack.pack_key`) in this process as one pack
    (:func:`~fastsnn.experiment.pack.train_pack`; one point: :func:`run_point`), each into ``runs_dir/<id>/``
    as :func:`run_point` would write it; yield each one's results row as it finishes. An exception becomes
    ``status="failed"`` rows, for one point where it is that point's, else for every point not yet done.
    ``peak_rss_mib`` and ``peak_cuda_mib``: the pack's peaks so far."""
    if len(points) == 1:
        yield run_point(points[0], runs_dir, threads)
        return
    if threads is not None:
        torch.set_num_threads(threads)
    _reset_peak_rss()
    done = set()
    try:
        device = resolve_device(points[0].config.train.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i, outcome in train_pack([p.config for p in points], [Path(runs_dir) / p.id for p in points]):
            done.add(i)
            if isinstance(outcome, Exception):
                yield _failed(points[i], f"{type(outcome).__name__}: {outcome}", peak_rss_mib=round(_peak_rss_mib(), 1))
            else:
                yield _finished_row(points[i], outcome, device)
    except Exception as err:  # the rows record it; the next run of the sweep retries the points
        for i, point in enumerate(points):
            if i not in done:
                yield _failed(point, f"{type(err).__name__}: {err}", peak_rss_mib=round(_peak_rss_mib(), 1))


def _pack_rows(points: list[Point], runs_dir: str, threads: int | None = None) -> list[dict]:
    """:func:`run_pack`'s rows as a list (a Ray task's result)."""
    return list(run_pack(points, runs_dir, threads))


# packs --------------------------------------------------------------------------------------------------

PACK_SIZE = {"cpu": 32, "cuda": 256}  # the most runs in a pack by default, by device


def packs(points: list[Point], size: int | None = None, units: int = 1, device: str = "cpu",
          capacity: int | None = None) -> list[list[Point]]:
    """The units of work of a sweep: lists of points that train together as one pack
    (:mod:`fastsnn.experiment.pack`), one point alone being a solo run, in the points' order.

    Points of one :func:`~fastsnn.experiment.pack.pack_key` share packs of at most ``size`` runs (default
    :data:`PACK_SIZE` of ``device``) and, with ``capacity``, bytes of memory by :func:`~.run.memory_need`.
    Each stream's points (one seed and stimulus: :func:`~fastsnn.experiment.pack.stream_key`) stay in one pack
    where they fit in one, so that its stimulus is computed once. Then, while there are fewer units than
    ``units`` (the processes that run them), the largest splits in two, between streams where it has several.
    ``size=1``: every point alone, as without packing.
    """
    limit = size if size is not None else PACK_SIZE[device]
    groups: dict[tuple, dict[tuple, list[Point]]] = {}
    for point in points:
        groups.setdefault(pack_key(point.config), {}).setdefault(stream_key(point.config), []).append(point)
    out = []
    for streams in groups.values():
        current: list[Point] = []
        for stream in streams.values():
            for chunk in _fitting(stream, limit, capacity):
                if current and not _fits(current + chunk, limit, capacity):
                    out.append(current)
                    current = []
                current = current + chunk
        out.append(current)
    while len(out) < units and any(len(unit) > 1 for unit in out):
        largest = max(out, key=len)
        at = out.index(largest)
        out[at:at + 1] = _halves(largest)
    return out


def _fits(points: list[Point], limit: int, capacity: int | None) -> bool:
    return len(points) <= limit and (capacity is None or sum(memory_need(p.config) for p in points) <= capacity)


def _fitting(stream: list[Point], limit: int, capacity: int | None) -> list[list[Point]]:
    """A stream's points in chunks that each fit a pack (the whole stream where it fits)."""
    chunks = [[]]
    for point in stream:
        if chunks[-1] and not _fits(chunks[-1] + [point], limit, capacity):
            chunks.append([])
        chunks[-1].append(point)
    return chunks


def _halves(unit: list[Point]) -> list[list[Point]]:
    """``unit`` in two parts of about equal size, cut between streams where it holds several."""
    keys = [stream_key(p.config) for p in unit]
    cuts = [i for i in range(1, len(unit)) if keys[i] != keys[i - 1]] or list(range(1, len(unit)))
    cut = min(cuts, key=lambda i: abs(2 * i - len(unit)))
    return [unit[:cut], unit[cut:]]


# executors --------------------------------------------------------------------------------------------

def _in_process(units: list[list[Point]], runs_dir: str) -> Iterator[dict]:
    for unit in units:
        yield from run_pack(unit, runs_dir)


def _exit_with_parent() -> None:
    """End this spawned process as soon as its parent dies, even by SIGKILL: a thread waits on the
    parent's sentinel, a pipe that the parent holds open for as long as it lives."""
    sentinel = multiprocessing.parent_process().sentinel
    threading.Thread(target=lambda: (wait([sentinel]), os._exit(1)), daemon=True).start()


def _child(conn, unit: list[Point], runs_dir: str, threads: int) -> None:
    _exit_with_parent()
    for row in run_pack(unit, runs_dir, threads):
        conn.send(row)
    conn.close()


def _in_processes(units: list[list[Point]], runs_dir: str, workers: int) -> Iterator[dict]:
    """Each unit (a pack, or one point) in a fresh spawned process, ``workers`` at a time, ``cores // workers``
    threads each; its rows come back as its runs finish."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    waiting, running = list(reversed(units)), {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                unit = waiting.pop()
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(writer, unit, runs_dir, threads), daemon=True)
                proc.start()
                writer.close()
                running[reader] = (proc, unit, set())
            for reader in wait(list(running)):
                proc, unit, reported = running[reader]
                try:
                    row = reader.recv()
                except EOFError:  # the process ended: its rows are all in, unless it died
                    del running[reader]
                    reader.close()
                    proc.join()
                    for point in unit:
                        if point.id not in reported:
                            yield _failed(point, f"worker process died with exit code {proc.exitcode} "
                                                 "(out of memory?)")
                    continue
                reported.add(row["id"])
                yield row
    finally:
        for proc, _, _ in running.values():
            proc.terminate()


# Ray binds a cluster it starts to every network interface, unless clusters are off (its default on macOS and
# Windows): then the node's address is 127.0.0.1 and every server of it listens there only. Ray reads the
# switch when it is imported.
_RAY_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 10.0


def _import_ray(local: bool):
    """``ray``; ``local``: a cluster it starts listens on 127.0.0.1 only (unless ray was imported before)."""
    if local:
        os.environ.setdefault(_RAY_LOCAL_ONLY, "0")
    try:
        import ray
    except ImportError:
        raise ImportError("--executor ray needs Ray: pip install 'fastsnn[ray]'") from None
    return ray


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in ``timeout`` seconds when nothing accepts a connection at ``address`` ("HOST:PORT" or
    "ray://HOST:PORT"; "auto" and "local" are Ray's own words): Ray itself retries for ever."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = f"no answer in {timeout:g} s" if isinstance(err, TimeoutError) else err.strerror or str(err)
        raise ConnectionError(f"--address {address}: no Ray cluster reachable there ({reason})") from None


def _on_ray(ray, points: list[Point], runs_dir: str, address: str | None, workers: int | None,
            pack: int | None = None) -> Iterator[dict]:
    """One Ray task per pack of :func:`packs` (at most ``pack`` runs; ``threads`` CPUs, or 1; one GPU when the
    cluster has any and the points may use it); a pack's rows come back to this driver when its task ends."""
    started = not ray.is_initialized()
    if started and address is not None:
        _check_reachable(address)
    if started:
        # Without a working_dir, Ray puts the driver's working directory first on the workers' sys.path,
        # where a folder holding a clone (`fastsnn/` without __init__.py) shadows the installed fastsnn
        # as a namespace package. An empty working_dir keeps it off.
        with tempfile.TemporaryDirectory() as empty:
            ray.init(address=address, include_dashboard=False, runtime_env={"working_dir": empty},
                     **({"num_cpus": workers} if workers is not None else {}))
    pending = {}
    try:
        resources = ray.cluster_resources()
        has_gpus = resources.get("GPU", 0) > 0
        on_gpus = [p for p in points if has_gpus and p.config.train.device != "cpu"]
        on_cpus = [p for p in points if not (has_gpus and p.config.train.device != "cpu")]
        # as many packs as the cluster runs at once: one per GPU, one per CPU (a task's threads)
        units = (packs(on_gpus, pack, int(resources.get("GPU", 0)), "cuda")
                 + packs(on_cpus, pack, int(resources.get("CPU", 1)), "cpu"))
        task = ray.remote(_pack_rows)
        for unit in units:
            cpus = unit[0].config.train.threads or 1
            gpus = 1 if unit[0] in on_gpus else 0
            pending[task.options(num_cpus=cpus, num_gpus=gpus).remote(unit, runs_dir, cpus)] = unit
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayError as err:
                    rows = [_failed(point, f"Ray: {err}") for point in unit]
                yield from rows
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def local_packs(points: list[Point], size: int | None = None, workers: int = 1) -> list[list[Point]]:
    """:func:`packs` for ``workers`` processes of this machine, by device, within its memory; a point of a
    device this machine lacks alone (its row says so)."""
    by_device: dict[str, list[Point]] = {}
    for point in points:
        by_device.setdefault(point.config.train.device, []).append(point)
    units = []
    for name, group in by_device.items():
        try:
            device = resolve_device(name)
        except ValueError:
            units += [[point] for point in group]
            continue
        units += packs(group, size, workers, device.type, memory_capacity(device))
    return units


# the sweep --------------------------------------------------------------------------------------------

def _check_base(out: Path, base: RunConfig, grid: dict[str, list]) -> None:
    """Refuse a base config that differs from the one ``out`` was swept with, outside the grid and seed (a
    field that version had not yet: its default)."""
    path = out / "sweep.json"
    if not path.is_file():
        return
    try:
        theirs = RunConfig.from_dict(json.loads(path.read_text())["base"])
    except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a fastsnn sweep file ({type(err).__name__}: {err}); it only records the "
                         "last sweep's flags: delete it to sweep into this folder again") from None
    theirs, mine = _flat(_identity(theirs)), _flat(_identity(base))
    swept = {"seed", *grid, *(name for key in set(grid) & set(FLAG_KEYS) for name in FLAG_KEYS[key][1])}
    differ = [key for key in mine if key not in swept and theirs[key] != mine[key]]
    if differ:
        listed = ", ".join(f"{key} ({theirs.get(key)!r} there, {mine[key]!r} now)" for key in differ)
        raise ValueError(f"{out} holds a sweep whose base configuration differs in {listed}; "
                         "pass the same flags, put the field in a --grid, or use another --out")


@dataclass
class Plan:
    """The points of a sweep and the ids ``results.csv`` already holds as finished."""

    points: list[Point]
    done: set[str]

    @property
    def todo(self) -> list[Point]:
        return [p for p in self.points if p.id not in self.done]


def plan(base: RunConfig, grid: dict[str, list], seeds: Sequence[int], out: Path) -> Plan:
    """Expand the grid and read what ``out`` already holds (raises ValueError on a bad grid or base)."""
    points = expand(base, grid, seeds)
    out = Path(out)
    _check_base(out, base, grid)
    ids = {p.id for p in points}
    return Plan(points, {_row_id(row) for row in finished(read_results(out / "results.csv"))} & ids)


def sweep(base: RunConfig, grid: dict[str, list], seeds: Sequence[int], out: Path, executor: str = "local",
          workers: int | None = None, address: str | None = None, progress: bool = True,
          pack: int | None = None) -> list[dict]:
    """Run every (point, seed) not yet finished in ``out/results.csv``, appending a row as each ends;
    return the new rows (:func:`report` then draws the figures). ``workers``: processes of the local
    executor (default 1: in this process), or the CPUs of the local Ray the ray executor starts.
    ``address``: the Ray cluster (default: a running local one, else a new one). ``pack``: the most runs
    trained together as one pack (:func:`packs`; default :data:`PACK_SIZE`; 1: none)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    for name, value in (("--workers", workers), ("--pack", pack)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if address is not None and executor != "ray":
        raise ValueError("--address is for --executor ray")
    if address is not None and workers is not None:
        raise ValueError("--workers sets the CPUs of a local Ray; a cluster at --address has its own")
    ray = _import_ray(local=address is None) if executor == "ray" else None
    points = expand(base, grid, seeds)  # a bad grid fails before anything is written
    if executor == "local":  # (Ray's workers may have devices and memory this driver has not)
        if (workers or 1) > 1 and any(resolve_device(p.config.train.device).type == "cuda" for p in points):
            raise ValueError("--workers > 1 runs CPU processes; on a GPU sweep with --workers 1 "
                             "(or --executor ray, one GPU per task), or pass --device cpu")
        for point in points:  # a point too large for this machine fails now, not after the others have run
            try:
                device = resolve_device(point.config.train.device)
            except ValueError:  # a device this machine lacks: the point's row says so
                continue
            try:
                check_size(point.config, device)
            except ValueError as err:
                raise ValueError(f"grid point {point.name}: {err}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = str((out / "runs").resolve())
    results = out / "results.csv"
    rows = []
    with locked(out, "a fastsnn sweep"):
        todo = plan(base, grid, seeds, out).todo
        atomic_write(out / "sweep.json", json.dumps({"base": base.to_dict(), "grid": grid, "seeds": list(seeds)},
                                                    indent=2) + "\n")
        _prepare_results(results)
        if ray is not None:
            stream = _on_ray(ray, todo, runs_dir, address, workers, pack)
        elif (workers or 1) > 1:
            stream = _in_processes(local_packs(todo, pack, workers), runs_dir, workers)
        else:
            stream = _in_process(local_packs(todo, pack), runs_dir)
        with tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress) as bar:
            for row in stream:
                _append(results, row)
                rows.append(row)
                bar.set_postfix_str(f"{row['name']}: " + (f"{100 * row['test_accuracy']:.1f}%"
                                                          if row["status"] == "ok" else "failed"))
                bar.update()
    return rows


def varying(rows: list[dict]) -> list[str]:
    """Config fields other than seed that take more than one value in ``rows``, but one whose values pair
    one to one with those of a field before it (``valid_samples`` after ``train_samples``, both set by a
    ``train-batches`` grid): one axis, named by the first."""
    keys: list[str] = []
    for key in FIELDS:
        count = len({row[key] for row in rows})
        if key != "seed" and count > 1 and not any(
                len({(row[k], row[key]) for row in rows}) == count == len({row[k] for row in rows}) for k in keys):
            keys.append(key)
    return keys


def report(out: Path, x: str | None = None, hue: str | None = None, metric: str = "test_accuracy") -> str:
    """(Re)draw the figures of ``out`` and write ``summary.md`` / ``summary.csv`` from its ``results.csv``
    (:mod:`fastsnn.experiment.sweep_plots`, :mod:`fastsnn.experiment.sweep_summary`); return the markdown summary. Raises
    ``ValueError`` when it holds no finished run or ``x`` / ``hue`` is not a swept key."""
    out = Path(out)
    results = out / "results.csv"
    if not results.is_file():
        raise ValueError(f"{results} does not exist")
    rows = finished(read_results(results))
    if not rows:
        raise ValueError(f"{results} holds no finished run")
    from . import sweep_plots  # matplotlib: only when a report draws

    layout = sweep_plots.layout({key: sweep_summary.values(rows, key) for key in varying(rows)}, x, hue)
    sweep_plots.draw(rows, layout, metric, out)
    return sweep_summary.write(rows, layout.keys, out)
