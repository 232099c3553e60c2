"""Run folders under faults: a killed run resumes bit for bit, folders are claimed by one process and
never shared or silently replaced, a kill leaves only files of one run, and bad sizes, folders and
checkpoints fail in one line. Fault injection kills real processes: ``tests/kill_after_epoch.py N``
runs `fastsnn` in a process that SIGKILLs itself once epoch N is saved."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

import fastsnn.experiment.plots
import fastsnn.experiment.run
from fastsnn.experiment.cli import main
from fastsnn.experiment.run import dataset, load_run_config

RUN = ["--hidden", "8", "--train-batches", "2", "--test-batches", "1", "--epochs", "3", "--batch-size", "16",
       "--anf-per-ear", "10", "--threads", "1", "--quiet"]
TIMES = ("wall_seconds", "train_seconds")
KILL_AFTER_EPOCH = Path(__file__).with_name("kill_after_epoch.py")


def fastsnn_process(*args, cwd=None, **env):
    """`python -m fastsnn ARGS` in a new process, with ``env`` added to this one's environment."""
    return subprocess.Popen([sys.executable, "-m", "fastsnn", *args], env={**os.environ, **env}, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def killed_run(out, *flags, after_epoch=1):
    """Run `fastsnn train` in a process that SIGKILLs itself once epoch ``after_epoch`` is saved."""
    proc = subprocess.Popen([sys.executable, str(KILL_AFTER_EPOCH), str(after_epoch), "train", *RUN, *flags, "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    return out


def weights(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]


def assert_same_run(run, expected):
    """Bit-identical weights, metrics (but the times) and per-epoch losses."""
    mine, theirs = weights(run), weights(expected)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    metrics, reference = (json.loads((r / "metrics.json").read_text()) for r in (run, expected))
    for key in TIMES:
        del metrics[key], reference[key]
    assert metrics == reference
    losses = [[line.split(",")[:3] for line in (r / "history.csv").read_text().splitlines()] for r in (run, expected)]
    assert losses[0] == losses[1]


def own_files(run):
    return sorted(p.name for p in run.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main(["train", *RUN, "--out", str(out)]) == 0
    return out


def test_resume_after_a_kill_ends_exactly_as_an_uninterrupted_run(uninterrupted, tmp_path):
    run = killed_run(tmp_path / "run", after_epoch=1)
    assert own_files(run) == ["config.json", "resume.pt"]
    saved = torch.load(run / "resume.pt", weights_only=True)["result"]["history"]
    assert [h["epoch"] for h in saved] == [0, 1]
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(run, uninterrupted)
    history = (run / "history.csv").read_text().splitlines()[1:]
    assert [float(line.split(",")[3]) for line in history[:2]] == [h["seconds"] for h in saved], \
        "epochs 0 and 1 ran again instead of resuming"
    assert not (run / "resume.pt").exists()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # a finished run stays as it is
    assert_same_run(run, uninterrupted)


def test_resume_takes_no_other_flags(uninterrupted, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(uninterrupted), "--hidden", "9"])
    assert "--resume continues the run with the flags it was started with; drop --hidden" in capsys.readouterr().err


def test_out_onto_a_run_is_refused_unless_overwrite_and_a_kill_leaves_one_runs_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["evaluate", str(out / "checkpoint.pt"), "--seed", "7"]) == 0
    before = {name: (out / name).read_bytes() for name in own_files(out)}
    with pytest.raises(SystemExit) as exit_:
        main(["train", *RUN, "--seed", "1", "--out", str(out)])
    assert exit_.value.code == 2
    assert "already holds a run; pass --overwrite to replace it" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in own_files(out)} == before

    killed_run(out, "--seed", "1", "--overwrite", after_epoch=0)
    assert own_files(out) == ["config.json", "resume.pt"], "the old run's files survived beside the new run"
    assert load_run_config(out).train.seed == 1
    assert torch.load(out / "resume.pt", weights_only=True)["config"]["train"]["seed"] == 1


def test_a_crash_while_writing_results_resumes(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fastsnn.experiment.plots, "loss_curves", crash)
    with pytest.raises(SystemExit):
        main(["train", *RUN, "--out", str(out)])
    assert "metrics.json" not in own_files(out) and "resume.pt" in own_files(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")], "a temporary file was left behind"
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, uninterrupted)


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5)


def test_default_run_folders_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fastsnn.experiment.run, "datetime", FrozenClock)
    for seed in ("1", "2"):
        assert main(["train", *RUN, "--epochs", "1", "--seed", seed]) == 0
    folders = sorted((tmp_path / "runs").iterdir())
    assert [f.name for f in folders] == ["20260102-030405", "20260102-030405-2"]
    for folder, seed in zip(folders, (1, 2)):
        assert load_run_config(folder).train.seed == seed
        assert torch.load(folder / "checkpoint.pt", weights_only=True)["config"]["train"]["seed"] == seed


# a process that takes a run folder's lock (flock on .lock, its pid inside) as fastsnn does, then sleeps
HOLDER = """import fcntl, os, sys, time
f = open(os.path.join(sys.argv[1], ".lock"), "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.write(f"{os.getpid()} a fastsnn run\\n"); f.flush(); print("held", flush=True); time.sleep(120)"""


