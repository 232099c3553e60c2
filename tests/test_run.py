"""Run folders under faults: a killed run resumes bit for bit, folders are claimed by one process and
never shared or silently replaced, a kill leaves only files of one run, and bad sizes, folders and
checkpoints fail in one line. Fault injection kills real processes: ``tests/kill_after_epoch.py N``
runs `fastsnn` in a process that SIGKILLs itself once epoch N is saved."""

import json
import os
import signal
import subprocess
import sys
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
    with pytest.raises(OSError, match="disk full"):
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
f.write(f"{os.getpid()}\\n"); f.flush(); print("held", flush=True); time.sleep(120)"""


def test_a_run_folder_is_claimed_by_one_process_until_it_dies(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(SystemExit):
            main(["train", *RUN, "--epochs", "1", "--out", str(run)])
        assert f"{run} is in use by another fastsnn run (pid {holder.pid})" in capsys.readouterr().err
        assert own_files(run) == []
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *RUN, "--epochs", "1", "--out", str(run)]) == 0  # the kernel freed the dead holder's lock


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
], ids=["hidden", "batch-size", "anf-per-ear", "seed-65-bits"])
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
