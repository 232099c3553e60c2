"""fastsnn sweep: a tiny grid with each executor (in this process, worker processes, Ray) gives the same
rows as `fastsnn train`; a run killed mid-sweep resumes with every row once, a run killed mid-training
from its last epoch; workers die with their driver; a grown grid adds only its new points; bad grid
specs fail clearly; sweep-report redraws the figures from a results file."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fastsnn
from fastsnn.experiment.cli import main
from fastsnn.experiment.config import RunConfig
from fastsnn.experiment.sweeps import COLUMNS, read_results

# threads=1 keeps the runs bit-identical whichever process runs them
TINY = ["--epochs", "1", "--train-batches", "1", "--test-batches", "1", "--batch-size", "8", "--threads", "1",
        "--quiet"]
GRID = ["--grid", "anf-per-ear=4,6", "--grid", "hidden=3"]
NAMES = {f"anf_per_ear={a},hidden=3,seed={s}" for a in (4, 6) for s in (0, 1)}
METRICS = ("test_accuracy", "test_abs_error_deg", "train_accuracy", "epochs_run")


def sweep_args(out, *extra, grid=GRID, seeds=2):
    return ["sweep", *TINY, *grid, "--seeds", str(seeds), "--out", str(out), *extra]


def rows_by_name(out) -> dict[str, dict]:
    rows = read_results(out / "results.csv")
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), f"a row appears twice: {sorted(names)}"
    return {row["name"]: row for row in rows}


def assert_same_results(rows: dict[str, dict], expected: dict[str, dict]):
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["error"])
        assert row["id"] == expected[name]["id"], name
        for key in METRICS:
            assert row[key] == expected[name][key], (name, key, row[key], expected[name][key])


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main(sweep_args(out)) == 0
    return out


def test_local_sweep_writes_rows_runs_and_figures(local_sweep, tmp_path):
    assert (local_sweep / "results.csv").read_text().partition("\n")[0] == ",".join(COLUMNS)
    rows = rows_by_name(local_sweep)
    assert set(rows) == NAMES
    for name, row in rows.items():
        assert row["status"] == "ok" and row["error"] == "", (name, row["error"])
        assert float(row["peak_rss_mib"]) > 0 and float(row["wall_seconds"]) > 0
        assert (row["device_used"], row["epochs_run"], row["peak_cuda_mib"]) == ("cpu", "1", "")
        metrics = json.loads((local_sweep / "runs" / row["id"] / "metrics.json").read_text())
        assert repr(metrics["test_accuracy"]) == row["test_accuracy"]
        config = RunConfig.from_dict(json.loads((local_sweep / "runs" / row["id"] / "config.json").read_text()))
        s, m, t = config.stimulus, config.model, config.train
        assert f"anf_per_ear={s.anf_per_ear},hidden={m.hidden},seed={t.seed}" == name
    for name in ("accuracy_vs_anf_per_ear.png", "walltime_vs_weights.png"):
        assert (local_sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (local_sweep / "summary.md").is_file() and (local_sweep / "summary.csv").is_file()
    # a point trains exactly as `fastsnn train` with the same flags
    assert main(["train", *TINY, "--anf-per-ear", "6", "--hidden", "3", "--seed", "1", "--out", str(tmp_path)]) == 0
    trained = json.loads((tmp_path / "metrics.json").read_text())
    assert repr(trained["test_accuracy"]) == rows["anf_per_ear=6,hidden=3,seed=1"]["test_accuracy"]


def test_rerun_skips_done_rows_and_a_grown_grid_adds_only_new_points(local_sweep, tmp_path, capsys):
    out = tmp_path / "sweep"
    shutil.copytree(local_sweep, out)
    before = rows_by_name(out)
    with open(out / "results.csv", "a") as f:
        f.write("0123abcd,\"anf_per_ear=9")  # a row cut short by a kill
    assert main(sweep_args(out)) == 0
    assert "0 runs done, 0 failed" in capsys.readouterr().out
    assert rows_by_name(out) == before and (out / "results.csv").read_text().endswith("\n")

    assert main(sweep_args(out, grid=["--grid", "anf-per-ear=4,6,8", "--grid", "hidden=3"])) == 0
    after = rows_by_name(out)
    assert set(after) - set(before) == {"anf_per_ear=8,hidden=3,seed=0", "anf_per_ear=8,hidden=3,seed=1"}
    assert {name: after[name] for name in before} == before

    with pytest.raises(SystemExit):  # a changed base config would mix two sweeps in one folder
        main(sweep_args(out, "--lr", "0.01"))
    assert "base configuration differs in lr (0.005 there, 0.01 now)" in capsys.readouterr().err


def test_a_failed_point_is_recorded_and_retried(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("needs a point that fails: device=cuda on a machine without CUDA")
    out = tmp_path / "sweep"
    args = sweep_args(out, grid=["--grid", "anf-per-ear=4", "--grid", "hidden=3", "--grid", "device=cpu,cuda"],
                      seeds=1)
    assert main(args) == 1
    assert "failed: anf_per_ear=4,hidden=3,device=cuda,seed=0: ValueError: device 'cuda'" in capsys.readouterr().err
    first = read_results(out / "results.csv")
    assert [row["status"] for row in first] == ["ok", "failed"]
    assert main(args) == 1  # the failed point runs again, the finished one does not
    again = read_results(out / "results.csv")
    assert again[:2] == first and [(row["name"], row["status"]) for row in again[2:]] == [(first[1]["name"], "failed")]


def test_resume_after_a_kill_gives_every_row_once(local_sweep, tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "fastsnn", *sweep_args(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not read_results(out / "results.csv") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    finished_before = len(read_results(out / "results.csv"))
    assert 1 <= finished_before < len(NAMES), f"the kill came after {finished_before} rows"
    assert main(sweep_args(out)) == 0
    rows = rows_by_name(out)
    assert set(rows) == NAMES
    assert_same_results(rows, rows_by_name(local_sweep))


def test_a_rerun_resumes_a_run_killed_in_flight_from_its_last_epoch(tmp_path):
    out = tmp_path / "sweep"
    point = ["--epochs", "3", "--anf-per-ear", "4", "--hidden", "3"]
    args = sweep_args(out, *point, grid=[], seeds=1)
    killed = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_after_epoch.py")), "1", *args],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run,) = (out / "runs").iterdir()
    saved = [h["seconds"] for h in torch.load(run / "resume.pt", weights_only=True)["result"]["history"]]
    assert main(args) == 0
    history = (run / "history.csv").read_text().splitlines()[1:]
    assert [float(line.split(",")[3]) for line in history[:2]] == saved, "the run restarted instead of resuming"
    assert main(["train", *TINY, *point, "--out", str(tmp_path / "train")]) == 0
    trained = torch.load(tmp_path / "train" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)
    assert resumed["metrics"]["test_accuracy"] == trained["metrics"]["test_accuracy"]
    for name, value in trained["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; nobody may reap an orphan in a container


def _spawned_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="finds the workers through /proc")
def test_workers_exit_when_their_driver_is_killed(tmp_path):
    out = tmp_path / "sweep"
    longer = ["--epochs", "40", "--train-batches", "8"]  # seconds of training: the workers are mid-run at the kill
    driver = subprocess.Popen([sys.executable, "-m", "fastsnn", *sweep_args(out, "--workers", "2", seeds=1), *longer],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("runs/*/config.json"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = _spawned_children(driver.pid)
        assert len(workers) == 2, "the workers never started their runs"
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 60
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), "a worker outlived its driver by a minute"
        assert not list(out.glob("runs/*/metrics.json")), "a worker went on training after its driver died"
    finally:
        driver.kill()
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)


def test_results_of_other_columns_are_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "results.csv").write_text("id,accuracy\nabc,0.5\n")
    with pytest.raises(SystemExit) as exit_:
        main(sweep_args(out))
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main(["sweep-report", str(out)])
    err = capsys.readouterr().err.splitlines()
    expected = f"fastsnn: error: {out / 'results.csv'} has other columns than this fastsnn version writes; use another --out"
    assert [line for line in err if line.startswith("fastsnn: error:")] == [expected] * 2


# Puts fastsnn on the import path the way `pip install -e` does: a finder after sys.path's, so that a
# `fastsnn/` folder without __init__.py on sys.path (a clone's root) shadows it as a namespace package.
EDITABLE_INSTALL = """import importlib.util, json, os, sys
from importlib.machinery import PathFinder
MAPPING = json.loads(os.environ["TEST_FASTSNN_MAPPING"])
class EditableFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        package = max((p for p in MAPPING if name == p or name.startswith(p + ".")), key=len, default=None)
        if package is None:
            return None
        where = os.path.join(MAPPING[package], *name[len(package):].split(".")[1:])
        if os.path.isfile(os.path.join(where, "__init__.py")):
            return importlib.util.spec_from_file_location(name, os.path.join(where, "__init__.py"),
                                                          submodule_search_locations=[where])
        return importlib.util.spec_from_file_location(name, where + ".py") if os.path.isfile(where + ".py") else None
sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, EditableFinder)
"""


@pytest.mark.parametrize("executor", [["--workers", "2"], ["--executor", "ray", "--workers", "1"]],
                         ids=["local-workers", "ray"])
def test_sweep_from_the_folder_that_holds_a_clone(executor, tmp_path):
    """Started beside a `fastsnn/` folder with no __init__.py, as from a clone's parent folder, with fastsnn
    installed in editable mode, the sweep's workers import the installed package all the same."""
    if "ray" in executor:
        pytest.importorskip("ray")
    site, here = tmp_path / "site", tmp_path / "parent"
    site.mkdir()
    (here / "fastsnn").mkdir(parents=True)
    (site / "sitecustomize.py").write_text(EDITABLE_INSTALL)
    (site / "fastsnn_cli.py").write_text("import sys\nfrom fastsnn.experiment.cli import main\n"
                                         "if __name__ == '__main__':\n    sys.exit(main())\n")  # a console script
    mapping = {"fastsnn": str(Path(fastsnn.__file__).parent),
               "fastsnn.kernels": importlib.util.find_spec("fastsnn.kernels").submodule_search_locations[0]}
    env = {**os.environ, "PYTHONPATH": str(site), "TEST_FASTSNN_MAPPING": json.dumps(mapping)}
    args = sweep_args(tmp_path / "sweep", *executor, grid=["--grid", "anf-per-ear=4", "--grid", "hidden=3"], seeds=1)
    done = subprocess.run([sys.executable, str(site / "fastsnn_cli.py"), *args], cwd=here, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = read_results(tmp_path / "sweep" / "results.csv")
    assert row["status"] == "ok", row["error"]


def test_local_worker_processes_match_in_process(local_sweep, tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(out, "--workers", "2", seeds=1)) == 0
    rows = rows_by_name(out)
    assert set(rows) == {name for name in NAMES if name.endswith("seed=0")}
    assert all(row["threads_used"] == "1" and float(row["peak_rss_mib"]) > 0 for row in rows.values())
    assert_same_results(rows, rows_by_name(local_sweep))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_matches_local(local_sweep, ray_cluster, tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(out, "--executor", "ray")) == 0
    rows = rows_by_name(out)
    assert set(rows) == NAMES
    assert_same_results(rows, rows_by_name(local_sweep))
    assert all((out / "runs" / row["id"] / "checkpoint.pt").is_file() for row in rows.values())


# Prints the local addresses (hex, as /proc/net/tcp* lists them) of every listening socket of this process and
# its descendants, once the local Ray cluster that the sweep's ray executor starts is up.
RAY_LISTENING = """import os, re, sys, tempfile
from fastsnn.experiment.sweeps import _import_ray, _on_ray

def tree(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except OSError:
            pass
    out, todo = set(), [root]
    while todo:
        out.add(todo[-1]); todo += children.get(todo.pop(), [])
    return out

def listening():
    inodes = set()
    for pid in tree(os.getpid()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                inodes |= set(re.findall(r"socket:\\[(\\d+)\\]", os.readlink(f"/proc/{pid}/fd/{fd}")))
            except OSError:
                pass
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                print(fields[1].split(":")[0])

ray = _import_ray(local=True)
init = ray.init
ray.init = lambda *args, **kwargs: (init(*args, **kwargs), listening())[0]
with tempfile.TemporaryDirectory() as runs:
    list(_on_ray(ray, [], runs, None, 1))
"""
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads Linux's socket tables")
def test_the_local_ray_cluster_listens_on_loopback_only():
    """Ray binds the servers of a cluster it starts (GCS, raylet, workers) to every interface: anyone on the
    network could submit tasks to it."""
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-c", RAY_LISTENING], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    hosts = set(done.stdout.split())
    assert len(hosts) >= 1 and hosts <= LOOPBACK, done.stdout


def test_an_unreachable_ray_address_fails_at_once(tmp_path):
    """Ray retried a cluster address where nothing listens for more than ten minutes."""
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "fastsnn", *sweep_args(tmp_path / "sweep", "--executor", "ray",
                                                                        "--address", f"127.0.0.1:{port}")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (f"fastsnn: error: --address 127.0.0.1:{port}: no Ray cluster reachable "
                                            "there (Connection refused)"), done.stderr


def test_a_ray_address_that_never_answers_times_out(monkeypatch):
    from fastsnn.experiment.sweeps import CONNECT_TIMEOUT_S, _check_reachable

    def silent(address, timeout):
        assert address == ("10.0.0.5", 6379) and timeout == CONNECT_TIMEOUT_S
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(ConnectionError, match=r"^--address ray://10.0.0.5:6379: no Ray cluster reachable there "
                                              r"\(no answer in 10 s\)$"):
        _check_reachable("ray://10.0.0.5:6379")
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        _check_reachable("10.0.0.5")


@pytest.mark.parametrize("flags,message", [
    (["--grid", "hiden=3"], r"unknown key 'hiden'; valid keys: .*\bhidden\b"),
    (["--grid", "hidden="], "empty value"),
    (["--grid", "hidden=3,,5"], "empty value"),
    (["--grid", "hidden=2.5"], "--grid hidden: '2.5' is not an integer"),
    (["--grid", "lr=fast"], "--grid lr: 'fast' is not a number"),
    (["--grid", "dales_law=maybe"], "--grid dales_law: 'maybe' is not a boolean"),
    (["--grid", "hidden"], "expected KEY=V1,V2,..."),
    (["--grid", "seed=1,2"], "--seeds N"),
    (["--grid", "hidden=3", "--grid", "hidden=4"], "--grid hidden given twice"),
    (["--grid", "hidden=0,3"], "grid point hidden=0,seed=0: hidden must be an integer >= 1"),
    (["--grid", "backend=fpga"], "backend must be one of"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--address", "localhost:6379"], "--address is for --executor ray"),
], ids=["unknown-key", "no-values", "empty-value", "int-2.5", "float-word", "bool-word", "no-equals", "seed",
        "twice", "invalid-point", "bad-choice", "seeds-0", "address-local"])
def test_bad_sweep_specs(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--out", str(tmp_path / "sweep"), *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastsnn" in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "sweep").exists()


def test_ray_executor_without_ray(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit):
        main(["sweep", "--executor", "ray", "--out", str(tmp_path / "sweep")])
    assert "pip install 'fastsnn[ray]'" in capsys.readouterr().err


def test_dry_run_lists_runs_and_what_is_done(local_sweep, capsys):
    assert main(sweep_args(local_sweep, "--dry-run", grid=["--grid", "anf-per-ear=4,8", "--grid", "hidden=3"])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(line.split()[0] + " " + line.split()[2] for line in lines[:-1]) == [
        "done anf_per_ear=4,hidden=3,seed=0", "done anf_per_ear=4,hidden=3,seed=1",
        "todo anf_per_ear=8,hidden=3,seed=0", "todo anf_per_ear=8,hidden=3,seed=1"]
    assert lines[-1] == "2 points x 2 seeds = 4 runs: 2 done, 2 to run in 1 pack (2 runs)"
    assert [line.endswith("(pack 1, 2 runs)") for line in lines[:-1]] == [line.startswith("todo") for line in lines[:-1]]


def _results_file(path, points):
    """A results.csv of made-up runs: (overrides, test accuracy, status) per row; the last line cut short."""
    defaults = {k: v for section in RunConfig().to_dict().values() for k, v in section.items()}
    lines = [",".join(COLUMNS)]
    for i, (overrides, accuracy, status) in enumerate(points):
        row = {**defaults, **overrides, "id": f"{i:012x}", "name": f"point{i}", "test_accuracy": accuracy,
               "test_abs_error_deg": 10 * (1 - accuracy), "wall_seconds": 1 + overrides.get("hidden", 30) / 8,
               "epochs_run": 10, "device_used": "cpu", "threads_used": 1, "status": status}
        lines.append(",".join("" if row.get(c) is None else str(row.get(c, "")) for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n" + lines[-1][:20])


@pytest.mark.parametrize("points,summaries,figures", [
    ([({"anf_per_ear": a, "hidden": h, "seed": s, "lr": lr}, 0.5 + 0.001 * h + 0.01 * s, "ok")
      for a in (10, 20) for h in (8, 16, 64) for s in (0, 1) for lr in (0.005, 0.01)], 12,
     ["accuracy_vs_hidden.png", "heatmap_hidden_x_anf_per_ear.png", "walltime_vs_weights.png"]),
    ([({"hidden": h, "seed": 0}, 0.3 + 0.01 * h, "ok") for h in (8, 16)] + [({"hidden": 32}, 0, "failed")], 2,
     ["accuracy_vs_hidden.png", "walltime_vs_weights.png"]),
], ids=["two-axes-and-lr", "only-hidden"])
def test_sweep_report_redraws_figures(points, summaries, figures, tmp_path, capsys):
    _results_file(tmp_path / "results.csv", points)
    assert main(["sweep-report", str(tmp_path)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + summaries  # the header, one row per point
    for name in figures:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_sweep_report_without_finished_runs(tmp_path, capsys):
    _results_file(tmp_path / "results.csv", [({"hidden": 8}, 0, "failed")])
    with pytest.raises(SystemExit):
        main(["sweep-report", str(tmp_path)])
    assert "holds no finished run" in capsys.readouterr().err


def test_results_of_an_earlier_version_read_and_keep_their_ids(tmp_path):
    """A results.csv written before config fields were added (the first format) still reads, with the
    new fields at their defaults, and its points keep their ids, so a rerun skips them."""
    import csv
    import hashlib
    import json as _json
    from dataclasses import replace

    from fastsnn.experiment.sweeps import _FIRST_FIELDS, FIELDS, _flat, point_id

    config = RunConfig()
    config = replace(config, model=replace(config.model, tau_ms=2.0))
    first = {section: {k: v for k, v in values.items() if k in _FIRST_FIELDS}
             for section, values in config.to_dict().items()}
    first["train"]["loss_scale"] = 0.01  # the first format's default, None (the readout's own) since
    old_id = hashlib.sha1(_json.dumps(first, sort_keys=True).encode()).hexdigest()[:12]
    assert point_id(config) == old_id
    newer = replace(config, model=replace(config.model, neuron="alif"))
    assert point_id(newer) != old_id
    columns = ["id", "name", *(k for k in FIELDS if k in _FIRST_FIELDS), "test_accuracy", "status"]
    row = {"id": old_id, "name": "tau_ms=2.0,seed=0", **_flat(first), "test_accuracy": "0.5", "status": "ok"}
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    (read,) = read_results(path)
    assert read["id"] == old_id and read["tau_ms"] == "2.0" and read["test_accuracy"] == "0.5"
    assert read["neuron"] == "lif" and read["cpu_model"] == ""
    path.write_text("id,name,something_else\n1,2,3\n")
    with pytest.raises(ValueError, match="has other columns"):
        read_results(path)


README_SWEEP = ["sweep", "--grid", "anf-per-ear=25,50,100,200", "--grid", "hidden=8,16,30,64,128", "--seeds", "2",
                "--epochs", "20", "--workers", "2"]


@pytest.mark.parametrize("sweep_json", ["kept", "deleted"])
def test_a_sweep_of_an_earlier_version_resumes_without_rerunning(sweep_json, tmp_path, capsys):
    """The README's sweep command on (a copy of) its committed sweep, made before the loss_scale default
    became None (the readout's own, 0.01 for the sum): refused with sweep.json, all 40 runs re-planned
    without it. Now every run counts as done, and the command only reports."""
    out = tmp_path / "sweep-anf-hidden"
    shutil.copytree(Path(__file__).resolve().parent.parent / "bench" / "results" / "sweep-anf-hidden", out)
    if sweep_json == "deleted":
        (out / "sweep.json").unlink()
    assert main([*README_SWEEP, "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "20 points x 2 seeds = 40 runs: 40 done, 0 to run"
    assert main([*README_SWEEP, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"0 runs done, 0 failed; results in {out}/results.csv") and "| 200 | 128 | 2 |" in printed
    assert not (out / "runs").exists()


def test_every_train_flag_is_a_grid_key_in_its_own_units(tmp_path, capsys):
    """--grid train-batches=... was refused ("unknown key"), though --train-batches is a train flag."""
    from fastsnn.experiment.cli import config_from_args, parser
    from fastsnn.experiment.sweeps import expand, parse_grid

    base = ["--batch-size", "8", "--train-batches", "3", "--test-batches", "3"]
    for grid, flags in [("train-batches=2", ["--train-batches", "2"]), ("test-batches=2", ["--test-batches", "2"]),
                        ("keep-final=true", ["--keep-final"]), ("no-validation=true", ["--no-validation"]),
                        ("keep-final=false", []), ("no-validation=false", [])]:
        (point,) = expand(config_from_args(parser().parse_args(["train", *base])), parse_grid([grid]), [0])
        assert point.config == config_from_args(parser().parse_args(["train", *base, *flags])), grid
    with pytest.raises(ValueError, match="--grid train_batches sets train_samples: give one of"):
        parse_grid(["train-batches=1,2", "train-samples=8"])
    with pytest.raises(ValueError, match="grid point train_batches=0,seed=0: --train-batches must be >= 1, got 0"):
        expand(RunConfig(), parse_grid(["train-batches=0"]), [0])
    out = tmp_path / "sweep"
    assert main(sweep_args(out, grid=["--grid", "train-batches=1,2", "--grid", "hidden=3"], seeds=1)) == 0
    rows = rows_by_name(out)
    assert {name: (row["train_samples"], row["valid_samples"]) for name, row in rows.items()} == {
        "train_batches=1,hidden=3,seed=0": ("8", "8"), "train_batches=2,hidden=3,seed=0": ("16", "16")}
    assert (out / "accuracy_vs_train_samples.png").is_file()  # valid_samples follows: one axis, not a heatmap
    assert not list(out.glob("heatmap_*.png"))


def test_a_finished_row_counts_by_its_configuration_not_its_stored_id(tmp_path):
    """A row whose id was hashed another way (here made up; in a sweep made while loss_scale defaulted to
    None, its null) still counts as done: its id is taken again from its config columns."""
    from fastsnn.experiment.sweeps import expand, plan

    _results_file(tmp_path / "results.csv", [({"hidden": 8, "seed": 0}, 0.5, "ok"), ({"hidden": 16}, 0.5, "failed")])
    points = expand(RunConfig(), {"hidden": [8, 16]}, [0])
    assert plan(RunConfig(), {"hidden": [8, 16]}, [0], tmp_path).done == {points[0].id}


@pytest.mark.parametrize("content", ["[]", '{"base": 3}', '{"base": {"model": {"hidden": "many"}}}', "{not json"])
def test_a_sweep_file_of_the_wrong_shape_is_one_line(content, tmp_path, capsys):
    (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main(sweep_args(tmp_path, "--dry-run"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"fastsnn: error: {tmp_path / 'sweep.json'} is not a fastsnn sweep file (") and err.endswith(
        "it only records the last sweep's flags: delete it to sweep into this folder again"), err


@pytest.mark.parametrize("key,value", [("num_classes", 100000), ("steps", 10**7)])
def test_a_grid_point_too_large_for_the_machine_fails_before_any_run(key, value, tmp_path, capsys):
    """num_classes=100000 trained, then failed allocating an 80 GB confusion matrix."""
    with pytest.raises(SystemExit) as exit_:
        main(sweep_args(tmp_path / "sweep", grid=["--grid", f"{key}=4,{value}"], seeds=1))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert __import__("re").fullmatch(rf"fastsnn: error: grid point {key}={value},seed=0: this run needs about [\d.]+ [GTP]B "
                                      rf"of memory, more than the .* lower {key} \(a config field\)", err), err
    assert not (tmp_path / "sweep" / "results.csv").exists()


def test_a_results_field_over_the_csv_limit_is_one_line(tmp_path, capsys):
    _results_file(tmp_path / "results.csv", [({"hidden": 8}, 0.5, "ok"), ({"hidden": 16}, 0.5, "ok")])
    lines = (tmp_path / "results.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",ok,", ',ok,"' + "x" * 200_000 + '"', 1)  # an error field of 200 kB
    (tmp_path / "results.csv").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(SystemExit) as exit_:
        main(["sweep-report", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"fastsnn: error: {tmp_path / 'results.csv'} line 3: field larger than field limit (131072); fastsnn "
        "writes no such line: remove it")