def test_a_run_folder_is_claimed_by_one_process_until_it_dies(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(SystemExit):
            main(["train", *RUN, "--epochs", "1", "--out", str(run)])
        assert f"{run} is in use by a fastsnn run (pid {holder.pid})" in capsys.readouterr().err
        assert own_files(run) == []
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *RUN, "--epochs", "1", "--out", str(run)]) == 0  # the kernel freed the dead holder's lock


@pytest.mark.parametrize("link", [os.symlink, os.link], ids=["symlink", "hard-link"])
def test_a_lock_file_that_is_a_link_is_never_written_through(link, tmp_path, capsys):
    """RUN/.lock as a link: its target was truncated and overwritten with the pid."""
    victim, run = tmp_path / "precious.txt", tmp_path / "run"
    victim.write_text("keep me\n")
    run.mkdir()
    link(victim, run / ".lock")
    with pytest.raises(SystemExit) as exit_:
        main(["train", *RUN, "--epochs", "1", "--out", str(run)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fastsnn: error: {run / '.lock'} is ") and err.endswith(
        f"fastsnn locks {run} with a file of its own: remove " + ("the link" if link is os.symlink else "it")), err
    assert victim.read_text() == "keep me\n" and own_files(run) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="writes to Linux's /dev/full, a disk that is always full")
def test_a_full_disk_is_one_line_and_the_run_stays_resumable(uninterrupted, tmp_path, capsys):
    """A full disk ended a run with torch's "inline_container.cc:672 unexpected pos" traceback."""
    run = killed_run(tmp_path / "run", after_epoch=0)
    (run / f".tmp-{os.getpid()}-resume.pt").symlink_to("/dev/full")  # where this process writes resume.pt next
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--resume", str(run), "--quiet"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"fastsnn: error: No space left on device (the disk of {run}, writing resume.pt); free space there, then "
        f"`fastsnn train --resume {run}` continues from the last saved epoch")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(run, uninterrupted)


def test_a_resumed_run_removes_the_temporary_files_of_the_killed_one(uninterrupted, tmp_path):
    """A kill mid-write leaves .tmp-<pid>-*; they survived every later resume."""
    run = killed_run(tmp_path / "run", after_epoch=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = run / f".tmp-{dead}-resume.pt"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert not stale.exists()
    assert_same_run(run, uninterrupted)


def test_a_training_run_keeps_sweeps_and_evaluate_out_and_ends_on_ctrl_c_without_a_traceback(uninterrupted, tmp_path,
                                                                                          capsys):
    """The lock message said "another sweep" when a training run held the folder; `evaluate --out RUN`
    wrote into the folder of a run in training; Ctrl-C printed a traceback."""
    run = tmp_path / "run"
    proc = fastsnn_process("train", *RUN, "--epochs", "100000", "--no-validation", "--out", str(run))
    try:
        deadline = time.monotonic() + 120
        while not (run / "resume.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (run / "resume.pt").exists(), proc.communicate()[1]
        for args in (["sweep", *RUN, "--grid", "hidden=3", "--out", str(run)],
                     ["evaluate", str(uninterrupted / "checkpoint.pt"), "--out", str(run)]):
            with pytest.raises(SystemExit) as exit_:
                main(args)
            assert exit_.value.code == 2
            assert capsys.readouterr().err.splitlines()[-1] == (
                f"fastsnn: error: {run} is in use by a fastsnn run (pid {proc.pid})"), args[0]
        assert not list(run.glob("evaluate-*")) and not (run / "results.csv").exists()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"interrupted; `fastsnn train --resume {run}` continues from the last "
                                            "finished epoch"), err


def test_evaluate_out_onto_a_file_is_one_line(uninterrupted, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(uninterrupted / "checkpoint.pt"), "--out", str(tmp_path / "file")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"fastsnn: error: --out {tmp_path / 'file'} is a file; "
                                                        "expected a folder")


def test_evaluate_with_the_training_seed_reproduces_the_test_metrics(uninterrupted, tmp_path, capsys):
    assert main(["evaluate", str(uninterrupted / "checkpoint.pt"), "--seed", "0", "--out", str(tmp_path)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    for key in ("test_accuracy", "test_abs_error_deg"):
        assert evaluated[key] == metrics[key], key


def test_sets_of_other_seeds_share_no_random_stream_with_the_training_data(uninterrupted):
    config = load_run_config(uninterrupted)
    trained = [dataset(config, which, 0) for which in ("train", "valid", "test")]
    fresh = [dataset(config, "test", seed) for seed in (1, 2, 16, 2**64 - 1)]
    for i, a in enumerate(trained + fresh):
        for b in (trained + fresh)[i + 1:]:
            assert not set(a.ipd.tolist()) & set(b.ipd.tolist())
            assert not set(a._keys.tolist()) & set(b._keys.tolist())


@pytest.mark.parametrize("flags,message", [
    (["--hidden", "1000000000"], r"needs about [\d.]+ TB of memory, more than the .* lower --hidden$"),
    (["--batch-size", "1000000"], r"needs about [\d.]+ [GT]B of memory, more than the .* lower --batch-size$"),
    (["--anf-per-ear", "100000000"], r"lower --anf-per-ear$"),
    (["--seed", str(2**64)], r"seed must be an integer in \[0, 2\*\*64\), got 18446744073709551616"),
    (["--segments", "10000000"], r"needs about [\d.]+ [GT]B of memory, .* lower --segments$"),
    (["--max-delay", "100000000"], r"needs about [\d.]+ [GT]B of memory, .* lower --max-delay$"),
    (["--threads", "20000"], r"threads must be 'auto' or an integer from 1 to \d+ \(the CPUs this process may run "
                             r"on\), got 20000$"),
], ids=["hidden", "batch-size", "anf-per-ear", "seed-65-bits", "segments", "max-delay", "threads-20000"])
def test_impossible_runs_fail_in_one_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *flags, "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("fastsnn: error: ") and __import__("re").search(message, last), last
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("out,message", [
    ("file", "--out {out} is a file; expected a folder"),
    ("file/run", "--out {out}: cannot write there (Not a directory)"),
])
def test_unusable_out_fails_in_one_line(out, message, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit):
        main(["train", *RUN, "--out", str(tmp_path / out)])
    assert message.format(out=tmp_path / out) in capsys.readouterr().err


@pytest.mark.parametrize("content,reason", [
    (lambda good: b"", r"cannot be read \(EOFError\)"),
    (lambda good: good[: len(good) // 2], r"cannot be read \(PytorchStreamReader failed reading zip archive"),
    (lambda good: bytes(range(256)) * 8, r"cannot be read \("),
    ("state_dict", "holds a bare state dict without config, state_dict"),
], ids=["empty", "truncated", "random", "state-dict-only"])
def test_evaluate_refuses_what_is_not_a_checkpoint(content, reason, uninterrupted, tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    if content == "state_dict":
        torch.save(weights(uninterrupted), path)
    else:
        path.write_bytes(content((uninterrupted / "checkpoint.pt").read_bytes()))
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert __import__("re").search(f"fastsnn: error: not a fastsnn checkpoint: {path} {reason}", err), err


NOTICE = "compiling CPU kernels (first run only, ~30 s)\n"


def test_first_run_announces_the_kernel_compile(tmp_path):
    """A cold numba cache (an empty NUMBA_CACHE_DIR) announces the compile before the progress bar."""
    flags = ["train", *RUN[:-1], "--epochs", "1", "--backend", "reference"]  # reference: one kernel to compile
    proc = fastsnn_process(*flags, "--out", str(tmp_path / "run"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert NOTICE in err and err.index(NOTICE) < err.index("train:"), err


def test_warm_kernels_are_not_announced(uninterrupted, tmp_path, capsys):
    assert main(["train", *RUN[:-1], "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "train:" in err and NOTICE not in err, err


def test_a_checkpoint_asking_for_more_threads_than_cpus_is_one_line(uninterrupted, tmp_path, capsys):
    """A checkpoint whose config said threads=100000 segfaulted `evaluate`."""
    data = torch.load(uninterrupted / "checkpoint.pt", weights_only=True)
    data["config"]["train"]["threads"] = 100000
    path = tmp_path / "checkpoint.pt"
    torch.save(data, path)
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(path), "--seed", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"fastsnn: error: {path}: the run's threads must be 'auto' or an integer from 1 to ") and \
        err.endswith("got 100000; pass --threads"), err
    assert main(["evaluate", str(path), "--seed", "0", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == json.loads(
        (uninterrupted / "metrics.json").read_text())["test_accuracy"]


def test_a_resume_file_of_another_run_is_one_line(tmp_path, capsys):
    """A readable resume.pt that does not fit the run's config (here one of 9 hidden units) was a traceback."""
    run, other = killed_run(tmp_path / "run", after_epoch=0), killed_run(tmp_path / "other", "--hidden", "9",
                                                                            after_epoch=0)
    (other / "resume.pt").replace(run / "resume.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--resume", str(run), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"fastsnn: error: {run / 'resume.pt'} does not fit the run in {run} (Error(s) in loading "
                          "state_dict for IPDNetwork: size mismatch for hidden.weight") and err.endswith(
        "delete it to train the run from its first epoch"), err
    (run / "resume.pt").unlink()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0


@pytest.mark.parametrize("section,field,value", [("model", "detach_reset", 0), ("model", "dales_law", "false"),
                                                 ("model", "learn_tau", 1), ("train", "restore_best", "no")])
def test_a_config_boolean_that_is_not_one_is_one_line(section, field, value, uninterrupted, tmp_path, capsys):
    """A hand-edited config.json's "false" is a truthy string: the run trained with Dale's law on."""
    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((uninterrupted / "config.json").read_text())
    config[section][field] = value
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--resume", str(run), "--quiet"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"fastsnn: error: {run / 'config.json'} is not a fastsnn run "
                                                        f"configuration: {field} must be true or false, got {value!r}")
